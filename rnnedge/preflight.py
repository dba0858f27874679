"""What a command needs before it starts: its extras installed, its files there and of the right
kind. Standard library only, so a command can refuse in one line before any heavy import."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from rnnedge.errors import RnnEdgeError

# extra (as pyproject.toml names it) -> (the modules it provides, what it is for)
EXTRAS = {
    "export": (("tensorflow", "keras", "tf2onnx"), "TensorFlow, Keras and tf2onnx"),
    "quantize": (("onnxconverter_common",), "onnxconverter-common"),
    "plot": (("matplotlib",), "matplotlib"),
    "serve": (("tritonclient",), "tritonclient"),
    "view": (("netron",), "Netron"),
}

# what a Keras model file starts with: a .keras file is a zip, a legacy .h5 file HDF5
_MAGIC = {".keras": (b"PK\x03\x04", "a zip archive"), ".h5": (b"\x89HDF\r\n\x1a\n", "an HDF5 file")}


def missing(extra: str) -> list[str]:
    """The modules of `extra` that cannot be found (found without importing them)."""
    out = []
    for module in EXTRAS[extra][0]:
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):  # a blocked or half-installed package
            found = False
        if not found:
            out.append(module)
    return out


def require(extra: str, what: str) -> None:
    """Raise one line naming the extra to install when `what` (e.g. "`rnnedge export`") cannot run."""
    gone = missing(extra)
    if gone:
        modules, names = EXTRAS[extra]
        which = "" if len(gone) == len(modules) else f"; {', '.join(gone)} not installed"
        raise RnnEdgeError(f"{what} needs the {extra!r} extra ({names}{which}): pip install 'rnnedge[{extra}]'")


def keras_file(path: str | Path) -> Path:
    """The path of a Keras model file or SavedModel folder, refused in one line when it is missing,
    empty, a folder without saved_model.pb, of another suffix or not of its suffix's format. An
    HDF5 file is taken under any name (published `.keras` files are sometimes HDF5): `is_hdf5`."""
    path = Path(path)
    if not path.exists():
        raise RnnEdgeError(f"{path}: no such file; expected a .keras model file or zoo:NAME (see `rnnedge zoo`)")
    if path.is_dir() and (path / "saved_model.pb").is_file():
        return path  # a SavedModel folder (tf.keras 2 model.save(dir)); what it holds is read when loaded
    if path.is_file() and is_hdf5(path):
        return path  # a legacy .h5 model, whatever its name says
    if path.is_dir() or path.suffix not in _MAGIC:
        raise RnnEdgeError(f"{path} is not a Keras model file: expected a .keras or .h5 file, or a SavedModel "
                           "folder (with saved_model.pb)")
    magic, kind = _MAGIC[path.suffix]
    with open(path, "rb") as f:
        head = f.read(len(magic))
    if not head:
        raise RnnEdgeError(f"{path} is empty: expected a Keras model saved with model.save('{path.name}')")
    if head != magic:
        raise RnnEdgeError(f"{path} is not a Keras model file: a {path.suffix} file is {kind}, this one is not "
                           f"(save the model with model.save('{path.name}'))")
    return path


def is_hdf5(path: str | Path) -> bool:
    """Whether a file is HDF5 (a legacy Keras .h5 model or weights), by its first bytes, not its name."""
    magic = _MAGIC[".h5"][0]
    with open(path, "rb") as f:
        return f.read(len(magic)) == magic


def zoo_name(name: str) -> str:
    """A zoo model's name, refused in one line when the zoo has no such model."""
    from rnnedge.tables import ZOO

    if name not in ZOO:
        raise RnnEdgeError(f"unknown zoo model {name!r}; expected one of: {', '.join(ZOO)}")
    return name


