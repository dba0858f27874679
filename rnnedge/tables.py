"""One table per fact that several stages read: dtypes, execution providers and their
tolerances, task metrics and their gates, baselines, variants. The CLI takes its defaults here.

numpy only (no onnxruntime, no TensorFlow), so every stage can import it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def _version() -> str:
    """rnnedge's version as installed (pyproject.toml's, read from the package metadata)."""
    from importlib import metadata

    try:
        return metadata.version("rnnedge")
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "0+unknown"


VERSION = _version()

# dtype name (as the manifest and Keras write it) -> (numpy type, ONNX TensorProto code, onnxruntime type).
# The codes are onnx.TensorProto's (FLOAT = 1, ...; tests/test_layout.py checks them against onnx), written
# as numbers so that this module, which the CLI imports to start, needs no onnx.
DTYPES = {
    "float32": (np.float32, 1, "tensor(float)"),
    "float16": (np.float16, 10, "tensor(float16)"),
    "float64": (np.float64, 11, "tensor(double)"),
    "int32": (np.int32, 6, "tensor(int32)"),
    "int64": (np.int64, 7, "tensor(int64)"),
    "bool": (np.bool_, 9, "tensor(bool)"),
    "uint8": (np.uint8, 2, "tensor(uint8)"),
    "int8": (np.int8, 3, "tensor(int8)"),
}
NUMPY_DTYPES = {name: np_type for name, (np_type, _, _) in DTYPES.items()}
ONNX_TYPES = {name: code for name, (_, code, _) in DTYPES.items()}
ORT_DTYPES = {ort_type: np_type for np_type, _, ort_type in DTYPES.values()}
INT_RANGES = {np.dtype(np.int32): (-(2**31), 2**31 - 1), np.dtype(np.int64): (-(2**63), 2**63 - 1)}

# ONNX opsets an export can target (`--opset`; rnnedge.exporter.convert.OPSET is the default) ->
# the IR version each needs. onnxruntime runs them all; LSTM, GRU and RNN are the same op from 14 on.
# Reduce* take their axes as an input from 18 (the graph builder moves them); LayerNormalization
# exists from 17 (written out in plain ops below that); tf2onnx writes spliced layers at up to 18.
OPSETS = {14: 7, 15: 8, 16: 8, 17: 8, 18: 8, 19: 9, 20: 9, 21: 10}


def opset_checked(opset: int) -> int:
    """`opset`, refused in one line outside OPSETS."""
    from rnnedge.errors import RnnEdgeError

    if opset not in OPSETS:
        raise RnnEdgeError(f"--opset {opset} is not supported: expected {min(OPSETS)} to {max(OPSETS)} "
                           "(onnxruntime and the fused LSTM/GRU/RNN nodes), e.g. --opset 17")
    return opset


CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
TENSORRT = "TensorrtExecutionProvider"


@dataclass(frozen=True)
class Provider:
    """What rnnedge knows of one onnxruntime execution provider.

    plugin: the Python module of a plugin provider's wheel (registered with onnxruntime at run time
        through `register_execution_provider_library`), "" for one built into the onnxruntime wheel.
    options: the options rnnedge gives it unless the caller says otherwise; a value "@fn" is
        `fn()` of the plugin module (a library path inside the wheel).
    precisions: the precisions it can be asked for, the default first, each with the options that
        pin it (a precision is never left to the provider: OpenVINO computes in bf16 on CPUs that
        have it unless told f32).
    range_gate: judged like a quantized variant (max |diff| within RANGE_SHARE of each output's
        range in the golden outputs) instead of atol/rtol: it computes in fp16 or lower.
    """

    name: str  # onnxruntime's full name
    label: str  # as tables and messages print it
    atol: float  # the parity tolerance `rnnedge check` uses on it by default
    rtol: float
    gpu: bool = False  # computes on a GPU (fp16 natively, IOBinding on device)
    install: str = "install an onnxruntime build that includes it"
    plugin: str = ""
    wheel: str = ""  # the plugin's distribution on PyPI (its version goes in the manifest)
    device: str = ""  # a plugin provider's device kind to run on ("CPU", "GPU", "NPU"), "" for any it offers
    options: tuple[tuple[str, str], ...] = ()
    precisions: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = (("fp32", ()),)
    range_gate: bool = False
    timing: str = ""  # what its timings mean, where they are not the device's own
    # (words in its log's reason for refusing a node, or in its error when it cannot start, what to change):
    # shown beside the reason
    fixes: tuple[tuple[str, str], ...] = ()


OPENVINO = "OpenVINOExecutionProvider"
QNN = "QNNExecutionProvider"


def _openvino_precision(hint: str) -> tuple[tuple[str, str], ...]:
    return (("load_config", '{"CPU": {"INFERENCE_PRECISION_HINT": "' + hint + '"}}'),)


PROVIDERS = {p.name: p for p in (
    Provider(CPU, "CPU", 1e-5, 1e-4),
    Provider(CUDA, "CUDA", 1e-4, 1e-3, gpu=True,
             install="pip install rnnedge[gpu] (onnxruntime-gpu in place of onnxruntime) on a machine with CUDA 12 "
                     "and cuDNN 9"),
    Provider(TENSORRT, "TensorRT", 1e-3, 1e-2, gpu=True,
             install="pip install rnnedge[gpu] (onnxruntime-gpu in place of onnxruntime) plus TensorRT 10 on the "
                     "library path"),
    # OpenVINO's plugin wheel (onnxruntime-ep-openvino) beside onnxruntime; f32 pinned: on CPUs with
    # AMX/AVX512-BF16 it computes in bf16 otherwise (exported/events-lstm 1.5e-2 off; shared/FACTS.md)
    Provider(OPENVINO, "OpenVINO", 1e-4, 1e-3, plugin="onnxruntime_ep_openvino", wheel="onnxruntime-ep-openvino",
             install="pip install 'rnnedge[openvino]' (onnxruntime-ep-openvino, a plugin beside onnxruntime)",
             device="CPU",  # the device its precision pin (load_config's "CPU") speaks of
             precisions=(("f32", _openvino_precision("f32")), ("bf16", _openvino_precision("bf16")),
                         ("f16", _openvino_precision("f16")))),
    Provider("DmlExecutionProvider", "DirectML", 1e-4, 1e-3,
             install="pip install onnxruntime-directml in place of onnxruntime (Windows)"),
    # Qualcomm's plugin wheel (onnxruntime-qnn); on x86-64 Linux its HTP backend is the Hexagon NPU simulator,
    # which needs fp16 spelled out together with a SoC model and HTP architecture, or the session fails
    Provider(QNN, "QNN", 1e-3, 1e-2, plugin="onnxruntime_qnn", wheel="onnxruntime-qnn",
             install="pip install 'rnnedge[qnn]' (onnxruntime-qnn, a plugin beside onnxruntime)",
             options=(("backend_path", "@get_qnn_htp_path"),),
             precisions=(("fp16", (("enable_htp_fp16_precision", "1"), ("soc_model", "60"), ("htp_arch", "73"))),),
             range_gate=True, timing="on x86-64 its HTP backend is Qualcomm's NPU simulator: placement and values are "
                                     "the NPU's, its times are not (time it on a Snapdragon device)",
             fixes=(("Cannot get shape", "QNN needs static shapes: re-export with --static batch=B,time=T"),
                    ("Dynamic shape is not supported", "QNN needs static shapes: re-export with --static "
                                                       "batch=B,time=T"),
                    ("non-default activations", "QNN refuses an activations attribute even at its defaults: "
                                                "re-export with this rnnedge (it writes only non-default ones)"),
                    ("dynamic sequence_length", "QNN needs constant sequence lengths: a masked layer (Embedding "
                                                "mask_zero, Masking, a mask input) stays on CPU"),
                    ("RNN", "QNN has no ONNX RNN op: a SimpleRNN stays on CPU"))),
    Provider("CoreMLExecutionProvider", "CoreML", 1e-3, 1e-2),
    Provider("XnnpackExecutionProvider", "XNNPACK", 1e-5, 1e-4),
)}
# Short names accepted for a provider (case-insensitive); full names are accepted as well.
PROVIDER_NAMES = {
    "cpu": CPU, "cuda": CUDA, "gpu": CUDA, "tensorrt": TENSORRT, "trt": TENSORRT,
    "openvino": OPENVINO, "coreml": "CoreMLExecutionProvider",
    "directml": "DmlExecutionProvider", "dml": "DmlExecutionProvider", "qnn": QNN,
    "xnnpack": "XnnpackExecutionProvider",
}
PLUGINS = {p.name: p.plugin for p in PROVIDERS.values() if p.plugin}  # provider -> its wheel's module
# A provider judged by `range_gate`: max |diff| within this share of each output's range in Keras' golden
# outputs (the quantized variants' gate, rnnedge.quantize.gate, reads it too).
RANGE_SHARE = 0.02
AUTO_ORDER = (TENSORRT, CUDA, CPU)  # provider="auto": the first of these that is installed
GPU_PROVIDERS = tuple(p.name for p in PROVIDERS.values() if p.gpu)
PROVIDER_TOLERANCE = {p.name: (p.atol, p.rtol) for p in PROVIDERS.values() if p.name in (CPU, CUDA, TENSORRT)}
ATOL, RTOL = PROVIDERS[CPU].atol, PROVIDERS[CPU].rtol


def tolerance_of(provider: str) -> tuple[float, float]:
    """(atol, rtol) for a provider's full name; CPU's for one rnnedge has no figure for."""
    p = PROVIDERS.get(provider)
    return (p.atol, p.rtol) if p else (ATOL, RTOL)


def label(provider: str) -> str:
    """'CPU', 'CUDA', 'TensorRT', ... for a provider's full name."""
    p = PROVIDERS.get(provider)
    return p.label if p else provider.removesuffix("ExecutionProvider")


