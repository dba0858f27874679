"""The int8 variant, in one of several settings (`SETTINGS`); `quantize_dir` measures them and keeps one.

What each op becomes (onnxruntime, CPU):

| op in the fp32 model | int8 compute (`dynamic` / `static` ops of a setting) | otherwise (weight-only) |
|---|---|---|
| `LSTM` (W, R initializers) | `DynamicQuantizeLSTM` (`quantize_dynamic`; CPU kernel only) | W, R stored int8, computed in float |
| `MatMul` with a constant B, `Gemm` | `DynamicQuantizeLinear` + `MatMulInteger`, or QDQ (static) | B stored int8 |
| `GRU`, `RNN` | (onnxruntime has no quantized kernel, and no plan for one) | W, R stored int8 |
| `Conv` | QDQ (static) only: `ConvInteger` is slower than the float Conv | weights stored int8 |
| `Gather` over a float table (embedding) | | int8 table; the selected rows are cast and scaled |

Weight-only storage is symmetric, one scale per output row (per direction), zero point 0, range
[-127, 127]; the weights are rebuilt with `Cast` + `Mul` on initializers, which onnxruntime's
constant folding evaluates once at load (it keeps `DequantizeLinear` waiting for QDQ fusion and
would run it on every call: +20-40% latency for a 256-unit GRU). The file is ~4x smaller for
those tensors, the arithmetic that of the float model. Biases stay float32; nothing inside a
`Loop`/`If`/`Scan` body is quantized.

Portability. onnxruntime's int8 kernels multiply uint8 activations by int8 weights ("u8s8"). On
x86 CPUs without VNNI (AVX2, AVX-512 without VNNI) they use `VPMADDUBSW`, which adds two u8 x s8
products into a saturating int16: with 8-bit weights 2 x 255 x 127 = 64,770 overflows 32,767,
and a 256-unit LSTM came out off by 0.08 on outputs of magnitude 0.14 on an AVX2 EPYC, while
the same file was right on a VNNI CPU. With `reduce_range` the weights are 7-bit, in [-64, 64]:
2 x 255 x 64 = 32,640 cannot saturate, so the file computes the same on every CPU. Settings
with 8-bit integer weights are measured and reported, never chosen; `u8s8_weight_range` reads
the range back from a written file, so the property is checked on the file itself.
"""  # noqa: E501

from __future__ import annotations

import dataclasses
import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from rnnedge.errors import RnnEdgeError
from rnnedge.quantize.common import cpu_session, facts, load_fp32, op_counts, quiet_quantizer, room_for, slim, temp_disk

_STATIC_OPS = ("MatMul", "Gemm", "Conv")  # onnxruntime's quantize_static (QDQ), with calibration
_WEIGHT_ONLY_OPS = ("LSTM", "GRU", "RNN", "MatMul", "Gemm", "Conv")  # whatever the integer kernels left
_QMAX = 127.0
# |w| <= 64: two u8 x s8 products sum to at most 2 * 255 * 64 = 32,640 <= 32,767 (int16).
SAFE_U8S8_WEIGHT = 64
# int8 weights that onnxruntime's u8s8 kernels read, by op: input positions.
_INTEGER_WEIGHTS = {"MatMulInteger": (1,), "DynamicQuantizeMatMul": (1,), "DynamicQuantizeLSTM": (1, 2),
                    "ConvInteger": (1,), "QLinearMatMul": (3,), "QLinearConv": (3,), "DequantizeLinear": (0,)}


@dataclass(frozen=True)
class Int8Setting:
    """One way to write the int8 variant."""

    name: str
    dynamic: tuple[str, ...]  # op types onnxruntime's quantize_dynamic computes in int8 (LSTM, MatMul)
    per_channel: bool = True  # one weight scale per output channel, else one per tensor
    reduce_range: bool = True  # 7-bit integer weights: u8s8 kernels cannot saturate
    static: bool = False  # MatMul/Gemm/Conv quantized statically (QDQ) with ranges from calibration data

    @property
    def portable(self) -> bool:
        """Computes the same on every CPU: no integer kernel, or 7-bit weights."""
        return self.reduce_range or not (self.dynamic or self.static)

    @property
    def method(self) -> str:
        parts = []
        if self.static:
            parts.append("static QDQ MatMul/Gemm/Conv")
        if self.dynamic:
            parts.append(f"dynamic {'/'.join(self.dynamic)}")
        if parts:
            bits = "7-bit" if self.reduce_range else "8-bit"
            parts.append(f"{bits} weights per {'channel' if self.per_channel else 'tensor'}")
        parts.append("weight-only int8 for the rest" if parts else "weight-only int8 (computed in float)")
        return f"int8 ({self.name}): " + ", ".join(parts)

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "dynamic": list(self.dynamic), "portable": self.portable}


