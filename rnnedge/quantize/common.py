"""What the int8 and fp16 rewrites share: loading the fp32 source, slimming, sessions, facts."""

from __future__ import annotations

import errno
import logging
import os
import tempfile
from collections import Counter
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import onnx
from onnx import TensorProto

from rnnedge.errors import RnnEdgeError
from rnnedge.files import disk_error

DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES)  # the user's disk, not our bug


def load_fp32(src: Path) -> onnx.ModelProto:
    """The fp32 model at `src`, or RnnEdgeError."""
    if not src.is_file():
        raise RnnEdgeError(f"{src} does not exist: expected an ONNX model file (model.onnx of an export folder)")
    try:
        model = onnx.load(src)
    except Exception as e:  # protobuf's DecodeError and friends
        raise RnnEdgeError(
            f"{src} is not an ONNX model ({type(e).__name__}): pass the model.onnx of an export folder"
        ) from None
    ops = {n.op_type for n in model.graph.node}
    quantized = sorted(op for op in ops if "Quantize" in op or op.endswith("Integer"))
    half = any(t.data_type == TensorProto.FLOAT16 for t in model.graph.initializer)
    if quantized or half:
        found = f"quantized ops ({', '.join(quantized)})" if quantized else "float16 weights"
        raise RnnEdgeError(f"{src} holds {found}: expected the float32 model (model.onnx); quantize from that")
    return model


def slim(model: onnx.ModelProto) -> onnx.ModelProto:
    """Drop what the converters leave behind that onnxruntime recomputes at load: the shapes and
    types of intermediate values (`value_info`) and doc strings. 3-6% of a small int8 file."""
    del model.graph.value_info[:]
    model.doc_string = ""
    for node in model.graph.node:
        node.doc_string = ""
    return model


def cpu_session(path: Path, *, optimized: Path | None = None):
    """Load `path` in onnxruntime on CPU (a failure here is our bug: let it raise)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    if optimized is not None:  # the graph as the CPU provider runs it, Casts included
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        so.optimized_model_filepath = str(optimized)
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def op_counts(model: onnx.ModelProto) -> Counter:
    return Counter(n.op_type for n in model.graph.node)


def facts(dst: Path, src_size: int, method: str, notes: list[str]) -> dict[str, Any]:
    size = dst.stat().st_size
    return {
        "file": dst.name,
        "size": size,
        "size_ratio": round(size / src_size, 4),
        "method": method,
        "notes": notes,
    }


class _DropAdvice(logging.Filter):
    """onnxruntime's quantizer logs advice on the root logger at WARNING on every call."""

    def filter(self, record):
        msg = record.getMessage()
        return not msg.startswith(("Please consider", "Please check if the model is already quantized"))


@contextmanager
def quiet_quantizer():
    root = logging.getLogger()
    f = _DropAdvice()
    root.addFilter(f)
    try:
        yield
    finally:
        root.removeFilter(f)


@contextmanager
def temp_disk(folder: str | Path):
    """A full or read-only disk under the temporary `folder` of a conversion is one line naming it."""
    try:
        yield
    except OSError as e:
        if e.errno not in DISK_ERRNOS:
            raise
        raise disk_error(f"the temporary folder {Path(folder).parent} (TMPDIR)", e) from None


def room_for(folder: Path, size: int) -> None:
    """Make sure `size` bytes fit in `folder` now, or raise the disk's OSError.

    onnx's shape inference, which onnxruntime's quantizer runs on a file beside its input, does
    not check its write: on a full disk the file comes out cut short, and the quantizer reads
    back a DecodeError or, cut where a field ends, a model with parts missing; onnxruntime says
    a failed write of an optimized model as INVALID_PROTOBUF."""
    fd, name = tempfile.mkstemp(dir=folder)
    try:
        os.posix_fallocate(fd, 0, max(size, 1))
    except OSError as e:
        if e.errno in DISK_ERRNOS:
            raise
        # a file system that cannot reserve (EINVAL, EOPNOTSUPP): nothing to tell in advance
    finally:
        os.close(fd)
        os.unlink(name)