def data_headers(path: str | Path) -> dict[str, tuple[tuple[int, ...], str]]:
    """name -> (shape, dtype) of each array in an .npz, from the members' .npy headers only (nothing
    loaded, numpy's format reader only): what --data holds, known before TensorFlow loads."""
    import zipfile

    import numpy as np

    path = Path(path)
    if path.suffix.lower() != ".npz" or not zipfile.is_zipfile(path):
        raise RnnEdgeError(f"--data {path}: expected an .npz file of the model's inputs by name (numpy.savez), "
                           "targets as 'y'")
    found = {}
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                if not info.filename.endswith(".npy"):
                    continue
                with archive.open(info) as f:
                    version = np.lib.format.read_magic(f)
                    fmt = np.lib.format
                    read = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
                    shape, _, dtype = read(f)
                found[info.filename[:-4]] = (tuple(shape), dtype.str if dtype.kind in "OV" else dtype.name)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        reason = (str(e).splitlines() or [type(e).__name__])[0][:160]
        raise RnnEdgeError(f"--data {path} is not a readable .npz file ({reason}): write it with numpy.savez") from None
    return found


def keras_inputs(path: str | Path) -> list[tuple[str, tuple, str]] | None:
    """[(name, shape, dtype)] of a .keras file's inputs, read from its config.json (no Keras): None
    where the file does not say them plainly (a legacy .h5, nested models, ...)."""
    import json
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            config = json.loads(archive.read("config.json"))
        layers = {layer["config"]["name"]: layer for layer in config["config"]["layers"]}
        if config["class_name"] == "Sequential":
            names = [config["config"]["layers"][0]["config"]["name"]]
        else:
            wanted = config["config"]["input_layers"]
            wanted = [wanted] if wanted and isinstance(wanted[0], str) else wanted
            names = [entry[0] for entry in wanted]
        out = []
        for name in names:
            layer = layers[name]
            if layer["class_name"] != "InputLayer":
                return None
            dtype = layer["config"].get("dtype", "float32")
            dtype = dtype.get("config", {}).get("name", "float32") if isinstance(dtype, dict) else dtype
            out.append((name, tuple(layer["config"]["batch_shape"]), str(dtype)))
        return out
    except (OSError, KeyError, IndexError, TypeError, ValueError, AttributeError, zipfile.BadZipFile):
        return None


def data_matches(path: str | Path, arrays: dict[str, tuple[tuple[int, ...], str]], inputs,
                 static: dict[str, int] | None = None) -> None:
    """Refuse, in one line, --data whose arrays do not fit the model's data inputs `inputs`
    ([(name, shape, dtype)], shapes with None or axis names for dynamic sizes): a missing input,
    another rank, another feature size, another kind of number; another length than `static`'s time."""
    if static and "time" in static:
        inputs = [(n, tuple(static["time"] if i == 1 and not isinstance(d, int) else d for i, d in enumerate(shape)), t)
                  for n, shape, t in inputs]
    if len(inputs) == 1 and inputs[0][0] not in arrays:
        alias = next((k for k in ("x", "arr_0") if k in arrays), None)
        if alias is not None:
            arrays = {**arrays, inputs[0][0]: arrays[alias]}
    names = ", ".join(name for name, _, _ in inputs)
    for name, shape, dtype in inputs:
        if name not in arrays:
            held = ", ".join(arrays) or "nothing"
            raise RnnEdgeError(f"--data {path}: no array for input '{name}' (it holds {held}): "
                               f"save the model's inputs ({names}) under their names, targets as 'y'")
        got, got_dtype = arrays[name]
        want = "[" + ", ".join("batch" if i == 0 and not isinstance(d, int) else str(d if d is not None else "time")
                               for i, d in enumerate(shape)) + "]"
        if len(got) != len(shape):
            raise RnnEdgeError(f"--data {path}: '{name}' has shape {list(got)} but the model's input takes {want}: "
                               f"give one row per sequence, {len(shape)} dimensions")
        for i, (g, d) in enumerate(zip(got, shape)):
            if i > 0 and isinstance(d, int) and g != d:
                what = "features per step" if i == len(shape) - 1 and len(shape) >= 3 else \
                    "steps" if i == 1 and (len(shape) >= 3 or _kind(dtype) != "float") else f"entries on dimension {i}"
                raise RnnEdgeError(f"--data {path}: '{name}' has {g} {what} (shape {list(got)}) but the model's "
                                   f"input takes {d} ({want}): " + (
                                       "cut or pad the sequences to that length" if what == "steps"
                                       else "give the model's own features"))
        kind = _kind(got_dtype)
        wanted = _kind(dtype)
        if kind != wanted and not (wanted == "float" and kind == "integer"):
            raise RnnEdgeError(f"--data {path}: '{name}' is {got_dtype} but the model's input takes {dtype} "
                               f"({wanted}): save it with .astype('{dtype}') if that is what it means")


