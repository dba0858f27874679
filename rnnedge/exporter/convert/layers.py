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
from onnx import TensorProto

from rnnedge.exporter.convert import activations
from rnnedge.exporter.convert.context import Context
from rnnedge.exporter.convert.graph import Sym
from rnnedge.exporter.convert.registry import CONVERTERS, converts
from rnnedge.exporter.load.keras_api import ops_classes as knp
from rnnedge.exporter.load.keras_api import takes_mask


def weights_of(variable) -> np.ndarray:
    return np.asarray(K.convert_to_numpy(variable), dtype=np.float32)


def apply_activation(ctx: Context, layer, x: str, fn) -> str:
    y = activations.apply(ctx.g, x, fn, hint=layer.name)
    if y is None:
        ctx.fail(layer, f"activation '{activations.keras_name(fn)}' has no ONNX form in rnnedge")
    return y


def require_channels_last(ctx: Context, layer):
    if getattr(layer, "data_format", "channels_last") != "channels_last":
        ctx.fail(layer, "only data_format='channels_last' is supported")


def _axes(layer, rank: int) -> list[int]:
    """The axes a layer (or op) works along, normalised (all of them where it says None)."""
    axis = getattr(layer, "axis", None)
    return list(range(rank)) if axis is None else sorted(int(a) % rank for a in np.atleast_1d(axis))


def _along_time(what: str):
    """A streaming rule: refused where the layer works along axis 1 (time) of a sequence."""
    return lambda layer, x: what if x is not None and x.rank >= 2 and 1 in _axes(layer, x.rank) else None


def _mixes_time(what: str):
    """A streaming rule: refused where the input has a time axis and features (rank >= 3)."""
    return lambda layer, x: what if x is not None and x.rank >= 3 else None


@converts(L.Dropout, L.SpatialDropout1D, L.GaussianNoise, L.GaussianDropout, L.AlphaDropout, L.InputLayer,
          per_step=True, mask_aware=True)
def identity(ctx: Context, layer, args, kwargs, outs):
    """Layers that do nothing at inference (the input layer passes its tensor on)."""
    return [args[0].name]


@converts(L.Dense, per_step=True)
def dense(ctx: Context, layer, args, kwargs, outs):
    g, x = ctx.g, args[0]
    if getattr(layer, "quantization_mode", None):
        ctx.fail(layer, f"quantized Dense ({layer.quantization_mode}) is not supported")
    y = g.op("MatMul", [x.name, g.const(weights_of(layer.kernel), f"{layer.name}/kernel")], hint=layer.name)
    if layer.use_bias:
        y = g.op("Add", [y, g.const(weights_of(layer.bias), f"{layer.name}/bias")], hint=layer.name)
    return [apply_activation(ctx, layer, y, layer.activation)]


@converts(L.Activation, per_step=True)
def activation(ctx, layer, args, kwargs, outs):
    return [apply_activation(ctx, layer, args[0].name, layer.activation)]


@converts(L.ReLU, per_step=True, mask_aware=True)
def relu(ctx: Context, layer, args, kwargs, outs):
    """ReLU(max_value, negative_slope): Relu or LeakyRelu, then Min(max_value) (Keras requires max_value >= 0);
    a threshold other than 0 goes to tf2onnx. The mask passes through, as in Keras (an elementwise layer)."""
    g, x = ctx.g, args[0].name
    if float(layer.threshold):
        ctx.fail(layer, f"threshold={float(layer.threshold)} (other than 0) is not supported")
    slope = float(layer.negative_slope)
    y = g.op("LeakyRelu", [x], hint=layer.name, alpha=slope) if slope else g.op("Relu", [x], hint=layer.name)
    if layer.max_value is not None:
        y = g.op("Min", [y, g.const(np.float32(layer.max_value), f"{layer.name}/max_value")], hint=layer.name)
    return [y]


@converts(L.LeakyReLU, per_step=True, mask_aware=True)
def leaky_relu(ctx: Context, layer, args, kwargs, outs):
    return [ctx.g.op("LeakyRelu", [args[0].name], hint=layer.name, alpha=float(layer.negative_slope))]


@converts(L.ELU, per_step=True, mask_aware=True)
def elu(ctx: Context, layer, args, kwargs, outs):
    return [ctx.g.op("Elu", [args[0].name], hint=layer.name, alpha=float(layer.alpha))]


