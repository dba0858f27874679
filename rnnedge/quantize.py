"""Quantized variants of an exported model: int8 and fp16, with facts for the manifest.

Needs numpy, onnx and onnxruntime only (onnxconverter-common for fp16, imported when asked).

What the int8 variant does, op by op (onnxruntime 1.31, CPU):

| op in the fp32 model | in the int8 file | computed as |
|---|---|---|
| `LSTM` (W, R initializers) | `DynamicQuantizeLSTM` (onnxruntime's `quantize_dynamic`) | int8; CPU kernel only |
| `MatMul` with a constant B, `Gemm` | `DynamicQuantizeLinear` + `MatMulInteger` (`quantize_dynamic`) | int8 (fused at load) |
| `GRU`, `RNN` | W and R stored int8, rebuilt by `Cast` + `Mul` | float |
| `Conv` | weights stored int8, rebuilt by `Cast` + `Mul` | float |
| `Gather` over a float table (embedding) | int8 table; the selected rows are cast and scaled | float |

onnxruntime has no quantized GRU or RNN kernel (and no plan for one), so their weights are
stored int8 ("weight-only"): symmetric, one scale per output row (per direction), zero point 0,
range [-127, 127]; file ~4x smaller for those tensors, arithmetic in float. The weights are
rebuilt with `Cast` + `Mul` on initializers rather than `DequantizeLinear`: onnxruntime's
constant folding evaluates Cast + Mul once at load, while it keeps `DequantizeLinear` (it waits
for QDQ fusion) and runs it on every call: +20-40% latency for a 256-unit GRU, against none
with Cast + Mul. Conv is weight-only too because `ConvInteger` (what `quantize_dynamic` makes
of it) is slower than the float Conv on CPU (2.3 ms vs 1.6 ms for a 256-channel Conv1d front
end). `quantize_dynamic` rewrites a plain Gemm (alpha = beta = 1, no transA) as MatMul + Add;
other Gemms are weight-only here. onnxruntime's dynamic quantizer leaves embedding tables in
float; the rewrite here stores them int8 with one scale per row and scales only the gathered
rows. Biases stay float32. Nothing inside a `Loop`/`If`/`Scan` body is quantized.

With `calibration`, MatMul/Gemm/Conv are quantized statically instead: see `quantize_int8`.

The fp16 variant stores weights and activations in float16 with float32 graph inputs and outputs.
onnxruntime's CPU provider has no float16 kernel for most ops (LSTM, GRU, RNN, MatMul, Gemm,
Conv, ...): it inserts Casts and computes them in float32, so on CPU the variant is smaller, not
faster. CUDA (cuDNN) and TensorRT compute the recurrent ops in float16, except the nodes CUDA
hands to the CPU (activation alpha/beta, clip, GRU linear_before_reset=0). `quantize_fp16`
reports which op types the CPU provider computes in float32 (read from the graph onnxruntime
builds) and which recurrent nodes CUDA would hand to the CPU (from their attributes; not
measured on a GPU here).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections import Counter
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from rnnedge.errors import RnnEdgeError

VARIANTS = ("fp32", "int8", "fp16")

_DYNAMIC_OPS = ("LSTM", "MatMul")  # onnxruntime's quantize_dynamic, without calibration
_STATIC_OPS = ("MatMul", "Gemm", "Conv")  # onnxruntime's quantize_static (QDQ), with calibration
_WEIGHT_ONLY_OPS = ("GRU", "RNN", "Gemm", "Conv")  # done here, where the weights are still float
_QMAX = 127.0


def quantize_file(src: Path, dst: Path, variant: str, *, calibration: dict[str, np.ndarray] | None = None) -> dict:
    """Write the `variant` ("fp32", "int8" or "fp16") of the fp32 model at `src` to `dst`; return its facts.

    The facts: {"file": dst.name, "size": bytes, "size_ratio": size / size of src, "method": text,
    "notes": [text, ...]}, plus "quantized" (op -> count) for int8 and "cpu_fp32_ops" for fp16.
    `calibration` is used by int8 only.
    """
    if variant not in VARIANTS:
        raise RnnEdgeError(f"unknown variant {variant!r}: expected one of {', '.join(VARIANTS)}")
    if variant == "int8":
        return quantize_int8(src, dst, calibration=calibration)
    if variant == "fp16":
        return quantize_fp16(src, dst)
    src, dst = Path(src), Path(dst)
    _load(src)
    if src.resolve() != dst.resolve():
        shutil.copyfile(src, dst)
    return _facts(dst, src.stat().st_size, "fp32: as exported", [])


def quantize_int8(src: Path, dst: Path, *, calibration: dict[str, np.ndarray] | None = None) -> dict:
    """Write an int8 variant of `src` to `dst` (the module docstring says what happens to each op).

    Without `calibration`: `quantize_dynamic` for LSTM, MatMul and Gemm (int8 weights, one scale per
    output channel; activations quantized to uint8 at run time), weight-only int8 for GRU, RNN,
    Gemm, Conv and embedding tables. Per-channel rather than per-tensor weights: on an LSTM with
    rows of different scales it cut the max error by 30% (0.0109 -> 0.0076) for ~10% of the
    int8 speed-up (1.32 -> 1.45 ms against 3.95 ms in float, 256 units, 100 steps).

    With `calibration` (one array per graph input: a batch of typical inputs, batch first):
    MatMul, Gemm and Conv are quantized statically (QDQ, uint8 activations with ranges from the
    batch, per-channel int8 weights), LSTM dynamically, GRU/RNN/embeddings weight-only. On a
    model with a 256-channel Conv1d front end it was ~10% faster than the dynamic path (1.03 vs
    1.15 ms) with a larger error (0.011 vs 0.007), since activations outside the calibrated
    ranges are clipped; on plain recurrent models (small dense heads) it makes no difference.
    """
    src, dst = Path(src), Path(dst)
    model = _load(src)
    src_size = src.stat().st_size
    before = _op_counts(model)
    with tempfile.TemporaryDirectory(prefix="rnnedge-int8-") as tmp:
        stage = src
        if calibration is not None:
            stage = Path(tmp) / "static.onnx"
            _quantize_static(src, stage, _calibration_feeds(model, calibration))
            dynamic_ops: tuple[str, ...] = ("LSTM",)
            method = "int8: static QDQ MatMul/Gemm/Conv, dynamic LSTM, weight-only GRU/RNN/embeddings"
        else:
            dynamic_ops = _DYNAMIC_OPS
            method = "int8: dynamic LSTM/MatMul/Gemm, weight-only GRU/RNN/Conv/embeddings"
        out = Path(tmp) / "int8.onnx"
        with _quiet_quantizer():
            from onnxruntime.quantization import QuantType, quantize_dynamic

            quantize_dynamic(
                stage, out, weight_type=QuantType.QInt8, per_channel=True, op_types_to_quantize=list(dynamic_ops)
            )
        q = onnx.load(out)
    weight_only = _weight_only_int8(q, _WEIGHT_ONLY_OPS)  # skips weights quantize_* already took
    q.ir_version = model.ir_version
    onnx.save(_slim(q), dst)
    _session(dst)  # loads on CPU, or raises

    after = _op_counts(q)
    static = _static_qdq_counts(q)
    quantized = Counter(
        {
            "DynamicQuantizeLSTM": after["DynamicQuantizeLSTM"],
            "MatMulInteger": after["MatMulInteger"],
            **{f"static {op}": n for op, n in static.items()},
            **{f"weight-only {op}": n for op, n in weight_only.items()},
        }
    )
    notes = []
    if quantized["DynamicQuantizeLSTM"]:
        notes.append(
            f"{quantized['DynamicQuantizeLSTM']} LSTM -> DynamicQuantizeLSTM (int8 weights per gate row; CPU kernel "
            "only: other providers hand it to the CPU)"
        )
    if quantized["MatMulInteger"]:
        n = quantized["MatMulInteger"]
        notes.append(f"{n} MatMul/Gemm -> MatMulInteger (dynamic; DynamicQuantizeMatMul at load)")
    if static:
        listed = ", ".join(f"{n} {op}" for op, n in sorted(static.items()))
        notes.append(f"{listed} quantized statically (QDQ) with activation ranges from the calibration batch")
    for op in ("GRU", "RNN"):
        if weight_only[op]:
            notes.append(
                f"{weight_only[op]} {op}: W and R stored int8 (per row), computed in float: onnxruntime has no "
                f"quantized {op} kernel"
            )
    for op in ("Gemm", "Conv"):
        if weight_only[op]:
            notes.append(f"{weight_only[op]} {op}: weights stored int8 (per output channel), computed in float")
    if weight_only["Gather"]:
        notes.append(f"{weight_only['Gather']} embedding lookup(s): table stored int8 (per row), computed in float")
    taken_care = {"LSTM": quantized["DynamicQuantizeLSTM"], "GRU": weight_only["GRU"], "RNN": weight_only["RNN"]}
    for op, done in taken_care.items():
        if before[op] > done:
            notes.append(f"{before[op] - done} {op} left in float: its weights are not float initializers")
    if before["Loop"] or before["Scan"]:
        notes.append("Loop/Scan bodies are not quantized: export with fused recurrent nodes for a smaller int8 model")
    facts = _facts(dst, src_size, method, notes)
    facts["quantized"] = {k: v for k, v in quantized.items() if v}
    return facts


def quantize_fp16(src: Path, dst: Path) -> dict:
    """Write a float16 variant of `src` to `dst`: float32 graph inputs/outputs, integer inputs untouched.

    Uses onnxconverter-common's `convert_float_to_float16(keep_io_types=True)` with its default
    block list. onnxruntime 1.31 crashes (SIGSEGV) building a CPU session at ORT_ENABLE_ALL for a
    float16 Transpose of a recurrent node's output, so those Transposes stay float32
    (`_transposes_after_recurrent`). Values beyond the float16 range are clipped to +-1e4.
    """
    src, dst = Path(src), Path(dst)
    model = _load(src)
    src_size = src.stat().st_size
    try:
        from onnxconverter_common.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16
    except ImportError:
        raise RnnEdgeError(
            "the fp16 variant needs onnxconverter-common: pip install 'rnnedge[quantize]'"
        ) from None
    half = convert_float_to_float16(model, keep_io_types=True, op_block_list=DEFAULT_OP_BLOCK_LIST,
                                    node_block_list=_transposes_after_recurrent(model))
    half.ir_version = model.ir_version
    onnx.save(_slim(half), dst)

    in_file = _fp16_op_counts(half)
    with tempfile.TemporaryDirectory(prefix="rnnedge-f16-") as tmp:
        optimized = Path(tmp) / "cpu.onnx"
        _session(dst, optimized=optimized)
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
    facts = _facts(dst, src_size, "fp16: onnxconverter-common convert_float_to_float16(keep_io_types=True)", notes)
    facts["cpu_fp32_ops"] = cpu_fp32
    return facts


def _transposes_after_recurrent(model: onnx.ModelProto) -> list[str]:
    """Names of Transpose nodes fed by a recurrent node's output, directly or through the
    Squeeze/Gather/Where/Slice that turn it into Keras' layout (the pattern onnxruntime 1.31
    crashes on in float16)."""
    producer = {o: n for n in model.graph.node for o in n.output}
    graph_outputs = {o.name for o in model.graph.output}

    def from_recurrent(value: str, hops: int = 3) -> bool:
        node = producer.get(value)
        if node is None or hops == 0:
            return False
        if node.op_type in ("LSTM", "GRU", "RNN"):
            return True
        return node.op_type in ("Squeeze", "Gather", "Where", "Slice") and any(from_recurrent(i, hops - 1) for i in node.input)

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


# ---------------------------------------------------------------------------------------------
# weight-only int8


def _weight_only_int8(model: onnx.ModelProto, ops: tuple[str, ...]) -> Counter:
    """Store the weights of `ops` (GRU, RNN, Gemm, Conv) and of Gather tables as int8; return counts by op.

    The weights are rebuilt in float by Cast + Mul on initializers, which onnxruntime's constant
    folding evaluates once at load: the file is smaller, the run time that of the float model.
    """
    graph = model.graph
    overridable = {i.name for i in graph.input}  # initializers listed as inputs (IR < 4 style): leave them
    inits = {t.name: t for t in graph.initializer if t.name not in overridable}
    taken = {t.name for t in graph.initializer} | {n.name for n in graph.node}
    taken |= {o for n in graph.node for o in n.output}
    taken |= {v.name for v in [*graph.input, *graph.output, *graph.value_info]}

    def fresh(base: str) -> str:
        name, i = base, 0
        while name in taken:
            i += 1
            name = f"{base}_{i}"
        taken.add(name)
        return name

    done: dict[str, str] = {}  # float initializer -> name of its dequantized value
    tables: dict[str, tuple[str, str]] = {}  # embedding table -> (int8 table, row scales)
    new_inits: list[TensorProto] = []
    nodes: list[onnx.NodeProto] = []
    counts: Counter = Counter()

    def dequantized(name: str, reduce: tuple[int, ...]) -> str | None:
        """A float value equal (up to rounding) to initializer `name`, computed from int8 storage.

        One scale per index of the axes not in `reduce` (the output channels)."""
        if name in done:
            return done[name]
        t = inits.get(name)
        if t is None or t.data_type != TensorProto.FLOAT or len(t.dims) <= max(reduce):
            return None
        q, scale = _int8_symmetric(numpy_helper.to_array(t), reduce)
        q_name, s_name, as_float, out = (fresh(f"{name}_{x}") for x in ("int8", "int8_scale", "float", "dequantized"))
        new_inits.extend([numpy_helper.from_array(q, q_name), numpy_helper.from_array(scale, s_name)])
        nodes.append(helper.make_node("Cast", [q_name], [as_float], name=fresh(f"{name}_cast"), to=TensorProto.FLOAT))
        nodes.append(helper.make_node("Mul", [as_float, s_name], [out], name=fresh(f"{name}_dequantize")))
        done[name] = out
        return out

    for node in graph.node:
        standard = node.domain in ("", "ai.onnx")
        if standard and node.op_type in ("GRU", "RNN") and node.op_type in ops:
            # W [D, G*U, F], R [D, G*U, U]: one scale per (direction, row)
            w, r = (dequantized(node.input[i], (2,)) for i in (1, 2))
            if w and r:
                node.input[1], node.input[2] = w, r
                counts[node.op_type] += 1
        elif standard and node.op_type == "Gemm" and "Gemm" in ops:  # B [K, N], or [N, K] with transB
            trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
            b = dequantized(node.input[1], (1,) if trans_b else (0,))
            if b:
                node.input[1] = b
                counts["Gemm"] += 1
        elif standard and node.op_type == "Conv" and "Conv" in ops:  # W [M, C/group, k...]
            dims = _dims(inits, node.input[1])
            w = dequantized(node.input[1], tuple(range(1, len(dims)))) if len(dims) >= 3 else None
            if w:
                node.input[1] = w
                counts["Conv"] += 1
        elif standard and node.op_type == "Gather":
            axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
            t = inits.get(node.input[0])
            if axis == 0 and t is not None and t.data_type == TensorProto.FLOAT and len(t.dims) == 2:
                nodes.extend(_int8_embedding(node, tables, inits, new_inits, fresh))
                counts["Gather"] += 1
                continue
        nodes.append(node)

    if not counts:
        return counts
    used = {i for n in nodes for i in n.input} | {o.name for o in graph.output}
    kept = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept + new_inits)
    del graph.node[:]
    graph.node.extend(nodes)
    return counts


def _int8_symmetric(w: np.ndarray, reduce: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """int8 in [-127, 127] and float32 scales (kept dims, so they broadcast) with w ~= q * scale."""
    amax = np.abs(w).max(axis=reduce, keepdims=True)
    scale = np.where(amax > 0, amax / _QMAX, 1.0).astype(np.float32)
    return np.clip(np.rint(w / scale), -_QMAX, _QMAX).astype(np.int8), scale


def _int8_embedding(node: onnx.NodeProto, tables: dict[str, tuple[str, str]], inits, new_inits, fresh):
    """Gather(table, ids) -> Cast(Gather(int8 table, ids)) * Gather(row scales, ids): only selected rows are scaled."""
    name, ids, out = node.input[0], node.input[1], node.output[0]
    if name not in tables:
        q, scale = _int8_symmetric(numpy_helper.to_array(inits[name]), (1,))
        tables[name] = (fresh(f"{name}_int8"), fresh(f"{name}_int8_scale"))
        new_inits.append(numpy_helper.from_array(q, tables[name][0]))
        new_inits.append(numpy_helper.from_array(scale, tables[name][1]))
    q_name, s_name = tables[name]
    rows, rows_f, scales = fresh(f"{out}_int8"), fresh(f"{out}_int8_float"), fresh(f"{out}_scale")
    base = node.name or out
    return [
        helper.make_node("Gather", [q_name, ids], [rows], name=fresh(f"{base}_int8")),
        helper.make_node("Cast", [rows], [rows_f], name=fresh(f"{base}_cast"), to=TensorProto.FLOAT),
        helper.make_node("Gather", [s_name, ids], [scales], name=fresh(f"{base}_scale")),
        helper.make_node("Mul", [rows_f, scales], [out], name=fresh(f"{base}_dequantize")),
    ]


def _dims(inits: dict[str, TensorProto], name: str) -> list[int]:
    t = inits.get(name)
    return list(t.dims) if t is not None else []


# ---------------------------------------------------------------------------------------------
# static QDQ


def _calibration_feeds(model: onnx.ModelProto, calibration: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    init_names = {t.name for t in model.graph.initializer}
    inputs = {i.name: i.type.tensor_type.elem_type for i in model.graph.input if i.name not in init_names}
    if set(calibration) != set(inputs):
        raise RnnEdgeError(
            f"calibration data must hold one array per model input: expected {sorted(inputs)}, "
            f"got {sorted(calibration)}"
        )
    return {
        k: np.asarray(calibration[k]).astype(helper.tensor_dtype_to_np_dtype(t), copy=False)
        for k, t in inputs.items()
    }


def _quantize_static(src: Path, dst: Path, feeds: dict[str, np.ndarray]) -> None:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Batch(CalibrationDataReader):
        def __init__(self):
            self._left = [feeds]

        def get_next(self):
            return self._left.pop() if self._left else None

    with _quiet_quantizer():
        quantize_static(
            src,
            dst,
            Batch(),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=list(_STATIC_OPS),
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
        )


# ---------------------------------------------------------------------------------------------
# helpers


def _load(src: Path) -> onnx.ModelProto:
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


def _static_qdq_counts(model: onnx.ModelProto) -> Counter:
    """MatMul/Gemm/Conv nodes fed by DequantizeLinear (quantize_static's QDQ form)."""
    dq = {o for n in model.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    return Counter(n.op_type for n in model.graph.node if n.op_type in _STATIC_OPS and any(i in dq for i in n.input))


def _slim(model: onnx.ModelProto) -> onnx.ModelProto:
    """Drop what the converters leave behind that onnxruntime recomputes at load: the shapes and
    types of intermediate values (`value_info`) and doc strings. 3-6% of a small int8 file."""
    del model.graph.value_info[:]
    model.doc_string = ""
    for node in model.graph.node:
        node.doc_string = ""
    return model


def _session(path: Path, *, optimized: Path | None = None):
    """Load `path` in onnxruntime on CPU (a failure here is our bug: let it raise)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    if optimized is not None:  # the graph as the CPU provider runs it, Casts included
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        so.optimized_model_filepath = str(optimized)
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def _op_counts(model: onnx.ModelProto) -> Counter:
    return Counter(n.op_type for n in model.graph.node)


def _fp16_op_counts(model: onnx.ModelProto) -> Counter:
    """Op types (not Cast) with at least one float16 input."""
    model = onnx.shape_inference.infer_shapes(model)
    g = model.graph
    types = {v.name: v.type.tensor_type.elem_type for v in [*g.input, *g.value_info, *g.output]}
    types.update({t.name: t.data_type for t in g.initializer})
    return Counter(
        n.op_type for n in g.node if n.op_type != "Cast" and any(types.get(i) == TensorProto.FLOAT16 for i in n.input)
    )


def _facts(dst: Path, src_size: int, method: str, notes: list[str]) -> dict[str, Any]:
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
def _quiet_quantizer():
    root = logging.getLogger()
    f = _DropAdvice()
    root.addFilter(f)
    try:
        yield
    finally:
        root.removeFilter(f)


# ---------------------------------------------------------------- variants of an export folder

# The accuracy gate: how far a variant's task metric may fall behind the fp32 reference.
GATE = {"accuracy": ("higher", 0.01), "f1": ("higher", 0.01), "rmse": ("lower", 0.05)}
# Providers that compute fp16 kernels natively (CPU computes the recurrent ops in fp32 behind Casts).
FP16_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider")


def parse_variants(text: str | list[str]) -> list[str]:
    """'int8,fp16' -> ['int8', 'fp16'], refusing unknown names in one line."""
    names = [v.strip() for v in (text.split(",") if isinstance(text, str) else text) if v.strip()]
    unknown = [v for v in names if v not in VARIANTS]
    if unknown or not names:
        raise RnnEdgeError(f"unknown variant(s) {', '.join(unknown) or '(none given)'}: expected a comma-separated "
                           f"list of {', '.join(VARIANTS)}")
    return list(dict.fromkeys(names))


def within_gate(metric: str, reference: float, value: float) -> bool:
    direction, threshold = GATE[metric]
    if direction == "higher":
        return value >= reference - threshold
    return value <= reference * (1 + threshold)


def read_data(path: str | Path, manifest) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """(inputs by name, targets `y` or None) from a user's .npz for calibration and evaluation."""
    path = Path(path)
    if not path.is_file() or path.suffix != ".npz":
        raise RnnEdgeError(f"--data {path}: expected an existing .npz file holding the model's inputs by name "
                           f"({', '.join(s.name for s in manifest.data_inputs)}) and optionally targets 'y'")
    with np.load(path, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    names = [s.name for s in manifest.data_inputs]
    if len(names) == 1 and names[0] not in arrays and "x" in arrays:
        arrays[names[0]] = arrays.pop("x")
    missing = [n for n in names if n not in arrays]
    if missing:
        raise RnnEdgeError(f"--data {path}: no array for input(s) {', '.join(missing)}; it holds "
                           f"{', '.join(arrays) or 'nothing'} (name the arrays after the inputs, targets as 'y')")
    return {n: arrays[n] for n in names}, arrays.get("y")


def quantize_dir(folder: str | Path, variants, *, evaluate=None, data: str | Path | None = None,
                 metric: str | None = None, latency_runs: int = 100) -> dict:
    """Add quantized variants to an export folder and record, per variant, its size, its error
    against Keras' golden outputs, its task metric, its latency (CPU, batch 1) and whether it
    passes the accuracy gate; name the recommended variant per provider. Returns manifest.variants.

    `evaluate(model) -> float` scores a loaded runtime model on a test split (the zoo passes one);
    otherwise `data` (.npz with the inputs and targets `y`) and `metric` (or the manifest's) are used.
    """
    from rnnedge import bench, metrics
    from rnnedge.check import Tolerance, check_dir
    from rnnedge.manifest import MODEL, Manifest
    from rnnedge.runtime import load

    folder = Path(folder)
    manifest = Manifest.load(folder)
    names = [v for v in parse_variants(variants) if v != "fp32"]
    calibration, targets = read_data(data, manifest) if data is not None else (None, None)
    metric = metric or manifest.task.get("metric")
    if evaluate is None and calibration is not None:
        load(folder, "cpu").run(**calibration)  # refuse arrays that do not fit, in one line
        if targets is not None and metric:
            evaluate = lambda m: metrics.score(metric, m.run(**calibration).data[0], targets)  # noqa: E731
    for v in names:
        tmp = folder / f".model.{v}.onnx.tmp"
        try:
            facts = quantize_file(folder / MODEL, tmp, v, calibration=calibration)
            final = folder / f"model.{v}.onnx"
            tmp.replace(final)
        finally:
            tmp.unlink(missing_ok=True)
        facts["file"] = final.name
        manifest.variants[v] = facts
    manifest.variants.setdefault("fp32", {"file": MODEL, "size": (folder / MODEL).stat().st_size})
    manifest.save(folder)

    every = ["fp32", *[v for v in manifest.variants if v != "fp32"]]
    sessions = {}
    for v in every:
        facts = manifest.variants[v]
        report = check_dir(folder, "cpu", variant=v, tolerance=Tolerance(1.0, 1.0))  # record errors; the gate judges
        errors: dict[str, float] = {}
        for case in report.cases:
            for o in case.outputs:
                errors[o.name] = max(errors.get(o.name, 0.0), o.max_abs)
        facts["max_abs_error"] = errors
        sessions[v] = load(folder, "cpu", variant=v, threads=1)
        facts["metric"] = float(evaluate(sessions[v])) if evaluate else None
    feeds = bench.random_inputs(manifest, 1, 100 if any(isinstance(d, str) and d != "batch" for s in manifest.data_inputs
                                                       for d in s.shape[1:2]) else None)
    times = bench.measure({v: (lambda m=m: m.run(**feeds)) for v, m in sessions.items()}, runs=latency_runs,
                          warmup=max(5, latency_runs // 10))
    reference = manifest.variants["fp32"].get("metric")
    if manifest.task.get("keras") is not None and metric == manifest.task.get("metric"):
        reference = manifest.task["keras"]
    for v in every:
        facts = manifest.variants[v]
        facts["latency_ms_p50"] = round(float(np.percentile(times[v], 50)), 4)
        facts["size"] = (folder / facts["file"]).stat().st_size
        if metric in GATE and facts["metric"] is not None and reference is not None:
            facts["gate"] = {"metric": metric, "reference": reference, "passed": within_gate(metric, reference, facts["metric"]),
                             "rule": f"{GATE[metric][0]} is better; at most {GATE[metric][1]:g} "
                                     + ("points lower" if GATE[metric][0] == "higher" else "relatively higher")}
        else:
            facts["gate"] = {"passed": v == "fp32", "rule": "no task metric to check against: only fp32 is recommended"}
    passing = [v for v in every if manifest.variants[v]["gate"]["passed"]]
    manifest.recommended = {
        "CPUExecutionProvider": min(passing, key=lambda v: manifest.variants[v]["latency_ms_p50"]) if passing else "fp32",
        **{p: "fp16" if "fp16" in passing else "fp32" for p in FP16_PROVIDERS},
    }
    manifest.save(folder)
    return manifest.variants