def _kind(dtype: str) -> str:
    return "bool" if dtype == "bool" else "integer" if dtype.startswith(("int", "uint")) else \
        "float" if dtype.startswith(("float", "bfloat")) else "not numbers"


STATIC_KEYS = ("batch", "time")


def static_axes(text: str | None) -> dict[str, int]:
    """`--static batch=B,time=T` (either or both) -> {"batch": B, "time": T}, refused in one line
    when a key is not batch or time, or a size is not a positive whole number."""
    if not text:
        return {}
    out = {}
    for item in text.split(","):
        key, sep, value = item.strip().partition("=")
        if key not in STATIC_KEYS or not sep:
            raise RnnEdgeError(f"--static {text}: {key or item!r} is not an axis rnnedge can fix; expected "
                               "batch=B and/or time=T, e.g. --static batch=1,time=100")
        if not value.strip().isdigit() or int(value) < 1:
            raise RnnEdgeError(f"--static {text}: {key}={value} is not a size; expected a positive whole number, "
                               f"e.g. {key}=1")
        if key in out:
            raise RnnEdgeError(f"--static {text}: {key} is given twice; give each axis once")
        out[key] = int(value)
    return out


def source(model: str, what: str) -> None:
    """A Keras source that can work (the export extra installed, the file, folder or zoo name there),
    before TensorFlow loads."""
    if model.startswith("zoo:"):
        zoo_name(model[4:])
    else:
        keras_file(model)
    require("export", what)


def data_file(data: Path | None) -> None:
    """--data names an existing file (what it holds is checked by `data_matches`)."""
    if data is not None and not Path(data).is_file():
        raise RnnEdgeError(f"--data {data}: no such file; expected an .npz of inputs (by name) and targets 'y'")


def export_ready(model: str, out: Path, *, force: bool, data: Path | None, static: dict | None, quantize: str | None):
    """Everything `rnnedge export` can refuse before TensorFlow loads: the --out folder, the source,
    --data that cannot fit the model (its .npz headers against the .keras file's inputs), the extras."""
    from rnnedge.files import new_folder

    new_folder(out, force=force)
    source(model, "`rnnedge export`")
    data_file(data)
    if data is not None:
        arrays = data_headers(data)
        inputs = None if model.startswith("zoo:") else keras_inputs(model)
        if inputs:
            data_matches(data, arrays, inputs, static)
    if quantize is not None:  # the names `rnnedge quantize` takes, refused before TensorFlow loads
        from rnnedge.tables import VARIANTS

        names = [v.strip() for v in quantize.split(",") if v.strip()]
        unknown = [v for v in names if v not in VARIANTS]
        if unknown or not names:
            raise RnnEdgeError(f"--quantize {quantize}: unknown variant(s) {', '.join(unknown) or '(none given)'}: "
                               f"expected a comma-separated list of {', '.join(VARIANTS)}")
    if "fp16" in (quantize or ""):
        require("quantize", "--quantize fp16")


def export_options(*, custom: list[str] | None, metric: str | None, data: Path | None,
                   quantize: str | None = None) -> None:
    """`rnnedge export`'s options that need no model, refused before TensorFlow loads: a --custom .py
    file that is not there, a --metric with no --data targets to score or no --quantize variants to
    judge (it would be ignored)."""
    for text in custom or []:
        if (text.endswith(".py") or Path(text).exists()) and not Path(text).is_file():
            raise RnnEdgeError(f"--custom {text}: no such file; expected a .py file or a dotted module path "
                               "defining the model's custom classes")
    if metric is not None and data is None:
        raise RnnEdgeError(f"--metric {metric} scores the targets of --data: pass --data FILE (an .npz with targets "
                           "'y') with it, or drop --metric")
    if metric is not None and not quantize:
        raise RnnEdgeError(f"--metric {metric} judges the --quantize variants on --data's targets: add --quantize "
                           "LIST (e.g. int8,fp16), or drop --metric")