@converts(L.Softmax, streaming=_along_time("it normalises over the time axis"))
def softmax(ctx: Context, layer, args, kwargs, outs):
    """Softmax along one axis (a masked call goes to tf2onnx: registry rule 2)."""
    axes = np.atleast_1d(layer.axis)
    if len(axes) != 1:
        ctx.fail(layer, f"a softmax over several axes {tuple(int(a) for a in axes)} is not supported")
    return [ctx.g.op("Softmax", [args[0].name], hint=layer.name, axis=int(axes[0]))]


def _prelu_stream(layer, x) -> str | None:
    """Refused where alpha differs per step: not shared over axis 1 (time), it weights each step by its position."""
    if x.rank < 3 or 1 in (layer.shared_axes or ()):
        return None
    return "its alpha differs per step (shared_axes does not include axis 1, time), so each step's output depends " \
           "on its position in the sequence; share alpha over time: PReLU(shared_axes=[1])"


@converts(L.PReLU, per_step=True, mask_aware=True, streaming=_prelu_stream)
def prelu(ctx: Context, layer, args, kwargs, outs):
    """max(0, x) + alpha * min(0, x): ONNX PRelu, alpha ([*input_shape[1:]], 1 on shared axes) broadcast from
    the right. The mask passes through untouched, as in Keras (an elementwise layer)."""
    alpha = ctx.g.const(weights_of(layer.alpha), f"{layer.name}/alpha")
    return [ctx.g.op("PRelu", [args[0].name, alpha], hint=layer.name)]


@converts(L.Embedding)
def embedding(ctx: Context, layer, args, kwargs, outs):
    g, x = ctx.g, args[0]
    if getattr(layer, "quantization_mode", None):
        ctx.fail(layer, f"quantized Embedding ({layer.quantization_mode}) is not supported")
    ctx.annotate(x, vocab=int(layer.input_dim), **({"pad_value": 0.0} if layer.mask_zero else {}))
    ids = x.name if x.dtype in ("int32", "int64") else g.op("Cast", [x.name], to=TensorProto.INT64)
    table = g.const(weights_of(layer.embeddings), f"{layer.name}/embeddings")
    return [g.op("Gather", [table, ids], hint=layer.name, axis=0)]


@converts(L.Masking)
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
    reduced = g.op("ReduceMax", [g.op("Cast", [mask], to=TensorProto.INT32)], keepdims=keepdims, **attrs)
    return g.op("Cast", [reduced], to=TensorProto.BOOL)


def _pools_time(layer, x) -> str:
    return "it pools over every step of the sequence, so its output looks ahead to the sequence's last step; " \
           "drop it and classify each step (a Dense on the sequence), pooling the per-step outputs in your application"


@converts(L.GlobalAveragePooling1D, mask_aware=True, streaming=_pools_time)
def global_average_pooling1d(ctx: Context, layer, args, kwargs, outs):
    g, x = ctx.g, args[0]
    require_channels_last(ctx, layer)
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


@converts(L.GlobalMaxPooling1D, streaming=_pools_time)
def global_max_pooling1d(ctx: Context, layer, args, kwargs, outs):
    require_channels_last(ctx, layer)
    return [ctx.g.op("ReduceMax", [args[0].name], hint=layer.name, axes=[1], keepdims=int(bool(layer.keepdims)))]


@converts(L.Flatten, streaming=_mixes_time("it flattens the time axis into the features, so its output looks ahead "
                                            "to the sequence's last step; keep time first: TimeDistributed(Flatten()) "
                                            "or Reshape((-1, features))"))
def flatten(ctx: Context, layer, args, kwargs, outs):
    require_channels_last(ctx, layer)
    return [ctx.g.op("Flatten", [args[0].name], hint=layer.name, axis=1)]