# The settings `quantize_dir` tries (the static one only with calibration data), in order of preference.
SETTINGS = {s.name: s for s in (
    Int8Setting("static-7bit", ("LSTM",), static=True),
    Int8Setting("dynamic-7bit", ("LSTM", "MatMul")),
    Int8Setting("dynamic-7bit-tensor", ("LSTM", "MatMul"), per_channel=False),
    Int8Setting("lstm-7bit", ("LSTM",)),
    Int8Setting("weight-only", ()),
    Int8Setting("dynamic-8bit", ("LSTM", "MatMul"), reduce_range=False),  # saturates without VNNI: reported only
)}
DEFAULT_SETTING = "dynamic-7bit"


def setting_named(name: str | Int8Setting) -> Int8Setting:
    if isinstance(name, Int8Setting):
        return name
    if name not in SETTINGS:
        raise RnnEdgeError(f"unknown int8 setting {name!r}: expected one of {', '.join(SETTINGS)}")
    return SETTINGS[name]


def candidate_settings(model: onnx.ModelProto, *, calibrated: bool) -> list[Int8Setting]:
    """The settings that give different files for `model` (the first of each kind kept): a GRU
    model gets nothing from `lstm-7bit` that `weight-only` does not give, and so on."""
    present = {n.op_type for n in model.graph.node if n.domain in ("", "ai.onnx")}
    if present & {"Gemm"}:
        present.add("MatMul")  # quantize_dynamic's MatMul covers Gemm
    seen, kept = set(), []
    for s in SETTINGS.values():
        if s.static and not calibrated:
            continue
        dynamic = frozenset(s.dynamic) & present
        static = s.static and bool(present & set(_STATIC_OPS))
        integer = bool(dynamic or static)
        if not integer and (s.dynamic or s.static):
            continue  # nothing for its integer kernels in this model: it is the weight-only setting
        key = (dynamic, static, s.per_channel if integer else None, s.reduce_range if integer else None)
        if key not in seen:
            seen.add(key)
            kept.append(s)
    return kept


def quantize_int8(src: Path, dst: Path, *, calibration: dict[str, np.ndarray] | list[dict] | None = None,
                  setting: str | Int8Setting | None = None) -> dict:
    """Write an int8 variant of `src` to `dst` in `setting` (default: `static-7bit` with
    `calibration`, else `dynamic-7bit`); return its facts for the manifest.

    `calibration` (one array per graph input: a batch of typical inputs, batch first; or a list of
    such feeds, as a streaming export's chunks with their states) gives the activation ranges of
    the static setting; activations outside them are clipped.
    """
    setting = setting_named(setting or ("static-7bit" if calibration is not None else DEFAULT_SETTING))
    if setting.static and calibration is None:
        raise RnnEdgeError(f"int8 setting {setting.name!r} needs calibration data: pass --data with typical inputs")
    src, dst = Path(src), Path(dst)
    model = load_fp32(src)
    src_size = src.stat().st_size
    before = op_counts(model)
    with tempfile.TemporaryDirectory(prefix="rnnedge-int8-") as tmp, temp_disk(tmp):
        # onnxruntime's quantizer writes `<input>-inferred.onnx` beside its input, unchecked
        # (`room_for`): it gets a copy here, so that nothing of it lands in the export folder
        stage = Path(tmp) / "fp32.onnx"
        shutil.copyfile(src, stage)
        if setting.static:
            room_for(Path(tmp), 2 * src_size)
            static = Path(tmp) / "static.onnx"
            _quantize_static(stage, static, _calibration_feeds(model, calibration), setting)
            stage = static
        if setting.dynamic:
            out = Path(tmp) / "int8.onnx"
            room_for(Path(tmp), 2 * stage.stat().st_size)
            with quiet_quantizer():
                from onnxruntime.quantization import QuantType, quantize_dynamic

                quantize_dynamic(stage, out, weight_type=QuantType.QInt8, per_channel=setting.per_channel,
                                 reduce_range=setting.reduce_range, op_types_to_quantize=list(setting.dynamic))
            stage = out
        q = onnx.load(stage)
    weight_only = _weight_only_int8(q, _WEIGHT_ONLY_OPS)  # skips weights the integer kernels already took
    q.ir_version = model.ir_version
    onnx.save(slim(q), dst)
    cpu_session(dst)  # loads on CPU, or raises

    after = op_counts(q)
    static = _static_qdq_counts(q)
    quantized = Counter(
        {
            "DynamicQuantizeLSTM": after["DynamicQuantizeLSTM"],
            "MatMulInteger": after["MatMulInteger"],
            **{f"static {op}": n for op, n in static.items()},
            **{f"weight-only {op}": n for op, n in weight_only.items()},
        }
    )
    weights = u8s8_weight_range(q)
    result = facts(dst, src_size, setting.method, _notes(setting, quantized, weight_only, static, before, weights))
    result["quantized"] = {k: v for k, v in quantized.items() if v}
    result["setting"] = setting.to_dict()
    result["u8s8_weight_range"] = list(weights) if weights else None
    return result


