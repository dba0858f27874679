"""Converters for the layers that surround recurrent layers, and the Keras ops that compute masks.

Each converter is `fn(ctx, layer, args, kwargs, outs) -> list[str]`: `args`/`kwargs` are the
Keras call arguments with tensors replaced by `Sym`s, `outs` the Keras output tensors (for their
static shapes); it returns the ONNX value names of the outputs, in Keras' flattened order.
"""

from __future__ import annotations

import numpy as np
import onnx
from keras import layers as L
from keras import ops as K
from keras.src.ops import numpy as knp

from rnnedge.exporter.convert import activations
from rnnedge.exporter.convert.context import Context
from rnnedge.exporter.convert.graph import Sym


def _np(variable) -> np.ndarray:
    return np.asarray(K.convert_to_numpy(variable), dtype=np.float32)


def _mask_used(ctx: Context, layer, kwargs, how: str = "uses the mask in a way rnnedge does not convert"):
    if kwargs.get("mask") is not None:
        ctx.fail(layer, f"it receives a mask and {how}")


def _activation(ctx: Context, layer, x: str, fn) -> str:
    y = activations.apply(ctx.g, x, fn, hint=layer.name)
    if y is None:
        ctx.fail(layer, f"activation '{activations.keras_name(fn)}' has no ONNX form in rnnedge")
    return y


def _channels_last(ctx: Context, layer):
    if getattr(layer, "data_format", "channels_last") != "channels_last":
        ctx.fail(layer, "only data_format='channels_last' is supported")


def identity(ctx: Context, layer, args, kwargs, outs):
    return [args[0].name]


def input_layer(ctx, layer, args, kwargs, outs):
    return [args[0].name]


def dense(ctx: Context, layer, args, kwargs, outs):
    g, x = ctx.g, args[0]
    if getattr(layer, "quantization_mode", None):
        ctx.fail(layer, f"quantized Dense ({layer.quantization_mode}) is not supported")
    y = g.op("MatMul", [x.name, g.const(_np(layer.kernel), f"{layer.name}/kernel")], hint=layer.name)
    if layer.use_bias:
        y = g.op("Add", [y, g.const(_np(layer.bias), f"{layer.name}/bias")], hint=layer.name)
    return [_activation(ctx, layer, y, layer.activation)]


def activation(ctx, layer, args, kwargs, outs):
    return [_activation(ctx, layer, args[0].name, layer.activation)]


def embedding(ctx: Context, layer, args, kwargs, outs):
    g, x = ctx.g, args[0]
    if getattr(layer, "quantization_mode", None):
        ctx.fail(layer, f"quantized Embedding ({layer.quantization_mode}) is not supported")
    ctx.annotate(x, vocab=int(layer.input_dim), **({"pad_value": 0.0} if layer.mask_zero else {}))
    ids = x.name if x.dtype in ("int32", "int64") else g.op("Cast", [x.name], to=7)  # int64
    table = g.const(_np(layer.embeddings), f"{layer.name}/embeddings")
    return [g.op("Gather", [table, ids], hint=layer.name, axis=0)]


def masking(ctx: Context, layer, args, kwargs, outs):
    """Keras Masking zeroes the masked steps; the mask itself is computed by NotEqual/Any ops."""
    g, x = ctx.g, args[0]
    ctx.annotate(x, pad_value=float(layer.mask_value))
    keep = g.op("Not", [g.op("Equal", [x.name, g.const(np.float32(layer.mask_value))])])
    keep = _any(g, keep, [-1], keepdims=1)
    return [g.op("Where", [keep, x.name, g.const(np.float32(0.0))], hint=layer.name)]


def _any(g, mask: str, axes, keepdims: int) -> str:
    """Boolean any() over axes, through int32 (no float Casts: fp16 conversion mistypes them)."""
    attrs = {"axes": list(axes)} if axes is not None else {}
    reduced = g.op("ReduceMax", [g.op("Cast", [mask], to=6)], keepdims=keepdims, **attrs)
    return g.op("Cast", [reduced], to=9)


