"""Inputs and outputs as files: .npy, .npz and .csv in, the same out (`rnnedge run`)."""

from __future__ import annotations

import csv
import json
import os
import re
import warnings
import zipfile
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from rnnedge.errors import RnnEdgeError
from rnnedge.files import atomic_path, disk_error
from rnnedge.manifest import Manifest, TensorSpec
from rnnedge.runtime.inputs import Outputs, fmt_shape
from rnnedge.runtime.model import Model, load
from rnnedge.runtime.stream import run_chunked


def _manifest_of(model_or_manifest) -> Manifest:
    if isinstance(model_or_manifest, Model):
        return model_or_manifest.manifest
    if isinstance(model_or_manifest, Manifest):
        return model_or_manifest
    return Manifest.load(model_or_manifest)  # an export folder


_FORMATS = ".npy, .npz or .csv"


def read_inputs(path: str | os.PathLike, model_or_manifest, *, mmap: bool = False) -> dict[str, np.ndarray]:
    """Read model inputs from a file: name -> array (pass them on with `model.run(**inputs)`).

    .npy: one array, for a model with one data input; with `mmap`, mapped rather than read (what
        `run --chunk` streams is read chunk by chunk, so it may exceed the machine's memory).
    .npz: keys are input names (state inputs allowed), or arr_0, arr_1, ... for the data inputs
        in order (what `np.savez(path, a, b)` writes).
    .csv: numbers only (one header row of names is skipped; a UTF-8 BOM is ignored), for a model with one data input.
        For an input of rank 3 [batch, time, features] the table is [time, features] of one sequence (batch 1);
        for rank 2 each row is one batch entry ([batch, time] ids or [batch, features]); for rank 1
        the single column. Integer inputs need whole numbers.
    """
    path = Path(path)
    manifest = _manifest_of(model_or_manifest)
    data = manifest.data_inputs
    names = [t.name for t in data]
    if not path.is_file():
        raise RnnEdgeError(f"input file {path} " + ("is not a regular file" if path.exists() else "does not exist")
                           + ": expected a .npy, .npz or .csv file")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        if len(data) != 1:
            raise RnnEdgeError(f"{path} holds one array but the model takes {len(data)} inputs ({', '.join(names)}): "
                               "write an .npz with those names as keys")
        return {names[0]: _load_npy(path, mmap)}
    if suffix == ".npz":
        return _read_npz(path, manifest)
    if suffix == ".csv":
        if len(data) != 1:
            raise RnnEdgeError(f"{path} holds one table but the model takes {len(data)} inputs ({', '.join(names)}): "
                               "write an .npz with those names as keys")
        return {names[0]: _csv_to_input(_read_csv(path), data[0], path)}
    raise RnnEdgeError(f"cannot read inputs from {path}: expected {_FORMATS}")


def _np_load(path: Path, kind: str, mmap: bool = False):
    try:
        if _is_npy(path):
            with open(path, "rb") as f:
                _check_header(f, path.stat().st_size, str(path))
        elif not zipfile.is_zipfile(path):  # numpy would call anything else "pickled data"
            raise RnnEdgeError(f"{path} is not a readable {kind} file (neither a .npy array nor a zip archive of "
                               "them): write it with numpy.save or numpy.savez")
        loaded = np.load(path, allow_pickle=False, mmap_mode="r" if mmap else None)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        raise RnnEdgeError(f"{path} is not a readable {kind} file ({_reason(e)})") from None
    if isinstance(loaded, np.ndarray) != (kind == ".npy"):
        if not isinstance(loaded, np.ndarray):
            loaded.close()
        other = ".npz archive" if kind == ".npy" else ".npy array"
        raise RnnEdgeError(f"{path} holds an {other}, not what its {kind} name says: rename it")
    return loaded


