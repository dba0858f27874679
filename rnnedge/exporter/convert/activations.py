"""Keras activation functions as ONNX ops (standalone) and as fused-RNN activation names."""

from __future__ import annotations

import numpy as np

from rnnedge.exporter.convert.graph import GraphBuilder

# Keras name -> (ONNX RNN activation, alpha, beta). alpha/beta are None where the op takes none.
# Keras 3 hard_sigmoid is relu6(x + 3) / 6 = clip(x / 6 + 0.5, 0, 1): alpha 1/6, beta 0.5.
# Each entry is checked against Keras in onnxruntime for LSTM, GRU and SimpleRNN, as activation and as
# recurrent activation (tests/test_activations.py). Not here: softplus (onnxruntime's fused kernels
# compute log(1 + exp(x)), infinite past x = 88 where Keras gives x) and every activation the RNN
# ops cannot name (gelu, silu, selu, ...): those layers become an exact Scan (convert/scan.py).
RNN_ACTIVATIONS = {
    "sigmoid": ("Sigmoid", None, None),
    "tanh": ("Tanh", None, None),
    "relu": ("Relu", None, None),
    "linear": ("Affine", 1.0, 0.0),
    "hard_sigmoid": ("HardSigmoid", 1.0 / 6.0, 0.5),
    "keras2_hard_sigmoid": ("HardSigmoid", 0.2, 0.5),  # tf.keras 2's, in a Keras 2 model's rebuild (keras2.py)
    "elu": ("Elu", 1.0, None),
    "softsign": ("Softsign", None, None),
    "leaky_relu": ("LeakyRelu", 0.2, None),  # Keras' default negative_slope
}


def keras_name(fn) -> str:
    """The name Keras serialises an activation under ("linear" for None)."""
    if fn is None:
        return "linear"
    return getattr(fn, "__name__", type(fn).__name__)


def rnn_activation(fn) -> tuple[str, float | None, float | None] | None:
    """The fused-RNN form of a Keras activation, or None when ONNX RNN ops cannot express it."""
    return RNN_ACTIVATIONS.get(keras_name(fn))


def apply(g: GraphBuilder, x: str, fn, hint: str) -> str | None:
    """Emit a Keras activation as ONNX ops on x; None when the activation is not supported."""
    name = keras_name(fn)
    simple = {
        "relu": "Relu",
        "sigmoid": "Sigmoid",
        "tanh": "Tanh",
        "elu": "Elu",
        "selu": "Selu",
        "softplus": "Softplus",
        "softsign": "Softsign",
        "exponential": "Exp",
    }
    if name == "linear":
        return x
    if name in simple:
        return g.op(simple[name], [x], hint=hint)
    if name == "softmax":
        return g.op("Softmax", [x], hint=hint, axis=-1)
    if name == "log_softmax":
        return g.op("LogSoftmax", [x], hint=hint, axis=-1)
    if name in ("hard_sigmoid", "keras2_hard_sigmoid"):
        _, alpha, beta = RNN_ACTIVATIONS[name]
        return g.op("HardSigmoid", [x], hint=hint, alpha=alpha, beta=beta)
    if name in ("silu", "swish"):
        return g.op("Mul", [x, g.op("Sigmoid", [x], hint=hint)], hint=hint)
    if name in ("hard_silu", "hard_swish"):
        return g.op("Mul", [x, g.op("HardSigmoid", [x], hint=hint, alpha=1.0 / 6.0, beta=0.5)], hint=hint)
    if name == "relu6":
        return g.op("Clip", [x, g.const(np.float32(0.0)), g.const(np.float32(6.0))], hint=hint)
    if name == "leaky_relu":
        return g.op("LeakyRelu", [x], hint=hint, alpha=0.2)
    if name == "gelu":  # Keras default: exact (erf) form
        erf = g.op("Erf", [g.op("Mul", [x, g.const(np.float32(1 / np.sqrt(2)))])])
        return g.op("Mul", [g.op("Mul", [x, g.const(np.float32(0.5))]),
                            g.op("Add", [erf, g.const(np.float32(1.0))])], hint=hint)
    if name == "mish":
        return g.op("Mul", [x, g.op("Tanh", [g.op("Softplus", [x])])], hint=hint)
    return None