EXPORT_TARGETS = ("qnn",)  # `export --target P` (exporter/target.py shapes the export for each)


def target_ready(model: str, target: str | None, static: dict | None) -> None:
    """`--target P` names a target rnnedge shapes exports for, and a .keras file whose inputs have a
    dynamic time axis comes with --static time=T (the accelerator compiles fixed shapes)."""
    if target is None:
        return
    if target not in EXPORT_TARGETS:
        raise RnnEdgeError(f"--target {target}: expected one of {', '.join(EXPORT_TARGETS)} (`rnnedge targets DIR` "
                           "says what other providers run)")
    inputs = None if model.startswith("zoo:") else keras_inputs(model)
    dynamic = [name for name, shape, _ in inputs or [] if len(shape) > 1 and shape[1] is None]
    if dynamic and "time" not in (static or {}):
        raise RnnEdgeError(f"--target {target} needs fixed shapes: input {dynamic[0]!r} has a dynamic time axis; "
                           "add --static time=T (the length the device is fed)")


def outputs_writable(folder: Path, paths, *, force: bool, inputs=()) -> None:
    """Every output file a command was asked to write, checked before it starts (`files.output_file`):
    never over the export's own files or the command's inputs, nothing replaced without --force."""
    from rnnedge.files import output_file
    from rnnedge.manifest import MANIFEST, Manifest

    keep = {p: "the input file" for p in inputs if p is not None}
    try:
        names = [MANIFEST, *Manifest.load(folder).file_names()]
    except RnnEdgeError:
        names = [MANIFEST]  # the command itself says what is wrong with the folder
    keep.update({folder / n: f"a file of the export {folder}" for n in names})
    for path in paths:
        if path is not None:
            output_file(path, force=force, keep=keep)


def plot_file(path: Path | None) -> None:
    """A --plot file name matplotlib can write, with the plot extra installed."""
    if path is None:
        return
    if path.suffix.lower() not in (".png", ".svg", ".pdf"):
        raise RnnEdgeError(f"--plot {path}: expected a .png, .svg or .pdf file name")
    require("plot", "--plot")


def run_output(folder: Path, input_path: Path, output: Path | None, *, force: bool) -> bool:
    """`rnnedge run`'s --output checked before any work: a .npz, .npy or .csv file it may write, or '-'
    (JSON on standard output: returns True)."""
    stdout = output is not None and str(output) == "-"
    outputs_writable(folder, [None if stdout else output], force=force, inputs=[input_path])
    if output is not None and not stdout and output.suffix.lower() not in (".npz", ".npy", ".csv"):
        raise RnnEdgeError(f"--output {output}: expected a .npz, .npy or .csv file name, or - for JSON on "
                           "standard output")
    return stdout


def bench_ready(folder: Path, writes, *, force: bool, plot: Path | None, baseline: str | None,
                source_model: str | None, triton: str | None) -> None:
    """What `rnnedge bench` can refuse before it times anything: the files it writes, the plot, the
    baselines' model and extras, the serve extra for --triton."""
    outputs_writable(folder, writes, force=force)
    plot_file(plot)
    if baseline:
        if source_model is not None and not source_model.startswith("zoo:"):
            keras_file(source_model)
        require("export", f"--baseline {baseline}")
    if triton is not None:
        require("serve", "--triton")


def demo_ready(models, benchmark: bool) -> None:
    """`rnnedge demo`'s zoo names and extras, before TensorFlow loads."""
    for name in models or ():
        zoo_name(name)
    require("export", "`rnnedge demo`")
    require("quantize", "`rnnedge demo` (its fp16 variants)")
    if benchmark:
        require("plot", "`rnnedge demo` (its latency plot; or pass --no-benchmark)")
