"""golden.npz: the sample inputs and Keras' outputs an export keeps, case by case."""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path

import numpy as np

from rnnedge.errors import RnnEdgeError
from rnnedge.files import atomic_path
from rnnedge.manifest import GOLDEN


def read_golden(folder: str | Path) -> list[tuple[str, dict, dict]]:
    """[(case name, inputs, expected outputs)] from golden.npz."""
    path = Path(folder) / GOLDEN
    if not path.is_file():
        raise RnnEdgeError(f"{folder} has no {GOLDEN}: expected a folder written by `rnnedge export`")
    cases: dict[str, tuple[dict, dict]] = {}
    names: dict[str, str] = {}
    try:
        with np.load(path, allow_pickle=False) as data:
            for key in data.files:
                case, kind, name = key.split("/", 2)
                if kind == "name":
                    names[case] = str(data[key])
                    continue
                cases.setdefault(case, ({}, {}))[0 if kind == "in" else 1][name] = data[key]
        order = sorted(cases, key=lambda c: int(c.removeprefix("case")))
    except (zipfile.BadZipFile, zlib.error, ValueError, OSError, EOFError, KeyError, AttributeError) as e:
        reason = (str(e).splitlines() or [type(e).__name__])[0][:160]
        raise RnnEdgeError(f"{path} is not a readable golden file ({type(e).__name__}: {reason}); "
                           "re-export the model") from None
    return [(names.get(c, c), *cases[c]) for c in order]


def write_golden(folder: str | Path, cases: list[tuple[str, dict, dict]]) -> Path:
    arrays = {}
    for i, (name, inputs, outputs) in enumerate(cases):
        arrays[f"case{i}/name/_"] = np.array(name)
        arrays.update({f"case{i}/in/{k}": v for k, v in inputs.items()})
        arrays.update({f"case{i}/out/{k}": v for k, v in outputs.items()})
    path = Path(folder) / GOLDEN
    with atomic_path(path) as tmp, open(tmp, "wb") as f:  # a file object: savez adds no ".npz" to it
        np.savez_compressed(f, **arrays)
    return path
