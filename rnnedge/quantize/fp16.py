"""The fp16 variant: float16 weights and activations, float32 graph inputs and outputs.

onnxruntime's CPU provider has no float16 kernel for most ops (LSTM, GRU, RNN, MatMul, Gemm,
Conv, ...): it inserts Casts and computes them in float32, so on CPU the variant is smaller, not
faster. CUDA (cuDNN) and TensorRT compute the recurrent ops in float16, except the nodes CUDA
hands to the CPU (activation alpha/beta, clip, GRU linear_before_reset=0). `quantize_fp16`
reports which op types the CPU provider computes in float32 (read from the graph onnxruntime
builds) and which recurrent nodes CUDA would hand to the CPU (from their attributes; not
measured on a GPU here).
"""

from __future__ import annotations

import tempfile
from collections import Counter
from pathlib import Path

import onnx
from onnx import TensorProto, helper

from rnnedge.errors import RnnEdgeError
from rnnedge.quantize.common import cpu_session, facts, load_fp32, room_for, slim, temp_disk


def quantize_fp16(src: Path, dst: Path) -> dict:
    """Write a float16 variant of `src` to `dst`: float32 graph inputs/outputs, integer inputs untouched.

    Uses onnxconverter-common's `convert_float_to_float16(keep_io_types=True)` with its default
    block list. onnxruntime 1.31 crashes (SIGSEGV) building a CPU session at ORT_ENABLE_ALL for a
    float16 Transpose of a recurrent node's output, so those Transposes stay float32
    (`_transposes_after_recurrent`). Scan nodes (convert/scan.py) stay float32 behind Casts: the
    converter turns the values around a Scan into float16 but not its body's declared inputs, which
    onnxruntime then refuses. Values beyond the float16 range are clipped to +-1e4.
    """
    src, dst = Path(src), Path(dst)
    model = load_fp32(src)
    src_size = src.stat().st_size
    try:
        from onnxconverter_common.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16
    except ImportError:
        raise RnnEdgeError(
            "the fp16 variant needs onnxconverter-common: pip install 'rnnedge[quantize]'"
        ) from None
    scans = [n.name for n in model.graph.node if n.op_type == "Scan" and n.name]
    # and, where a Scan is, every Transpose: onnxruntime 1.32 crashes the same way on the float16
    # Transpose that feeds a Scan's input MatMul
    transposes = [n.name for n in model.graph.node if n.op_type == "Transpose" and n.name] if scans else []
    half = convert_float_to_float16(model, keep_io_types=True, op_block_list=DEFAULT_OP_BLOCK_LIST,
                                    node_block_list=_transposes_after_recurrent(model) + scans + transposes)
    half.ir_version = model.ir_version
    onnx.save(slim(half), dst)

    in_file = _fp16_op_counts(half)
    with tempfile.TemporaryDirectory(prefix="rnnedge-f16-") as tmp, temp_disk(tmp):
        optimized = Path(tmp) / "cpu.onnx"
        room_for(Path(tmp), 2 * dst.stat().st_size)  # a failed write is onnxruntime's INVALID_PROTOBUF
        cpu_session(dst, optimized=optimized)
        on_cpu = _fp16_op_counts(onnx.load(optimized))
    cpu_fp32 = sorted((in_file - on_cpu).keys())
    recurrent = [n for n in half.graph.node if n.op_type in ("LSTM", "GRU", "RNN")]
    to_cpu = {n.name or n.output[1]: why for n in recurrent if (why := _cuda_fallback(n))}
    notes = ["weights and activations float16; float32 graph inputs/outputs behind Casts; integer inputs untouched"]
    if cpu_fp32:
        notes.append(
            f"CPUExecutionProvider computes {', '.join(cpu_fp32)} in float32: onnxruntime inserts Casts around ops "
            "with no float16 CPU kernel (LSTM/GRU/RNN/MatMul/Gemm/Conv...) and keeps their neighbours in float32 "
            "(smaller file, no speed-up on CPU)"
        )
    on_cuda = sorted({n.op_type for n in recurrent if (n.name or n.output[1]) not in to_cpu})
    if on_cuda:
        notes.append(f"CUDA (cuDNN) and TensorRT compute {', '.join(on_cuda)} in float16")
    for name, why in to_cpu.items():
        notes.append(f"CUDA hands recurrent node {name} to the CPU ({why}): float32 there, behind Casts")
    if scans:
        notes.append(f"{len(scans)} Scan (recurrent layer(s) no fused node computes: an activation, ConvLSTM) kept in "
                     "float32 behind Casts: the converter would leave its body's inputs float32")
    result = facts(dst, src_size, "fp16: onnxconverter-common convert_float_to_float16(keep_io_types=True)", notes)
    result["cpu_fp32_ops"] = cpu_fp32
    return result


def _transposes_after_recurrent(model: onnx.ModelProto) -> list[str]:
    """Names of Transpose nodes fed by a recurrent node's (or Scan's) output, directly or through the
    Squeeze/Unsqueeze/Gather/Where/Slice that turn it into Keras' layout (the pattern onnxruntime 1.31
    crashes on in float16)."""
    producer = {o: n for n in model.graph.node for o in n.output}
    graph_outputs = {o.name for o in model.graph.output}

    def from_recurrent(value: str, hops: int = 3) -> bool:
        node = producer.get(value)
        if node is None or hops == 0:
            return False
        if node.op_type in ("LSTM", "GRU", "RNN", "Scan"):
            return True
        return (node.op_type in ("Squeeze", "Unsqueeze", "Gather", "Where", "Slice")
                and any(from_recurrent(i, hops - 1) for i in node.input))

    return [n.name for n in model.graph.node
            if n.op_type == "Transpose" and n.name and from_recurrent(n.input[0]) and not set(n.output) & graph_outputs]


def _cuda_fallback(node: onnx.NodeProto) -> str | None:
    """Why onnxruntime's CUDA provider runs this LSTM/GRU/RNN on the CPU, or None (cuDNN takes it)."""
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    if "activation_alpha" in attrs or "activation_beta" in attrs:
        return "activation alpha/beta"
    if "clip" in attrs:
        return "clip"
    if node.op_type == "GRU" and not attrs.get("linear_before_reset", 0):
        return "GRU with linear_before_reset=0"
    return None


def _fp16_op_counts(model: onnx.ModelProto) -> Counter:
    """Op types (not Cast) with at least one float16 input."""
    model = onnx.shape_inference.infer_shapes(model)
    g = model.graph
    types = {v.name: v.type.tensor_type.elem_type for v in [*g.input, *g.value_info, *g.output]}
    types.update({t.name: t.data_type for t in g.initializer})
    return Counter(
        n.op_type for n in g.node if n.op_type != "Cast" and any(types.get(i) == TensorProto.FLOAT16 for i in n.input)
    )