def _per_step_shape(layer, x: Sym) -> tuple | None:
    """The shape of each step after a Reshape that keeps the time axis first (each step's features
    reshaped alone), or None where it moves steps (or where the sizes are unknown)."""
    target, rest = [int(d) for d in layer.target_shape], x.shape[2:]
    if x.rank < 2 or not target or any(d is None for d in rest):
        return None
    size = int(np.prod(rest, dtype=np.int64))
    if target[0] == -1 or (x.shape[1] is not None and target[0] == x.shape[1]):
        tail = target[1:]
        known = int(np.prod([d for d in tail if d != -1], dtype=np.int64))
        if tail.count(-1) == 1 and target[0] != -1 and known and size % known == 0:
            return tuple(size // known if d == -1 else d for d in tail)
        return tuple(tail) if -1 not in tail and known == size else None
    return None


def _reshape_stream(layer, x) -> str | None:
    if x.rank < 3 or _per_step_shape(layer, x) is not None:
        return None
    return f"it reshapes {tuple(x.shape[1:])} into {tuple(layer.target_shape)}, moving steps into the features, so " \
           "its output looks ahead up to the sequence's last step; keep time first: Reshape((-1, ...)) with each " \
           f"step's {int(np.prod([d or 1 for d in x.shape[2:]], dtype=np.int64))} value(s) in the other axes"


@converts(L.Reshape, streaming=_reshape_stream)
def reshape(ctx: Context, layer, args, kwargs, outs):
    """Streamed, a Reshape that keeps time first reshapes each step (the chunk's length stays free)."""
    g, x = ctx.g, args[0]
    step = _per_step_shape(layer, x) if ctx.streaming and x.rank >= 3 else None
    if step is not None:
        shape = g.op("Concat", [g.dims(x.name, 0, 2), g.const(np.array(step, np.int64), "shape")], axis=0)
        return [g.op("Reshape", [x.name, shape], hint=layer.name)]
    shape = g.op("Concat", [g.dims(x.name, 0, 1), g.const(np.array(layer.target_shape, np.int64), "shape")], axis=0)
    return [g.op("Reshape", [x.name, shape], hint=layer.name)]


@converts(L.Concatenate, streaming=_along_time("it joins sequences along the time axis"))
def concatenate(ctx: Context, layer, args, kwargs, outs):
    xs = args[0]
    return [ctx.g.op("Concat", [x.name for x in xs], hint=layer.name, axis=int(layer.axis))]


def _merge(keras_type, op_type, scale=None):
    @converts(keras_type)
    def convert(ctx: Context, layer, args, kwargs, outs):
        g, xs = ctx.g, [x.name for x in args[0]]
        y = xs[0]
        for other in xs[1:]:
            y = g.op(op_type, [y, other], hint=layer.name)
        if scale:
            y = g.op("Mul", [y, g.const(np.float32(1.0 / len(xs)))], hint=layer.name)
        return [y]

    return convert


for _args in ((L.Add, "Add"), (L.Subtract, "Sub"), (L.Multiply, "Mul"), (L.Average, "Add", True), (L.Maximum, "Max"),
              (L.Minimum, "Min")):
    _merge(*_args)


@converts(L.LayerNormalization, per_step=True, streaming=_along_time("it normalises over the time axis"))
def layer_normalization(ctx: Context, layer, args, kwargs, outs):
    g, x = ctx.g, args[0]
    if getattr(layer, "rms_scaling", False):
        ctx.fail(layer, "rms_scaling=True is not supported")
    axes = sorted(a % x.rank for a in np.atleast_1d(layer.axis))
    if axes != list(range(axes[0], x.rank)):
        ctx.fail(layer, f"normalising over axes {layer.axis} is not supported: only trailing axes map to ONNX")
    shape = tuple(x.shape[a] for a in axes)
    gamma = weights_of(layer.gamma) if layer.scale else np.ones(shape, np.float32)
    beta = weights_of(layer.beta) if layer.center else np.zeros(shape, np.float32)
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


@converts(L.BatchNormalization, per_step=True, mask_aware=True,
          streaming=_along_time("it scales each step by its position in the sequence (axis=1, time)"))
def batch_normalization(ctx: Context, layer, args, kwargs, outs):
    """Inference form: one multiply and one add per channel (the mask only matters in training)."""
    g, x = ctx.g, args[0]
    axis = layer.axis % x.rank
    mean, var = weights_of(layer.moving_mean), weights_of(layer.moving_variance)
    gamma = weights_of(layer.gamma) if layer.scale else np.ones_like(mean)
    beta = weights_of(layer.beta) if layer.center else np.zeros_like(mean)
    scale = gamma / np.sqrt(var + np.float32(layer.epsilon))
    shift = beta - mean * scale
    shape = [-1] + [1] * (x.rank - 1 - axis)  # broadcast over the axes after the channel axis
    y = g.op("Mul", [x.name, g.const(scale.reshape(shape), f"{layer.name}/scale")], hint=layer.name)
    return [g.op("Add", [y, g.const(shift.reshape(shape), f"{layer.name}/shift")], hint=layer.name)]


@converts(L.TimeDistributed, mask_aware=True)
def time_distributed(ctx: Context, layer, args, kwargs, outs):
    convert_layer = ctx.convert_layer
    g, x = ctx.g, args[0]
    inner = layer.layer
    spec = CONVERTERS.get(type(inner))
    per_step = spec is not None and spec.per_step
    if kwargs.get("mask") is not None and takes_mask(inner) and not per_step:
        ctx.fail(layer, f"its inner layer {type(inner).__name__} uses the mask")
    out_shape = tuple(outs[0].shape)
    if per_step and (not isinstance(inner, L.LayerNormalization) or np.all(np.atleast_1d(inner.axis) == -1)):
        return convert_layer(ctx, inner, [x], {}, outs)
    # General case: fold time into batch, run the inner layer, unfold.
    rest_in, rest_out = x.shape[2:], out_shape[2:]
    if any(d is None for d in rest_in + rest_out):
        ctx.fail(layer, "inner layers with dynamic non-time axes are not supported")
    folded = g.op("Reshape", [x.name, g.const(np.array((-1,) + tuple(rest_in), np.int64), "shape")])
    inner_in = Sym(folded, (None,) + tuple(rest_in), x.dtype)
    ctx.book.time_axis[folded] = None  # its axis 1 is a frame's, not time

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
@converts(knp.NotEqual)
def not_equal(ctx: Context, op, args, kwargs, outs):
    g, x, value = ctx.g, args[0], args[1]
    if isinstance(value, Sym):
        other = value.name
    elif x.dtype in ("float32", "int32", "int64"):
        other = g.const(np.array(value).astype(x.dtype))
    else:
        ctx.fail(op, f"comparing a {x.dtype} tensor is not supported")
    return [g.op("Not", [g.op("Equal", [x.name, other])], hint=op.name)]


@converts(knp.Any, streaming=_along_time("it reduces over the time axis"))
def any_(ctx: Context, op, args, kwargs, outs):
    axis = getattr(op, "axis", None)
    axes = None if axis is None else np.atleast_1d(axis).tolist()
    return [_any(ctx.g, args[0].name, axes, int(bool(getattr(op, "keepdims", False))))]


@converts(knp.All, streaming=_along_time("it reduces over the time axis"))
def all_(ctx: Context, op, args, kwargs, outs):
    """all() as not(any(not x)), through the same int32 reduction as any()."""
    g, axis = ctx.g, getattr(op, "axis", None)
    axes = None if axis is None else np.atleast_1d(axis).tolist()
    some_false = _any(g, g.op("Not", [args[0].name]), axes, int(bool(getattr(op, "keepdims", False))))
    return [g.op("Not", [some_false], hint=op.name)]


@converts(knp.ExpandDims)
def expand_dims(ctx: Context, op, args, kwargs, outs):
    return [ctx.g.unsqueeze(args[0].name, np.atleast_1d(op.axis).tolist())]


@converts(knp.Concatenate, streaming=_along_time("it joins sequences along the time axis"))
def concatenate_op(ctx: Context, op, args, kwargs, outs):
    return [ctx.g.op("Concat", [x.name for x in args[0]], hint=op.name, axis=int(op.axis))]


def _filled_like(keras_type, value):
    """zeros_like / ones_like, in the dtype Keras gives the result."""
    @converts(keras_type)
    def convert(ctx: Context, op, args, kwargs, outs):
        dtype = np.dtype(str(outs[0].dtype))
        fill = onnx.numpy_helper.from_array(np.array([value], dtype=dtype))
        return [ctx.g.op("ConstantOfShape", [ctx.g.op("Shape", [args[0].name])], hint=op.name, value=fill)]

    return convert


def _logical(keras_type, op_type):
    @converts(keras_type)
    def convert(ctx: Context, op, args, kwargs, outs):
        return [ctx.g.op(op_type, [args[0].name, args[1].name], hint=op.name)]

    return convert


_filled_like(knp.ZerosLike, 0)
_filled_like(knp.OnesLike, 1)
_logical(knp.LogicalAnd, "And")
_logical(knp.LogicalOr, "Or")


def merge_directions(ctx, layer, y_f, y_b) -> list:
    """A Bidirectional layer's two outputs merged as its `merge_mode` says (both in time order);
    None keeps both. Shared by the fused recurrent layers and the ConvLSTM Scans."""
    g = ctx.g
    mode = layer.merge_mode
    if mode == "concat":
        merged = [g.op("Concat", [y_f, y_b], hint=layer.name, axis=-1)]
    elif mode == "sum":
        merged = [g.op("Add", [y_f, y_b], hint=layer.name)]
    elif mode == "ave":
        merged = [g.op("Mul", [g.op("Add", [y_f, y_b]), g.const(np.float32(0.5))], hint=layer.name)]
    elif mode == "mul":
        merged = [g.op("Mul", [y_f, y_b], hint=layer.name)]
    elif mode is None:
        merged = [y_f, y_b]
    else:
        ctx.fail(layer, f"merge_mode={mode!r} is not supported")
    return merged