@dataclass(frozen=True)
class Metric:
    """A task metric, which way is better, and how far a quantized variant may fall behind fp32."""

    name: str
    higher_is_better: bool
    gate: float  # points lower (higher is better) or relatively higher (lower is better)


METRICS = {m.name: m for m in (Metric("accuracy", True, 0.01), Metric("f1", True, 0.01), Metric("rmse", False, 0.05))}

# Baselines rnnedge times an export against, and where each runs (its rows' "provider").
BASELINES = {"keras": "TensorFlow", "tf2onnx": None, "litert": "LiteRT (CPU)", "litert-int8": "LiteRT (CPU)"}
VARIANTS = ("fp32", "int8", "fp16")

# The reference zoo's models, readable without Keras (`rnnedge zoo`, name checks before training):
# name -> (task, cell), and each task's metric. `rnnedge.zoo` builds and trains them.
ZOO: dict[str, tuple[str, str]] = {
    "digits-simplernn": ("digits", "SimpleRNN"),
    "digits-lstm": ("digits", "LSTM"),
    "digits-gru": ("digits", "GRU"),
    "airline-simplernn": ("airline", "SimpleRNN"),
    "airline-lstm": ("airline", "LSTM"),
    "airline-gru": ("airline", "GRU"),
    "events-simplernn": ("events", "SimpleRNN"),
    "events-gru": ("events", "GRU"),
    "events-lstm": ("events", "LSTM"),
    "sentiment-bilstm": ("sentiment", "Bidirectional(LSTM)"),
    "seq2seq-lstm": ("seq2seq", "LSTM"),
    "seq2seq-gru": ("seq2seq", "GRU"),
    "cells-lstm": ("cells", "StackedRNNCells(LSTMCell)"),
    "digits-conv-gru": ("digits-conv", "GRU"),
    "reviews-lstm": ("reviews", "LSTM"),
    "kws-gru": ("kws", "GRU"),
    "kws-crnn": ("kws", "CRNN(GRU)"),
    "kws-tcresnet": ("kws", "TC-ResNet"),
}
ZOO_TASK_METRICS: dict[str, str] = {
    "digits": "accuracy",
    "airline": "rmse",
    "events": "f1",
    "sentiment": "accuracy",
    "seq2seq": "accuracy",
    "cells": "rmse",
    "digits-conv": "accuracy",
    "reviews": "accuracy",
    "kws": "accuracy",
}
