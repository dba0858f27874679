"""Quantized variants of an export: takes an export folder (its fp32 model.onnx and golden.npz),
gives model.int8.onnx / model.fp16.onnx with their measured error, gate and the recommendation.

Needs numpy, onnx and onnxruntime only (onnxconverter-common for fp16, imported when asked).
`int8` and `fp16` rewrite files; `gate` judges them; `folder` measures, chooses and records.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from rnnedge.errors import RnnEdgeError
from rnnedge.quantize.common import facts as _facts
from rnnedge.quantize.common import load_fp32
from rnnedge.quantize.folder import FP16_PROVIDERS, VARIANTS, parse_variants, quantize_dir, read_data, recommend
from rnnedge.quantize.fp16 import quantize_fp16
from rnnedge.quantize.gate import TASK_GATE as GATE
from rnnedge.quantize.gate import within_gate
from rnnedge.quantize.int8 import SETTINGS, Int8Setting, quantize_int8, u8s8_weight_range

__all__ = ["FP16_PROVIDERS", "GATE", "SETTINGS", "VARIANTS", "Int8Setting", "parse_variants", "quantize_dir",
           "quantize_file", "quantize_fp16", "quantize_int8", "read_data", "recommend", "u8s8_weight_range",
           "within_gate"]


def quantize_file(src: Path, dst: Path, variant: str, *, calibration: dict[str, np.ndarray] | None = None,
                  setting: str | None = None) -> dict:
    """Write the `variant` ("fp32", "int8" or "fp16") of the fp32 model at `src` to `dst`; return its facts.

    The facts: {"file": dst.name, "size": bytes, "size_ratio": size / size of src, "method": text,
    "notes": [text, ...]}, plus "quantized" (op -> count) and "setting" for int8 and
    "cpu_fp32_ops" for fp16. `calibration` and `setting` are used by int8 only.
    """
    if variant not in VARIANTS:
        raise RnnEdgeError(f"unknown variant {variant!r}: expected one of {', '.join(VARIANTS)}")
    if variant == "int8":
        return quantize_int8(src, dst, calibration=calibration, setting=setting)
    if variant == "fp16":
        return quantize_fp16(src, dst)
    src, dst = Path(src), Path(dst)
    load_fp32(src)
    if src.resolve() != dst.resolve():
        shutil.copyfile(src, dst)
    return _facts(dst, src.stat().st_size, "fp32: as exported", [])
