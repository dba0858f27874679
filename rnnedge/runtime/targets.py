"""Which execution providers can run an export's recurrent nodes: answered from a table of each
provider's documented restrictions (each row names its source), read against the actual ONNX nodes.

`RESTRICTIONS` is the table; `assess(folder)` reads model.onnx and the manifest (which Keras layer
made which node) and gives one `Verdict` per provider in `TARGETS`. Nothing is run: this is what the
providers' own code and documentation say, for a machine that may not have them installed.
numpy + onnx only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import onnx

from rnnedge.errors import RnnEdgeError
from rnnedge.manifest import MODEL, Manifest

TARGETS = ("cpu", "cuda", "tensorrt", "openvino", "qnn", "directml", "coreml", "nnapi", "webnn", "xnnpack")
RECURRENT = ("LSTM", "GRU", "RNN")
# rnnedge's exact Scan for a recurrent layer whose activation has no fused form (exporter/convert/scan.py)
READ = (*RECURRENT, "Scan")
# ONNX's default activations per direction (onnx/defs/rnn/defs.cc)
DEFAULT_ACTIVATIONS = {"LSTM": ("Sigmoid", "Tanh", "Tanh"), "GRU": ("Sigmoid", "Tanh"), "RNN": ("Tanh",)}


@dataclass(frozen=True)
class Node:
    """What the restrictions read of one fused recurrent node."""

    name: str
    op: str  # LSTM, GRU, RNN, or Scan (a recurrent layer rnnedge exported as an exact Scan)
    layer: str  # the Keras layer that made it ("" where the manifest does not say)
    activations: tuple[str, ...] | None  # the attribute as written; None where absent
    alpha_beta: bool  # activation_alpha or activation_beta written
    clip: bool
    input_forget: int
    peepholes: bool
    linear_before_reset: int
    layout: int
    direction: str
    sequence_lens: str  # "none", "constant" (an initializer) or "computed" (from a mask)
    static: bool  # every graph input has fixed sizes
    dtype: str  # of the weights: float32, float16, ...

    @property
    def default_activations(self) -> bool:
        """The activations are ONNX's defaults by value (absent, or spelled out), with no alpha/beta."""
        if self.alpha_beta:
            return False
        if self.activations is None:
            return True
        default = DEFAULT_ACTIVATIONS[self.op]
        return tuple(a.lower() for a in self.activations) == tuple(a.lower() for a in default) * (
            len(self.activations) // len(default))


@dataclass(frozen=True)
class Restriction:
    """One documented restriction: on which providers and ops, the test on a node, why, how to fix it."""

    providers: tuple[str, ...]
    ops: tuple[str, ...]
    breaks: Callable[[Node], bool]
    reason: str
    fix: str
    source: str
    falls_back: bool = True  # the node leaves the provider (runs on CPU); False: it runs, with this caveat


_KERAS_ACTIVATIONS = ("use Keras' default activations (activation='tanh', recurrent_activation='sigmoid'; "
                      "hard_sigmoid is the default of Keras 2 LSTMs/GRUs) and retrain")
_NO_MASK = ("remove the mask (Masking layer, mask_zero=True) and feed fixed-length sequences (pad inside the "
            "length the model is trained on)")
_CUDA = "onnxruntime core/providers/cuda/cuda_execution_provider.cc (RNNNeedFallbackToCPU)"
_QNN = "onnxruntime core/providers/qnn/builder/opbuilder/lstm_op_builder.cc"
_NO_RNN_OPS = "the provider's op builders have no LSTM, GRU, RNN or Scan (onnxruntime core/providers/{p}/builders)"

RESTRICTIONS: tuple[Restriction, ...] = (
    # CUDA
    Restriction(("cuda",), RECURRENT, lambda n: not n.default_activations,
                "non-default activations (or activation_alpha/beta)", _KERAS_ACTIVATIONS, _CUDA),
    Restriction(("cuda",), RECURRENT, lambda n: n.clip, "clip is set",
                "export without clip (rnnedge never writes it: re-export the Keras model with rnnedge)", _CUDA),
    Restriction(("cuda",), ("LSTM",), lambda n: n.input_forget != 0 or n.peepholes, "input_forget or peepholes",
                "re-export the Keras model with rnnedge (Keras LSTMs have neither)", _CUDA),
    Restriction(("cuda",), ("GRU",), lambda n: n.linear_before_reset != 1,
                "linear_before_reset=0 (Keras reset_after=False)",
                "use reset_after=True in the Keras GRU (Keras 3's default) and retrain", _CUDA),
    # TensorRT
    Restriction(("tensorrt",), RECURRENT, lambda n: True, "built as a per-step loop (no fused cuDNN kernel)",
                "none needed; compare its speed with CUDA's (`rnnedge bench --provider cuda,tensorrt`)",
                "onnx-tensorrt onnxOpImporters.cpp (LSTM, GRU, RNN importers)", falls_back=False),
    Restriction(("tensorrt",), ("LSTM",), lambda n: n.input_forget != 0, "input_forget=1",
                "re-export the Keras model with rnnedge (Keras LSTMs do not couple the gates)",
                "onnx-tensorrt onnxOpImporters.cpp (LSTM importer)"),
    Restriction(("tensorrt", "directml", "webnn", "qnn"), RECURRENT, lambda n: n.layout != 0, "layout=1",
                "re-export with rnnedge (it writes layout 0)",
                "onnx-tensorrt onnxOpImporters.cpp; onnxruntime dml/webnn/qnn op builders (layout 0 only)"),
    Restriction(("tensorrt",), RECURRENT, lambda n: n.dtype not in ("float32", "float16", "bfloat16"),
                "weights are not float32/float16/bfloat16", "export float32 (the default)",
                "onnx-tensorrt onnxOpImporters.cpp"),
    # OpenVINO
    Restriction(("openvino",), RECURRENT, lambda n: True, "runs on OpenVINO's CPU and GPU devices, not its NPU; "
                "on a CPU with bf16 it computes in bf16 unless pinned to f32",
                "pin f32 (INFERENCE_PRECISION_HINT=f32) where parity matters",
                "OpenVINO EP docs (supported ops per device); rnnedge FACTS.md (bf16 measured)", falls_back=False),
    # QNN (Qualcomm HTP NPU)
    Restriction(("qnn",), ("RNN",), lambda n: True, "QNN EP has no RNN op (\"Operators of type RNN are not "
                "supported by QNN EP\")", "export with --target qnn (rnnedge unrolls the SimpleRNN into "
                "MatMul/Add/Tanh over the fixed time axis), or use a GRU/LSTM",
                "onnxruntime core/providers/qnn/builder/op_builder_factory.cc (no RNN builder)"),
    Restriction(("qnn",), ("LSTM", "GRU"), lambda n: n.activations is not None or n.alpha_beta,
                "an activations attribute is written (QNN refuses it even with the default values: \"QNN EP "
                "doesn't support non-default activations\")",
                "re-export with this rnnedge (fused nodes write only non-default attributes); if they are not "
                "the defaults: " + _KERAS_ACTIVATIONS, _QNN),
    Restriction(("qnn",), ("LSTM", "GRU"), lambda n: n.clip, "clip is set",
                "re-export the Keras model with rnnedge (it never writes clip)", _QNN),
    Restriction(("qnn", "webnn"), RECURRENT, lambda n: n.sequence_lens == "computed",
                "sequence_lens computed from a mask (only constant sequence lengths are supported)", _NO_MASK,
                f"{_QNN}; onnxruntime core/providers/webnn/builders/impl/lstm_op_builder.cc"),
    Restriction(("qnn",), ("Scan",), lambda n: True, "QNN has no Scan op (\"Unsupported nodes in QNN EP: ... type: "
                "Scan\")", "use activations a fused node computes (tanh, sigmoid, relu, hard_sigmoid, ...): rnnedge "
                "exports others as an exact Scan",
                "measured: onnxruntime-qnn 2.7.0, HTP simulator (tests/test_export_target.py)"),
    Restriction(("qnn",), READ, lambda n: not n.static, "dynamic shapes (the HTP compiles fixed shapes)",
                "export with --target qnn, or --static batch=1,time=T", "onnxruntime QNN EP docs (static shapes)"),
    # WebNN
    Restriction(("webnn",), ("RNN",), lambda n: True, "WebNN has gru and lstm but no plain RNN",
                "use a GRU/LSTM", "W3C WebNN spec (MLGraphBuilder: gru, lstm); onnxruntime webnn op builders"),
    Restriction(("webnn",), ("LSTM", "GRU"), lambda n: n.clip, "clip is set",
                "re-export the Keras model with rnnedge (it never writes clip)",
                "onnxruntime core/providers/webnn/builders/impl/lstm_op_builder.cc, gru_op_builder.cc"),
    Restriction(("webnn",), ("LSTM", "GRU"), lambda n: any(a.lower() not in ("relu", "tanh", "sigmoid")
                                                           for a in n.activations or ()),
                "an activation other than Relu/Tanh/Sigmoid", _KERAS_ACTIVATIONS,
                "onnxruntime core/providers/webnn/builders/impl/lstm_op_builder.cc, gru_op_builder.cc"),
    # No recurrent op at all
    *(Restriction((p,), READ, lambda n: True, "no LSTM/GRU/RNN (nor Scan) op: the node stays on CPU",
                  "none in the export; the rest of the graph can still run there", _NO_RNN_OPS.format(p=p))
      for p in ("coreml", "nnapi", "xnnpack")),
)


@dataclass(frozen=True)
class Finding:
    """One node against one restriction."""

    node: Node
    restriction: Restriction


def finding_lines(provider: str, findings) -> list[str]:
    """One line per restriction a provider's nodes break: the nodes and their layers, the reason, the
    fix, the source."""
    by_rule: dict[int, list[Finding]] = {}
    for f in findings:
        by_rule.setdefault(id(f.restriction), []).append(f)
    lines = []
    for group in by_rule.values():
        r = group[0].restriction
        nodes = ", ".join(f"{f.node.name} ({f.node.op}" + (f", layer '{f.node.layer}')" if f.node.layer else ")")
                          for f in group)
        effect = "stay on CPU" if r.falls_back else "run"
        lines.append(f"{provider}: {nodes}: {effect}: {r.reason}; fix: {r.fix} [{r.source}]")
    return lines


@dataclass(frozen=True)
class Verdict:
    """One provider: which recurrent nodes it runs, which fall back to CPU and why."""

    provider: str
    nodes: tuple[Node, ...]
    findings: tuple[Finding, ...] = field(default=())

    @property
    def off(self) -> list[Node]:
        """The nodes that fall back to CPU, in graph order."""
        names = {f.node.name for f in self.findings if f.restriction.falls_back}
        return [n for n in self.nodes if n.name in names]

    @property
    def ready(self) -> bool:
        return not self.off

    def summary(self) -> str:
        total, on = len(self.nodes), len(self.nodes) - len(self.off)
        if not total:
            return "no fused recurrent node"
        if self.ready:
            notes = [f for f in self.findings if not f.restriction.falls_back]
            return f"all {total} recurrent node(s)" + (f" ({notes[0].restriction.reason})" if notes else "")
        layers = ", ".join(dict.fromkeys(n.layer or n.name for n in self.off))
        return f"{on} of {total} recurrent node(s); CPU fallback for {layers}"


def nodes_of(model: onnx.ModelProto, layers: dict[str, str] | None = None) -> list[Node]:
    """The fused recurrent nodes of `model`, read; `layers` maps node name -> Keras layer."""
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    static = all(d.HasField("dim_value") for i in graph.input if i.name not in inits
                 for d in i.type.tensor_type.shape.dim)
    out = []
    for node in graph.node:
        if node.op_type not in READ or node.domain not in ("", "ai.onnx"):
            continue
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        acts = attrs.get("activations")
        fused = node.op_type in RECURRENT
        lens = node.input[4] if fused and len(node.input) > 4 else ""
        w = inits.get(node.input[1]) if fused else None
        dtype = onnx.helper.tensor_dtype_to_np_dtype(w.data_type).name if w is not None else "float32"
        out.append(Node(
            name=node.name, op=node.op_type, layer=(layers or {}).get(node.name, ""),
            activations=tuple(_text(a) for a in acts) if acts is not None else None,
            alpha_beta="activation_alpha" in attrs or "activation_beta" in attrs, clip="clip" in attrs,
            input_forget=int(attrs.get("input_forget", 0)),
            peepholes=fused and len(node.input) > 7 and bool(node.input[7]),
            linear_before_reset=int(attrs.get("linear_before_reset", 0)), layout=int(attrs.get("layout", 0)),
            direction=_text(attrs.get("direction", b"forward")),
            sequence_lens="none" if not lens else "constant" if lens in inits else "computed",
            static=static, dtype=dtype))
    return out


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def judge(nodes: list[Node], providers=TARGETS) -> list[Verdict]:
    """Each provider's verdict on `nodes` from `RESTRICTIONS`."""
    verdicts = []
    for p in providers:
        found = tuple(Finding(n, r) for n in nodes for r in RESTRICTIONS
                      if p in r.providers and n.op in r.ops and r.breaks(n))
        verdicts.append(Verdict(p, tuple(nodes), found))
    return verdicts


def assess(folder: str | Path, providers=TARGETS, variant_file: str = MODEL, verify: bool = True) -> list[Verdict]:
    """Each provider's verdict on an export folder's recurrent nodes (its manifest maps them to layers).
    `verify`: refuse a model file whose sha256 differs from the manifest's."""
    folder = Path(folder)
    manifest = Manifest.load(folder)
    path = folder / variant_file
    if not path.is_file():
        raise RnnEdgeError(f"{path} is missing: the export folder is incomplete; re-export the model")
    if verify:
        manifest.verify(folder, [variant_file])
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as err:  # noqa: BLE001 - protobuf's decode errors have no common public type
        reason = (str(err).splitlines() or [type(err).__name__])[0][:160]
        raise RnnEdgeError(f"{path} is not a readable ONNX model ({reason}); re-export the model") from None
    layers = {node: layer for nodes in (manifest.fused_nodes, manifest.scan_nodes)
              for layer, names in nodes.items() for node in names}
    return judge(nodes_of(model, layers), providers)


def table_lines(verdicts: list[Verdict]) -> list[str]:
    """What `rnnedge targets` prints: one row per provider, then each finding."""
    width = max(len(v.provider) for v in verdicts)
    rows = [f"{v.provider:<{width}}  {'ready' if v.ready else 'partly':<6}  {v.summary()}" for v in verdicts]
    details = ["  " + line for v in verdicts
               for line in finding_lines(v.provider, [f for f in v.findings if f.restriction.falls_back])]
    return rows + (["", "why, and what to change:", *details] if details else [])


def target_line(record: dict) -> str:
    """The manifest's `target` record (`export --target P`) in one line: checked on the device or not,
    placement, the worst output's share of its range against the gate."""
    target = record.get("provider", "")
    if not record.get("checked"):
        return f"{target}: not checked on the device ({record.get('why', '')})"
    if "gate" not in record:
        return f"{target}: FAILED placement: {record.get('why', '')}"
    worst = max(o["share_of_range"] for o in record["gate"]["outputs"].values())
    verdict = "passed" if record["passed"] else "FAILED"
    return (f"{target} ({record['backend']}, {record['precision']}): {record['placement']}, worst output off by "
            f"{worst:.2%} of its range (gate: {record['gate']['rule'].split(';')[0]}): {verdict}")