def _notes(setting, quantized, weight_only, static, before, weights) -> list[str]:
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
    for op in ("LSTM", "GRU", "RNN"):
        if weight_only[op]:
            why = "" if op == "LSTM" else f": onnxruntime has no quantized {op} kernel"
            notes.append(f"{weight_only[op]} {op}: W and R stored int8 (per row), computed in float{why}")
    for op in ("MatMul", "Gemm", "Conv"):
        if weight_only[op]:
            notes.append(f"{weight_only[op]} {op}: weights stored int8 (per output channel), computed in float")
    if weight_only["Gather"]:
        notes.append(f"{weight_only['Gather']} embedding lookup(s): table stored int8 (per row), computed in float")
    taken_care = {"LSTM": quantized["DynamicQuantizeLSTM"] + weight_only["LSTM"], "GRU": weight_only["GRU"],
                  "RNN": weight_only["RNN"]}
    for op, done in taken_care.items():
        if before[op] > done:
            notes.append(f"{before[op] - done} {op} left in float: its weights are not float initializers")
    if before["Loop"]:
        notes.append("Loop bodies are not quantized: export with fused recurrent nodes for a smaller int8 model")
    if before["Scan"]:
        notes.append(f"{before['Scan']} Scan (a recurrent layer no fused node computes: an activation, ConvLSTM): "
                     "its recurrent weights stay float32; the input projection (MatMul or Conv) before it is quantized")
    if weights and setting.portable:
        notes.append(f"integer-kernel weights in [{weights[0]}, {weights[1]}] (7-bit): onnxruntime's u8s8 kernels "
                     "cannot saturate, on CPUs with or without VNNI")
    elif weights:
        notes.append(f"integer-kernel weights in [{weights[0]}, {weights[1]}] (8-bit): onnxruntime's u8s8 kernels "
                     "can saturate on x86 CPUs without VNNI (AVX2), where this file computes differently")
    return notes


def u8s8_weight_range(model: onnx.ModelProto) -> tuple[int, int] | None:
    """The smallest and largest int8 weight that onnxruntime's integer kernels multiply with
    uint8 activations, read from the graph; None where no integer kernel is used. Portable
    files have both within +-SAFE_U8S8_WEIGHT."""
    inits = {t.name: t for t in model.graph.initializer}
    lo = hi = None
    for node in model.graph.node:
        for i in _INTEGER_WEIGHTS.get(node.op_type, ()):
            t = inits.get(node.input[i]) if i < len(node.input) else None
            if t is None or t.data_type != TensorProto.INT8:
                continue
            w = numpy_helper.to_array(t)
            if w.size:
                lo = int(w.min()) if lo is None else min(lo, int(w.min()))
                hi = int(w.max()) if hi is None else max(hi, int(w.max()))
    return None if lo is None else (lo, hi)


# ---------------------------------------------------------------------------------------------
# weight-only int8