def _is_npy(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(len(np.lib.format.MAGIC_PREFIX)) == np.lib.format.MAGIC_PREFIX


def _check_header(f, size: int, where: str) -> tuple[int, ...]:
    """The declared shape of the .npy in `f` (`size` bytes in all), refused in one line when its
    data would not fit in the file: a truncated or lying header would otherwise make numpy
    allocate what it claims (a MemoryError) or fail deep inside."""
    version = np.lib.format.read_magic(f)
    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, _, dtype = read(f)
    declared = int(np.prod(shape, dtype=object)) * dtype.itemsize
    held = size - f.tell()
    if declared > held:
        raise RnnEdgeError(f"{where} declares an array of shape {fmt_shape(shape)} {dtype} ({declared:,} bytes) but "
                           f"holds {max(held, 0):,} bytes of data: the file is truncated or its header is wrong; "
                           "write it again with numpy.save")
    return shape


def _reason(e: Exception) -> str:
    return (str(e).splitlines() or [type(e).__name__])[0][:160]


def _load_npy(path: Path, mmap: bool = False) -> np.ndarray:
    try:
        return _np_load(path, ".npy", mmap)
    except MemoryError:
        with open(path, "rb") as f:
            shape = _check_header(f, path.stat().st_size, str(path))
        raise RnnEdgeError(f"{path} declares an array of shape {fmt_shape(shape)}, too large for this machine's "
                           "memory: pass a smaller input (or stream it with --chunk)") from None


def _check_members(archive: zipfile.ZipFile, path: Path) -> None:
    """Each .npy member's header against the member's own size (see _check_header)."""
    for info in archive.infolist():
        if info.filename.endswith(".npy"):
            with archive.open(info) as f:
                if f.read(len(np.lib.format.MAGIC_PREFIX)) != np.lib.format.MAGIC_PREFIX:
                    continue  # numpy's own load says what is wrong
            with archive.open(info) as f:
                _check_header(f, info.file_size, f"{path} member {info.filename[:-4]!r}")


def read_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Every array of a user's .npz, read safely (no pickles, each member's header checked against
    its size first); anything unreadable is one RnnEdgeError naming the file."""
    path = Path(path)
    with _np_load(path, ".npz") as z:
        try:
            _check_members(z.zip, path)
            return {k: z[k] for k in z.files}
        except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error) as e:
            raise RnnEdgeError(f"{path} is not a readable .npz file ({_reason(e)})") from None
        except MemoryError:
            raise RnnEdgeError(f"{path} holds an array too large for this machine's memory: pass a smaller "
                               "input (or save it with numpy.save as .npy and stream it with --chunk)") from None


def _read_npz(path: Path, manifest: Manifest) -> dict[str, np.ndarray]:
    found = read_npz(path)
    data = [t.name for t in manifest.data_inputs]
    allowed = {t.name for t in manifest.inputs}
    positional = [k for k in found if k.startswith("arr_") and k not in allowed]
    if positional and len(positional) == len(found):
        order = sorted(positional, key=lambda k: int(k[4:]) if k[4:].isdigit() else -1)
        if [f"arr_{i}" for i in range(len(order))] != order or len(order) > len(data):
            raise RnnEdgeError(f"{path} holds {', '.join(order)} but the model takes {len(data)} data input(s) "
                               f"({', '.join(data)}): save them by name")
        found = {data[i]: found[k] for i, k in enumerate(order)}
    unknown = [k for k in found if k not in allowed]
    if unknown:
        raise RnnEdgeError(f"{path} holds {', '.join(unknown)}, which the model does not take (inputs: "
                           f"{', '.join(t.name for t in manifest.inputs)})")
    missing = [n for n in data if n not in found]
    if missing:
        raise RnnEdgeError(f"{path} has no array for input(s) {', '.join(missing)} (it holds "
                           f"{', '.join(found) or 'nothing'}): save every data input under its name")
    return found


def _read_csv(path: Path) -> np.ndarray:
    """A table of numbers; a first row counts as a header only when every cell looks like a name,
    so a mistyped or BOM-prefixed first number is an error, never a silently dropped row."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:  # utf-8-sig: Excel's byte-order mark
            rows = [r for r in csv.reader(f) if r and any(c.strip() for c in r)]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise RnnEdgeError(f"{path} is not a readable CSV file ({_reason(e)})") from None
    if not rows:
        raise RnnEdgeError(f"{path} is empty: expected rows of numbers")
    header = rows[0] if _is_header(rows[0]) else None
    first = 1 if header is not None else 0
    table = [_numbers(row, i + 1, path) for i, row in enumerate(rows) if i >= first]
    if not table:
        raise RnnEdgeError(f"{path} has a header but no rows of numbers")
    widths = {len(r) for r in table}
    if len(widths) > 1:
        raise RnnEdgeError(f"{path} has rows of different lengths ({sorted(widths)}): every row needs the same "
                           "number of columns")
    if header is not None and len(header) != len(table[0]):
        raise RnnEdgeError(f"{path} has {len(header)} header names but {len(table[0])} columns of numbers")
    return np.asarray(table, dtype=np.float64)


