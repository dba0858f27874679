"""`rnnedge ort DIR`: the fp32 model in onnxruntime's ORT format, for minimal and mobile builds.

Writes DIR/model.ort (converted by onnxruntime's own `convert_onnx_models_to_ort`, optimisations
"all", fixed style) and DIR/required_operators.config (the operator list a minimal onnxruntime
build is compiled with: `build.sh --minimal_build --include_ops_by_config required_operators.config`),
then replays golden.npz on the .ort file and records it in manifest.json as the variant "ort":
{"file", "format": "ort", "from", "required_operators", "size", "max_abs_error" (against
Keras' golden outputs, per output), "gate"}. `rnnedge.load(DIR, variant="ort")` runs it (an
InferenceSession reads .ort files), and `rnnedge check DIR` replays it too.
Needs numpy and onnxruntime only.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from rnnedge.errors import RnnEdgeError
from rnnedge.files import changing, committed, place
from rnnedge.manifest import GOLDEN, MODEL, Manifest
from rnnedge.tables import ATOL  # the ORT file is the fp32 graph: it must give fp32's outputs

ORT_FILE = "model.ort"
OPERATORS = "required_operators.config"
VARIANT = "ort"


def _golden(folder: Path) -> list[tuple[dict, dict]]:
    """[(inputs, Keras' outputs)] from golden.npz ("case{i}/in/{name}", "case{i}/out/{name}")."""
    path = folder / GOLDEN
    if not path.is_file():
        raise RnnEdgeError(f"{folder} has no {GOLDEN}: expected a folder written by `rnnedge export`")
    cases: dict[str, tuple[dict, dict]] = {}
    with np.load(path, allow_pickle=False) as data:
        for key in data.files:
            case, kind, name = key.split("/", 2)
            if kind in ("in", "out"):
                cases.setdefault(case, ({}, {}))[0 if kind == "in" else 1][name] = data[key]
    return [cases[c] for c in sorted(cases, key=lambda c: int(c.removeprefix("case")))]


def write_ort(folder: str | os.PathLike, *, force: bool = False, verify: bool = True,
              threads: int | None = None) -> dict:
    """Convert DIR/model.onnx to DIR/model.ort plus DIR/required_operators.config; returns the manifest entry.
    `verify`: refuse a model.onnx or golden.npz whose sha256 differs from the manifest's (else the
    manifest written after converting would record the changed file as exported). `threads`: the
    replay's intra-op threads (onnxruntime's default, every core, when None)."""
    with changing(Path(folder)):
        return _write_ort(Path(folder), force, verify, threads)


def _write_ort(folder: Path, force: bool, verify: bool, threads: int | None) -> dict:
    from rnnedge.runtime import load as runtime_load

    manifest = Manifest.load(folder)
    source = folder / MODEL
    if not source.is_file():
        raise RnnEdgeError(f"{source} is missing: the export folder is incomplete; re-export the model")
    if (folder / ORT_FILE).exists() and not force:
        raise RnnEdgeError(f"{folder / ORT_FILE} already exists: pass --force to convert again")
    keep = () if verify else (MODEL, GOLDEN)  # read unverified: their recorded checksums stay
    if verify:
        manifest.verify(folder, [MODEL] + [GOLDEN] * (folder / GOLDEN).is_file())  # a missing one: said below
    try:
        from onnxruntime.tools.convert_onnx_models_to_ort import OptimizationStyle, convert_onnx_models_to_ort
    except ImportError as e:
        raise RnnEdgeError(f"this onnxruntime has no ORT-format converter ({e}); install the full onnxruntime "
                           "wheel (pip install onnxruntime)") from None
    with tempfile.TemporaryDirectory(prefix="rnnedge-ort-") as tmp:
        work = Path(tmp) / "in"
        work.mkdir()
        shutil.copy2(source, work / MODEL)
        out = Path(tmp) / "out"
        chatter = io.StringIO()
        quiet = logging.getLogger("ort_format_model.utils")  # logs "Created config in ..." at INFO
        level = quiet.level
        quiet.setLevel(logging.WARNING)
        try:
            with contextlib.redirect_stdout(chatter), contextlib.redirect_stderr(chatter):
                convert_onnx_models_to_ort(work / MODEL, output_dir=out, optimization_styles=[OptimizationStyle.Fixed])
        except Exception as e:  # the converter raises plain exceptions (RuntimeError, onnxruntime's Fail)
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise RnnEdgeError(f"onnxruntime could not convert {source} to the ORT format ({first})") from None
        finally:
            quiet.setLevel(level)
        made = out / ORT_FILE
        config = next(out.glob("*required_operators*.config"), None)
        if not made.is_file() or config is None:
            raise RnnEdgeError(f"the ORT converter wrote {sorted(p.name for p in out.iterdir())}, not {ORT_FILE} "
                               f"and {OPERATORS}: check onnxruntime's version")
        shutil.copy2(made, folder / (ORT_FILE + ".tmp"))
        text = config.read_text().replace(str(made), ORT_FILE)  # its header names the converted file
        (folder / (OPERATORS + ".tmp")).write_text(text if text.endswith("\n") else text + "\n")
    if manifest.variants.pop(VARIANT, None) is not None:  # no manifest naming a file being replaced
        manifest.save(folder, keep)
    place(folder / (ORT_FILE + ".tmp"), folder / ORT_FILE)
    place(folder / (OPERATORS + ".tmp"), folder / OPERATORS)
    entry = {"file": ORT_FILE, "format": "ort", "from": MODEL, "required_operators": OPERATORS,
             "size": (folder / ORT_FILE).stat().st_size}
    manifest.variants[VARIANT] = entry
    manifest.save(folder, keep)  # recorded before replaying, so load(variant="ort") finds it
    model = runtime_load(folder, "cpu", variant=VARIANT, threads=threads)
    worst: dict[str, float] = {}
    for inputs, expected in _golden(folder):
        got = model.run(**inputs)
        for name, want in expected.items():
            diff = np.abs(np.asarray(got[name], np.float64) - np.asarray(want, np.float64))
            worst[name] = max(worst.get(name, 0.0), float(diff.max(initial=0.0)))
    fp32 = {k: float(v) for k, v in manifest.variants.get("fp32", {}).get("max_abs_error", {}).items()}
    passed = all(v <= max(ATOL, fp32.get(k, 0.0) * 1.01 + 1e-7) for k, v in worst.items())
    entry["max_abs_error"] = worst
    entry["gate"] = {"passed": passed, "by": "parity",
                     "rule": f"the fp32 graph in ORT format: golden.npz within {ATOL:g} of Keras, as model.onnx"}
    manifest.variants[VARIANT] = entry
    manifest.save(folder, keep)
    committed(folder / ORT_FILE)
    return entry