# Weight-only int8, per op: which input is a weight and which axes share a scale. A handler takes
# the node, `dequantized(name, reduce_axes) -> float value name or None` and `dims(name)`, rewires
# the node's weight inputs to their dequantized values, and says whether it did.
def _recurrent_weights(node, dequantized, dims) -> bool:
    """LSTM/GRU/RNN W [D, G*U, F] and R [D, G*U, U]: one scale per (direction, row)."""
    w, r = (dequantized(node.input[i], (2,)) for i in (1, 2))
    if w and r:
        node.input[1], node.input[2] = w, r
    return bool(w and r)


def _gemm_weight(node, dequantized, dims) -> bool:
    """Gemm B [K, N] (or [N, K] with transB): one scale per output column."""
    trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
    b = dequantized(node.input[1], (1,) if trans_b else (0,))
    if b:
        node.input[1] = b
    return bool(b)


def _matmul_weight(node, dequantized, dims) -> bool:
    """MatMul B [K, N] (a 2-D initializer): one scale per output column."""
    b = dequantized(node.input[1], (0,)) if len(dims(node.input[1])) == 2 else None
    if b:
        node.input[1] = b
    return bool(b)


def _conv_weight(node, dequantized, dims) -> bool:
    """Conv W [M, C/group, k...]: one scale per output channel."""
    shape = dims(node.input[1])
    w = dequantized(node.input[1], tuple(range(1, len(shape)))) if len(shape) >= 3 else None
    if w:
        node.input[1] = w
    return bool(w)


WEIGHT_ONLY = {"LSTM": _recurrent_weights, "GRU": _recurrent_weights, "RNN": _recurrent_weights,
               "Gemm": _gemm_weight, "MatMul": _matmul_weight, "Conv": _conv_weight}


def _weight_only_int8(model: onnx.ModelProto, ops: tuple[str, ...]) -> Counter:
    """Store the weights of `ops` (LSTM, GRU, RNN, MatMul, Gemm, Conv) and of Gather tables as
    int8; return counts by op.

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

    dims = lambda name: _dims(inits, name)  # noqa: E731
    for node in graph.node:
        standard = node.domain in ("", "ai.onnx")
        if standard and node.op_type == "Gather":
            axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
            t = inits.get(node.input[0])
            if axis == 0 and t is not None and t.data_type == TensorProto.FLOAT and len(t.dims) == 2:
                nodes.extend(_int8_embedding(node, tables, inits, new_inits, fresh))
                counts["Gather"] += 1
                continue
        handler = WEIGHT_ONLY.get(node.op_type) if standard and node.op_type in ops else None
        if handler is not None and handler(node, dequantized, dims):
            counts[node.op_type] += 1
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


def _calibration_feeds(model: onnx.ModelProto, calibration: dict | list[dict]) -> list[dict[str, np.ndarray]]:
    init_names = {t.name for t in model.graph.initializer}
    inputs = {i.name: i.type.tensor_type.elem_type for i in model.graph.input if i.name not in init_names}
    feeds = [calibration] if isinstance(calibration, dict) else list(calibration)
    for feed in feeds:
        if set(feed) != set(inputs):
            raise RnnEdgeError(
                f"calibration data must hold one array per model input: expected {sorted(inputs)}, "
                f"got {sorted(feed)}"
            )
    return [{k: np.asarray(feed[k]).astype(helper.tensor_dtype_to_np_dtype(t), copy=False) for k, t in inputs.items()}
            for feed in feeds]


def _quantize_static(src: Path, dst: Path, feeds: list[dict[str, np.ndarray]], setting: Int8Setting) -> None:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Batch(CalibrationDataReader):
        def __init__(self):
            self._left = list(reversed(feeds))

        def get_next(self):
            return self._left.pop() if self._left else None

    with quiet_quantizer():
        quantize_static(
            src,
            dst,
            Batch(),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=list(_STATIC_OPS),
            per_channel=setting.per_channel,
            reduce_range=setting.reduce_range,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
        )


def _static_qdq_counts(model: onnx.ModelProto) -> Counter:
    """MatMul/Gemm/Conv nodes fed by DequantizeLinear (quantize_static's QDQ form)."""
    dq = {o for n in model.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    return Counter(n.op_type for n in model.graph.node if n.op_type in _STATIC_OPS and any(i in dq for i in n.input))