_NAME = re.compile(r"[A-Za-z_][\w .()/-]*")  # window, x0, Passengers, y_0, "month (1-12)"


def _is_header(row: list[str]) -> bool:
    """Every cell is a name (not a number such as nan/inf, which float() also reads)."""
    return all(_NAME.fullmatch(c.strip()) and not _is_number(c) for c in row)


def _numbers(row: list[str], line: int, path: Path) -> list[float]:
    """One data row as floats; a cell that does not parse is named by row and column."""
    out = []
    for j, cell in enumerate(row):
        try:
            out.append(float(cell))
        except ValueError:
            raise RnnEdgeError(f"{path} row {line} column {j + 1} holds {cell!r}, not a number: keep only the "
                               "numeric feature columns (one header row of names is allowed)") from None
    return out


def _is_number(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


def _csv_to_input(table: np.ndarray, spec: TensorSpec, path: Path) -> np.ndarray:
    rank = len(spec.shape)
    if rank == 3:
        features = spec.shape[2]
        if isinstance(features, int) and table.shape[1] != features:
            raise RnnEdgeError(f"{path} has {table.shape[1]} columns but input '{spec.name}' "
                               f"{fmt_shape(spec.shape)} takes {features} features per step (one row per step)")
        array = table[None]
    elif rank == 2:
        array = table
    elif rank == 1 and table.shape[1] == 1:
        array = table[:, 0]
    else:
        raise RnnEdgeError(f"cannot map the CSV table {path} ({table.shape[0]}x{table.shape[1]}) onto input "
                           f"'{spec.name}' {fmt_shape(spec.shape)}: use .npy or .npz")
    if spec.dtype.startswith("int"):
        if not np.all(np.isfinite(array)) or not np.all(array == np.round(array)):
            raise RnnEdgeError(f"{path} holds non-integer values but input '{spec.name}' takes integer ids")
        array = array.astype(np.int64)
    return array


def write_outputs(path: str | os.PathLike, outputs: Mapping[str, np.ndarray] | np.ndarray) -> Path:
    """Write outputs: .npz (every output, names as keys), .npy or .csv (a single output).

    For .npy/.csv, `Outputs` with state outputs count their data outputs only. A .csv takes a
    1-D, 2-D, or 3-D array with batch 1 (written as [time, features]) and gets a header row.
    """
    path = Path(path)
    if isinstance(outputs, np.ndarray):
        outputs = {"output": outputs}
    arrays = {k: np.asarray(v) for k, v in outputs.items()}
    suffix = path.suffix.lower()
    if suffix not in (".npz", ".npy", ".csv"):
        raise RnnEdgeError(f"cannot write outputs to {path}: expected {_FORMATS}")
    if suffix != ".npz" and len(arrays) > 1 and isinstance(outputs, Outputs):
        arrays = {k: arrays[k] for k in outputs.data_names}
    if suffix != ".npz" and len(arrays) != 1:
        raise RnnEdgeError(f"{path.name} holds one array but there are {len(arrays)} outputs "
                           f"({', '.join(arrays)}): write an .npz")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise disk_error(path, e) from None
    with atomic_path(path, result=True) as tmp:  # a file object: numpy adds no suffix to the temporary name
        if suffix == ".npz":
            with open(tmp, "wb") as f:
                np.savez(f, **arrays)
        elif suffix == ".npy":
            with open(tmp, "wb") as f:
                np.save(f, next(iter(arrays.values())), allow_pickle=False)
        else:
            name, array = next(iter(arrays.items()))
            _write_csv(tmp, name, array)
    return path


def outputs_json(outputs: Mapping[str, np.ndarray]) -> str:
    """Outputs as one JSON object: name -> nested lists (NaN and infinities as null, which JSON lacks)."""
    def plain(a: np.ndarray):
        a = np.asarray(a)
        if a.dtype.kind == "f" and not np.all(np.isfinite(a)):
            return np.where(np.isfinite(a), a, None).tolist()
        return a.tolist()

    return json.dumps({name: plain(value) for name, value in outputs.items()})


def preview(array: np.ndarray, threshold: int = 100) -> str:
    """numpy's own rendering of `array`: whole up to `threshold` values, else its first and last
    rows and columns with "..." between (np.array2string under printoptions)."""
    with np.printoptions(threshold=threshold, edgeitems=3, precision=5, suppress=True, linewidth=110):
        return np.array2string(np.asarray(array), separator=", ")


def summary(array: np.ndarray) -> str:
    """'min -0.51, max 2.3, mean 0.12' (finite values; how many are not, where some are)."""
    a = np.asarray(array)
    if a.size == 0 or a.dtype.kind not in "biuf":
        return f"{a.size} values"
    finite = a[np.isfinite(a)] if a.dtype.kind == "f" else a
    if finite.size == 0:
        return f"{a.size} values, none finite"
    text = f"min {finite.min():.5g}, max {finite.max():.5g}, mean {finite.astype(np.float64).mean():.5g}"
    return text + (f", {a.size - finite.size} not finite" if finite.size < a.size else "")


def _write_csv(path: Path, name: str, array: np.ndarray) -> None:
    if array.ndim == 3 and array.shape[0] == 1:
        array = array[0]
    if array.ndim == 1:
        array = array[:, None]
        header = [name]
    elif array.ndim == 2:
        header = [f"{name}_{j}" for j in range(array.shape[1])]
    else:
        raise RnnEdgeError(f"output '{name}' has shape {fmt_shape(array.shape)}: a CSV takes 1-D, 2-D, or 3-D "
                           "with batch 1; write an .npz")
    fmt = "%d" if array.dtype.kind in "iub" else "%.9g"
    np.savetxt(path, array, fmt=fmt, delimiter=",", header=",".join(header), comments="")


def run_file(
    folder: str | os.PathLike,
    input_path: str | os.PathLike,
    output_path: str | os.PathLike | None = None,
    *,
    chunk: int | None = None,
    provider: str | Sequence[str] = "auto",
    threads: int | None = None,
    fallback: bool = False,
    variant: str = "fp32",
    verify: bool = True,
    precision: str | None = None,
) -> Outputs:
    """`rnnedge run DIR --input x.npy [--output y.npz] [--chunk N] [--provider P]` as a function.

    Without `chunk` the whole input runs at once. With `chunk`, the input is streamed N steps at
    a time through `Model.stream` (the export must have state inputs): outputs with a time axis
    are concatenated along it, the others are those of the last chunk. State inputs in an .npz
    start the stream. Returns the data outputs; writes them to `output_path` when given.
    """
    model = load(folder, provider, variant=variant, threads=threads, fallback=fallback, verify=verify,
                 precision=precision)
    model.nonfinite_advice = "clean the data in the file"  # a file cannot pass allow_nonfinite
    inputs = read_inputs(input_path, model, mmap=chunk is not None)  # streamed: read chunk by chunk
    for spec in model.manifest.data_inputs:  # a file's integers, read as the float inputs they feed: said
        a = inputs.get(spec.name)
        if a is not None and a.dtype.kind in "iu" and spec.dtype.startswith("float"):
            warnings.warn(f"{input_path}: input '{spec.name}' holds {a.dtype} values; cast to {spec.dtype}",
                          stacklevel=2)
    if chunk is None:
        out = model.run(**inputs)
        result = Outputs(((n, out[n]) for n in out.data_names), out.provider, out.data_names)
    else:
        result, _ = run_chunked(model, inputs, chunk)
    if output_path is not None:
        write_outputs(output_path, result)
    return result