def conv1d(ctx: Context, layer, args, kwargs, outs):
    g, x = ctx.g, args[0]
    _channels_last(ctx, layer)
    kernel = _np(layer.kernel)  # [k, in/groups, out]
    k = kernel.shape[0]
    (stride,), (dilation,) = tuple(layer.strides), tuple(layer.dilation_rate)
    if ctx.streaming and (k > 1 or stride > 1):
        ctx.fail(layer, f"its kernel spans {k} steps (stride {stride}), so it cannot run chunk by chunk; "
                        "export without --streaming")
    total = dilation * (k - 1)
    if layer.padding == "valid":
        pads = [0, 0]
    elif layer.padding == "causal":
        pads = [total, 0]
    elif layer.padding == "same" and stride == 1:
        pads = [total // 2, total - total // 2]
    else:
        ctx.fail(layer, f"padding='{layer.padding}' with strides={stride} is not supported")
    xt = g.transpose(x.name, (0, 2, 1))
    inputs = [xt, g.const(kernel.transpose(2, 1, 0), f"{layer.name}/kernel")]
    if layer.use_bias:
        inputs.append(g.const(_np(layer.bias), f"{layer.name}/bias"))
    y = g.op("Conv", inputs, hint=layer.name, kernel_shape=[k], strides=[stride], dilations=[dilation],
             pads=pads, group=int(layer.groups))
    return [_activation(ctx, layer, g.transpose(y, (0, 2, 1)), layer.activation)]


def _pool1d(op_type):
    def convert(ctx: Context, layer, args, kwargs, outs):
        g, x = ctx.g, args[0]
        _channels_last(ctx, layer)
        (k,), (s,) = tuple(layer.pool_size), tuple(layer.strides)
        if ctx.streaming and (k > 1 or s > 1):
            ctx.fail(layer, f"it pools {k} steps (stride {s}), so it cannot run chunk by chunk; export without --streaming")
        extra = {"count_include_pad": 0} if op_type == "AveragePool" else {}
        y = g.op(op_type, [g.transpose(x.name, (0, 2, 1))], hint=layer.name, kernel_shape=[k], strides=[s],
                 auto_pad="SAME_UPPER" if layer.padding == "same" else "VALID", **extra)
        return [g.transpose(y, (0, 2, 1))]

    return convert


def global_average_pooling1d(ctx: Context, layer, args, kwargs, outs):
    g, x = ctx.g, args[0]
    _channels_last(ctx, layer)
    keep = int(bool(layer.keepdims))
    mask = kwargs.get("mask")
    if mask is None:
        return [g.op("ReduceMean", [x.name], hint=layer.name, axes=[1], keepdims=keep)]
    # Keras: sum(x * mask) / sum(mask) over the valid steps only.
    m = g.unsqueeze(g.op("Where", [mask.name, g.const(np.float32(1.0)), g.const(np.float32(0.0))]), [2])
    axes = g.const(np.array([1], np.int64), "axes")
    total = g.op("ReduceSum", [g.op("Mul", [x.name, m]), axes], keepdims=keep)
    count = g.op("ReduceSum", [m, axes], keepdims=keep)
    return [g.op("Div", [total, count], hint=layer.name)]


def global_max_pooling1d(ctx: Context, layer, args, kwargs, outs):
    _channels_last(ctx, layer)
    return [ctx.g.op("ReduceMax", [args[0].name], hint=layer.name, axes=[1], keepdims=int(bool(layer.keepdims)))]


def flatten(ctx: Context, layer, args, kwargs, outs):
    _channels_last(ctx, layer)
    return [ctx.g.op("Flatten", [args[0].name], hint=layer.name, axis=1)]


def reshape(ctx: Context, layer, args, kwargs, outs):
    g, x = ctx.g, args[0]
    shape = g.op("Concat", [g.dims(x.name, 0, 1), g.const(np.array(layer.target_shape, np.int64), "shape")], axis=0)
    return [g.op("Reshape", [x.name, shape], hint=layer.name)]


def concatenate(ctx: Context, layer, args, kwargs, outs):
    xs = args[0]
    return [ctx.g.op("Concat", [x.name for x in xs], hint=layer.name, axis=int(layer.axis))]


def _merge(op_type, scale=None):
    def convert(ctx: Context, layer, args, kwargs, outs):
        g, xs = ctx.g, [x.name for x in args[0]]
        y = xs[0]
        for other in xs[1:]:
            y = g.op(op_type, [y, other], hint=layer.name)
        if scale:
            y = g.op("Mul", [y, g.const(np.float32(1.0 / len(xs)))], hint=layer.name)
        return [y]

    return convert


def layer_normalization(ctx: Context, layer, args, kwargs, outs):
    g, x = ctx.g, args[0]
    if getattr(layer, "rms_scaling", False):
        ctx.fail(layer, "rms_scaling=True is not supported")
    axes = sorted(a % x.rank for a in np.atleast_1d(layer.axis))
    if axes != list(range(axes[0], x.rank)):
        ctx.fail(layer, f"normalising over axes {layer.axis} is not supported: only trailing axes map to ONNX")
    shape = tuple(x.shape[a] for a in axes)
    gamma = _np(layer.gamma) if layer.scale else np.ones(shape, np.float32)
    beta = _np(layer.beta) if layer.center else np.zeros(shape, np.float32)
    gamma = g.const(gamma.reshape(shape), f"{layer.name}/gamma")
    beta = g.const(beta.reshape(shape), f"{layer.name}/beta")
    if g.opset >= 17:
        return [g.op("LayerNormalization", [x.name, gamma, beta], hint=layer.name, axis=axes[0],
                     epsilon=float(layer.epsilon))]
    # before opset 17: (x - mean) / sqrt(var + epsilon) * gamma + beta, in plain ops
    centred = g.op("Sub", [x.name, g.op("ReduceMean", [x.name], axes=axes, keepdims=1)])
    var = g.op("ReduceMean", [g.op("Mul", [centred, centred])], axes=axes, keepdims=1)
    scale = g.op("Sqrt", [g.op("Add", [var, g.const(np.float32(layer.epsilon))])])
    return [g.op("Add", [g.op("Mul", [g.op("Div", [centred, scale]), gamma]), beta], hint=layer.name)]


def batch_normalization(ctx: Context, layer, args, kwargs, outs):
    """Inference form: one multiply and one add per channel (the mask only matters in training)."""
    g, x = ctx.g, args[0]
    axis = layer.axis % x.rank
    mean, var = _np(layer.moving_mean), _np(layer.moving_variance)
    gamma = _np(layer.gamma) if layer.scale else np.ones_like(mean)
    beta = _np(layer.beta) if layer.center else np.zeros_like(mean)
    scale = gamma / np.sqrt(var + np.float32(layer.epsilon))
    shift = beta - mean * scale
    shape = [-1] + [1] * (x.rank - 1 - axis)  # broadcast over the axes after the channel axis
    y = g.op("Mul", [x.name, g.const(scale.reshape(shape), f"{layer.name}/scale")], hint=layer.name)
    return [g.op("Add", [y, g.const(shift.reshape(shape), f"{layer.name}/shift")], hint=layer.name)]


# TimeDistributed applies these directly to [batch, time, ...]: they act on the last axis only.
PER_STEP = (L.Dense, L.Activation, L.Dropout, L.LayerNormalization, L.BatchNormalization)


def time_distributed(ctx: Context, layer, args, kwargs, outs):
    convert_layer = ctx.convert_layer
    g, x = ctx.g, args[0]
    inner = layer.layer
    if kwargs.get("mask") is not None and getattr(inner, "_call_has_mask_arg", False) and not isinstance(inner, PER_STEP):
        ctx.fail(layer, f"its inner layer {type(inner).__name__} uses the mask")
    out_shape = tuple(outs[0].shape)
    if isinstance(inner, PER_STEP) and (not isinstance(inner, L.LayerNormalization) or np.all(np.atleast_1d(inner.axis) == -1)):
        return convert_layer(ctx, inner, [x], {}, outs)
    # General case: fold time into batch, run the inner layer, unfold.
    rest_in, rest_out = x.shape[2:], out_shape[2:]
    if any(d is None for d in rest_in + rest_out):
        ctx.fail(layer, "inner layers with dynamic non-time axes are not supported")
    folded = g.op("Reshape", [x.name, g.const(np.array((-1,) + tuple(rest_in), np.int64), "shape")])
    inner_in = Sym(folded, (None,) + tuple(rest_in), x.dtype)

    class _Out:  # the inner layer's output shape, as a Keras tensor would give it
        shape = (None,) + tuple(rest_out)

    streaming, ctx.streaming = ctx.streaming, False  # folded, the inner layer sees one step per row
    try:
        (y,) = convert_layer(ctx, inner, [inner_in], {}, [_Out])
    finally:
        ctx.streaming = streaming
    shape = g.op("Concat", [g.dims(x.name, 0, 2), g.const(np.array(rest_out, np.int64), "shape")], axis=0)
    return [g.op("Reshape", [y, shape], hint=layer.name)]


# Keras ops that appear in functional graphs to compute masks.
def not_equal(ctx: Context, op, args, kwargs, outs):
    g, x, value = ctx.g, args[0], args[1]
    if isinstance(value, Sym):
        other = value.name
    elif x.dtype in ("float32", "int32", "int64"):
        other = g.const(np.array(value).astype(x.dtype))
    else:
        ctx.fail(op, f"comparing a {x.dtype} tensor is not supported")
    return [g.op("Not", [g.op("Equal", [x.name, other])], hint=op.name)]


def any_(ctx: Context, op, args, kwargs, outs):
    axis = getattr(op, "axis", None)
    axes = None if axis is None else np.atleast_1d(axis).tolist()
    return [_any(ctx.g, args[0].name, axes, int(bool(getattr(op, "keepdims", False))))]


def all_(ctx: Context, op, args, kwargs, outs):
    """all() as not(any(not x)), through the same int32 reduction as any()."""
    g, axis = ctx.g, getattr(op, "axis", None)
    axes = None if axis is None else np.atleast_1d(axis).tolist()
    some_false = _any(g, g.op("Not", [args[0].name]), axes, int(bool(getattr(op, "keepdims", False))))
    return [g.op("Not", [some_false], hint=op.name)]


def expand_dims(ctx: Context, op, args, kwargs, outs):
    return [ctx.g.unsqueeze(args[0].name, np.atleast_1d(op.axis).tolist())]


def concatenate_op(ctx: Context, op, args, kwargs, outs):
    return [ctx.g.op("Concat", [x.name for x in args[0]], hint=op.name, axis=int(op.axis))]


def _filled_like(value):
    """zeros_like / ones_like, in the dtype Keras gives the result."""
    def convert(ctx: Context, op, args, kwargs, outs):
        dtype = np.dtype(str(outs[0].dtype))
        fill = onnx.numpy_helper.from_array(np.array([value], dtype=dtype))
        return [ctx.g.op("ConstantOfShape", [ctx.g.op("Shape", [args[0].name])], hint=op.name, value=fill)]

    return convert


def _logical(op_type):
    def convert(ctx: Context, op, args, kwargs, outs):
        return [ctx.g.op(op_type, [args[0].name, args[1].name], hint=op.name)]

    return convert


CONVERTERS = {
    L.InputLayer: input_layer,
    L.Dense: dense,
    L.Activation: activation,
    L.Dropout: identity,
    L.SpatialDropout1D: identity,
    L.GaussianNoise: identity,
    L.GaussianDropout: identity,
    L.AlphaDropout: identity,
    L.Embedding: embedding,
    L.Masking: masking,
    L.Conv1D: conv1d,
    L.MaxPooling1D: _pool1d("MaxPool"),
    L.AveragePooling1D: _pool1d("AveragePool"),
    L.GlobalAveragePooling1D: global_average_pooling1d,
    L.GlobalMaxPooling1D: global_max_pooling1d,
    L.Flatten: flatten,
    L.Reshape: reshape,
    L.Concatenate: concatenate,
    L.Add: _merge("Add"),
    L.Subtract: _merge("Sub"),
    L.Multiply: _merge("Mul"),
    L.Average: _merge("Add", scale=True),
    L.Maximum: _merge("Max"),
    L.Minimum: _merge("Min"),
    L.LayerNormalization: layer_normalization,
    L.BatchNormalization: batch_normalization,
    L.TimeDistributed: time_distributed,
    # Keras ops that compute and merge masks (e.g. Concatenate of masked sequences).
    knp.NotEqual: not_equal,
    knp.Any: any_,
    knp.All: all_,
    knp.ExpandDims: expand_dims,
    knp.Concatenate: concatenate_op,
    knp.LogicalAnd: _logical("And"),
    knp.LogicalOr: _logical("Or"),
    knp.ZerosLike: _filled_like(0),
    knp.OnesLike: _filled_like(1),
}

# Layers whose `mask` argument rnnedge handles (or which, at inference, ignore it).
MASK_AWARE = (L.GlobalAveragePooling1D, L.BatchNormalization, L.TimeDistributed)
