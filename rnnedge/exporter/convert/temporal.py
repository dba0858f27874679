"""Layers over the time axis: those whose output at a step reads neighbouring steps (convolutions
over time: Conv1D, DepthwiseConv1D, SeparableConv1D; ZeroPadding1D; pooling), those that change
which steps there are (Cropping1D, UpSampling1D), and how each streams.

Whole sequences: ONNX Conv / Pad / pooling ops with the layer's padding.

Streaming (each chunk runs alone, as kws_streaming's `Stream` wrapper does, but from the model as
trained): a convolution that reads `past = dilation * (kernel - 1)` earlier steps and none later
keeps those input frames as a state. It runs 'valid' on Concat(state, chunk), and the state
output is the last `past` frames of that concatenation, so chunk after chunk it computes exactly
what it computes over the whole sequence. That covers `padding="causal"`, and a ZeroPadding1D of
`past` steps on the left followed by a 'valid' convolution (the padding keeps the frames; the
convolution reads them). A stride (or pooling with pool size = stride) keeps no state but needs
its chunks in phase: the model's total time stride S (`ctx.book.time_stride`, in the manifest) is
what every chunk but a sequence's last must be a multiple of. What looks ahead ('same' padding,
right padding, a 'valid' convolution without its left padding) is refused, with how far it looks.
UpSampling1D streams as it is (each input step gives its `size` steps; its output's rate is a
Fraction of the input's); Cropping1D streams only where it crops nothing (cropping the end looks
ahead, cropping the start would make a chunk's output depend on where the chunk sits).
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
from keras import layers as L

from rnnedge.exporter.convert.context import Context, StateIO
from rnnedge.exporter.convert.graph import Sym
from rnnedge.exporter.convert.layers import apply_activation, require_channels_last, weights_of
from rnnedge.exporter.convert.registry import STATE, converts

INT64_MAX = np.iinfo(np.int64).max


def _refuse(ctx: Context, layer, reason: str):
    ctx.fail_stream(layer, reason)


def reads_past(fn):
    """Mark a converter as one that may read a ZeroPadding's kept frames (a convolution over time)."""
    fn.reads_past = True
    return fn


def refuse_overlap(ctx: Context, op, fn, inputs: list) -> None:
    """A ZeroPadding1D's (or ZeroPadding2D's) streamed output (its kept frames, then the chunk) is
    for the convolution that reads those frames; anything else reading it would see steps twice."""
    read = [s for s in inputs if getattr(s, "name", None) in ctx.book.overlaps]
    if read and not getattr(fn, "reads_past", False):
        _refuse(ctx, op, f"it reads a ZeroPadding{read[0].rank - 2}D's output, which streams only into a 'valid' "
                         "convolution that reaches back exactly the padded steps")


def past_frames(ctx: Context, layer, x: Sym, frames: int) -> str:
    """Concat(state, x) along time, where the state input holds the last `frames` frames of the
    stream (zeros at its start: the padding a whole sequence gets); the state output is the last
    `frames` frames of the concatenation."""
    g = ctx.g
    batch = x.shape[0] if x.shape[0] is not None else "batch"
    shape = (batch, frames, *x.shape[2:])
    name = g.fresh(f"{layer.name}/state_in/frames")
    out = g.fresh(f"{layer.name}/state_out/frames")
    g.add_input(name, x.dtype, list(shape))
    ctx.book.states.append(StateIO(input=name, output=out, layer=layer.name, shape=shape))
    full = g.op("Concat", [name, x.name], hint=f"{layer.name}/with_past", axis=1)
    c = lambda v: g.const(np.array([v], np.int64))  # noqa: E731
    ctx.book.state_outputs[out] = g.op("Slice", [full, c(-frames), c(INT64_MAX), c(1)], hint=f"{layer.name}/keep_past")
    return full


def in_phase(ctx: Context, layer, x: Sym, stride: int, out: str) -> None:
    """Record that `out` runs at 1/stride of `x`'s rate: streamed chunks must keep that stride in
    phase, and the sample cases are at least that long."""
    rate = Fraction(ctx.book.rates.get(x.name, 1)) * stride
    ctx.book.rates[out] = _rate(rate)
    ctx.book.time_stride = math.lcm(ctx.book.time_stride, rate.numerator)  # chunks of n input steps give n / rate steps


def _rate(rate: Fraction) -> int | Fraction:
    """A rate as an int where it is one (an UpSampling1D makes it a Fraction below 1)."""
    return int(rate) if rate.denominator == 1 else rate


def shortens(ctx: Context, x: Sym, out: str, steps: int) -> None:
    """`out` is `steps` input steps shorter than `x`: sample cases must be longer than that."""
    ctx.book.shortened[out] = ctx.book.shortened.get(x.name, 0) + steps
    ctx.book.min_steps = max(ctx.book.min_steps, math.ceil(ctx.book.shortened[out]))  # a Fraction after an UpSampling1D


def padded(ctx: Context, x: Sym, out: str, steps: int) -> None:
    """`out` is `steps` steps of padding longer than `x`: the 'valid' windows after it consume those
    steps first, so they count against what the windows consume, not against the input."""
    ctx.book.shortened[out] = ctx.book.shortened.get(x.name, 0) - ctx.book.rates.get(x.name, 1) * steps


def conv_input(ctx: Context, layer, x: Sym, padding: str, past: int, stride: int,
               pad_layer: str = "ZeroPadding1D(({past}, 0))") -> tuple[str, list[int]]:
    """The time input a convolution runs on and its [left, right] padding, streamed or not.
    `pad_layer` is the Keras layer that pads `past` steps in front (for the advice of a refusal)."""
    pad = f"put a {pad_layer.format(past=past)} before it"
    fix = f"{pad} and use padding='valid'"
    if not ctx.streaming or x.rank < 3:
        if padding == "valid":
            return x.name, [0, 0]
        if padding == "causal":
            return x.name, [past, 0]
        if padding == "same" and stride == 1:
            return x.name, [past // 2, past - past // 2]
        ctx.fail(layer, f"padding='{padding}' with strides={stride} is not supported")
    overlap = ctx.book.overlaps.get(x.name)
    if padding == "same" and past:
        _refuse(ctx, layer, f"padding='same' looks {past - past // 2} step(s) ahead (it centres a {past + 1}-step "
                            f"window); {fix}")
    if overlap is not None and padding != "valid":
        _refuse(ctx, layer, f"padding='{padding}' pads again after the ZeroPadding1D before it; use padding='valid'")
    if overlap is not None and overlap != past:
        ahead = f"it would look {past - overlap} step(s) ahead" if overlap < past else \
            f"{overlap - past} step(s) of padding would reach the next layer"
        _refuse(ctx, layer, f"it reads {past} past step(s) but the ZeroPadding1D before it pads {overlap}: {ahead}; "
                            f"pad exactly {past}")
    if padding == "valid" and overlap is None and past:
        _refuse(ctx, layer, f"padding='valid' without left padding drops a sequence's first {past} step(s), so its "
                            f"output at a step reads {past} step(s) ahead of it; {pad}")
    if padding not in ("valid", "causal", "same"):
        _refuse(ctx, layer, f"padding='{padding}' is not one rnnedge streams; {fix}")
    if padding == "causal" and past:
        return past_frames(ctx, layer, x, past), [0, 0]
    return x.name, [0, 0]


def _conv(ctx: Context, layer, x: Sym, weight: np.ndarray, bias, k: int, stride: int, dilation: int, group: int,
          padding: str) -> str:
    """ONNX Conv over time on [B, T, C] (weight [out, in/group, k]); returns [B, T', out]."""
    g = ctx.g
    past = dilation * (k - 1)
    x_in, pads = conv_input(ctx, layer, x, padding, past, stride)
    inputs = [g.transpose(x_in, (0, 2, 1)), g.const(weight, f"{layer.name}/kernel")]
    if bias is not None:
        inputs.append(g.const(bias, f"{layer.name}/bias"))
    y = g.op("Conv", inputs, hint=layer.name, kernel_shape=[k], strides=[stride], dilations=[dilation], pads=pads,
             group=group)
    y = g.transpose(y, (0, 2, 1))
    if stride > 1 and x.rank >= 3:
        in_phase(ctx, layer, x, stride, y)
    # no padding, no kept frames
    if x.rank >= 3 and sum(pads) < past and x_in == x.name and x.name not in ctx.book.overlaps:
        shortens(ctx, x, y, ctx.book.rates.get(x.name, 1) * (past - sum(pads)))
    return y


def _time_conv_args(layer):
    (k,) = tuple(layer.kernel_size)
    (stride,), (dilation,) = tuple(layer.strides), tuple(layer.dilation_rate)
    return k, stride, dilation


@reads_past
@converts(L.Conv1D, streaming=STATE)
def conv1d(ctx: Context, layer, args, kwargs, outs):
    x = args[0]
    require_channels_last(ctx, layer)
    kernel = weights_of(layer.kernel)  # [k, in/groups, out]
    k, stride, dilation = _time_conv_args(layer)
    bias = weights_of(layer.bias) if layer.use_bias else None
    y = _conv(ctx, layer, x, kernel.transpose(2, 1, 0), bias, k, stride, dilation, int(layer.groups), layer.padding)
    return [apply_activation(ctx, layer, y, layer.activation)]


def _depthwise_weight(kernel: np.ndarray) -> np.ndarray:
    """Keras' depthwise kernel [k, in, multiplier] as ONNX's grouped Conv weight [in * multiplier, 1, k]."""
    k, channels, mult = kernel.shape
    return kernel.transpose(1, 2, 0).reshape(channels * mult, 1, k)


@reads_past
@converts(L.DepthwiseConv1D, streaming=STATE)
def depthwise_conv1d(ctx: Context, layer, args, kwargs, outs):
    x = args[0]
    require_channels_last(ctx, layer)
    kernel = weights_of(layer.kernel)
    k, stride, dilation = _time_conv_args(layer)
    bias = weights_of(layer.bias) if layer.use_bias else None
    y = _conv(ctx, layer, x, _depthwise_weight(kernel), bias, k, stride, dilation, kernel.shape[1], layer.padding)
    return [apply_activation(ctx, layer, y, layer.activation)]


@reads_past
@converts(L.SeparableConv1D, streaming=STATE)
def separable_conv1d(ctx: Context, layer, args, kwargs, outs):
    """A depthwise convolution over time, then a pointwise one (a MatMul per step), bias, activation."""
    g, x = ctx.g, args[0]
    require_channels_last(ctx, layer)
    depthwise = weights_of(layer.depthwise_kernel)
    k, stride, dilation = _time_conv_args(layer)
    y = _conv(ctx, layer, x, _depthwise_weight(depthwise), None, k, stride, dilation, depthwise.shape[1],
              layer.padding)
    y = g.op("MatMul", [y, g.const(weights_of(layer.pointwise_kernel)[0], f"{layer.name}/pointwise")], hint=layer.name)
    if layer.use_bias:
        y = g.op("Add", [y, g.const(weights_of(layer.bias), f"{layer.name}/bias")], hint=layer.name)
    return [apply_activation(ctx, layer, y, layer.activation)]


@converts(L.ZeroPadding1D, streaming=STATE)
def zero_padding1d(ctx: Context, layer, args, kwargs, outs):
    g, x = ctx.g, args[0]
    left, right = (int(p) for p in layer.padding)
    if ctx.streaming and x.rank >= 3:
        if right:
            _refuse(ctx, layer, f"it pads {right} step(s) at the end, so what follows looks {right} step(s) ahead")
        if not left:
            return [x.name]
        full = past_frames(ctx, layer, x, left)
        ctx.book.overlaps[full] = left  # read by the next convolution ('valid', reaching exactly `left` back)
        return [full]
    pads = g.const(np.array([0, left, 0, 0, right, 0], np.int64), f"{layer.name}/pads")
    y = g.op("Pad", [x.name, pads], hint=layer.name, mode="constant")
    if x.rank >= 3:
        padded(ctx, x, y, left + right)
    return [y]


def _pool1d(op_type, keras_type):
    @converts(keras_type, streaming=STATE)
    def convert(ctx: Context, layer, args, kwargs, outs):
        g, x = ctx.g, args[0]
        require_channels_last(ctx, layer)
        (k,), (s,) = tuple(layer.pool_size), tuple(layer.strides)
        if ctx.streaming and x.rank >= 3 and (k > 1 or s > 1):
            if k != s:
                _refuse(ctx, layer, f"it pools {k} steps with stride {s}: it streams where pool size and stride are "
                                    "equal (windows that neither overlap nor skip)")
            if layer.padding != "valid":
                _refuse(ctx, layer, "padding='same' shifts its windows by the sequence's length; use padding='valid'")
        extra = {"count_include_pad": 0} if op_type == "AveragePool" else {}
        y = g.op(op_type, [g.transpose(x.name, (0, 2, 1))], hint=layer.name, kernel_shape=[k], strides=[s],
                 auto_pad="SAME_UPPER" if layer.padding == "same" else "VALID", **extra)
        y = g.transpose(y, (0, 2, 1))
        if x.rank >= 3 and s > 1:
            in_phase(ctx, layer, x, s, y)
        if x.rank >= 3 and layer.padding == "valid" and k > s:  # windows longer than their stride
            shortens(ctx, x, y, ctx.book.rates.get(x.name, 1) * (k - s))
        return [y]

    return convert


_pool1d("MaxPool", L.MaxPooling1D)
_pool1d("AveragePool", L.AveragePooling1D)


def _cropping_stream(layer, x) -> str | None:
    """Cropping1D streams only where it crops nothing: cropping the end looks ahead (a step is kept
    only once the steps after it are known), and cropping the start drops the stream's first steps,
    so a chunk's output would depend on where the chunk sits in the stream."""
    start, end = (int(c) for c in layer.cropping)
    if end:
        return f"it crops a sequence's last {end} step(s), so whether a step is kept depends on the {end} step(s) " \
               "after it (it looks ahead)"
    if start:
        return f"it crops a sequence's first {start} step(s), so a chunk's output would depend on where the chunk " \
               "sits in the stream; drop those steps before streaming instead"
    return None


@converts(L.Cropping1D, streaming=_cropping_stream)
def cropping1d(ctx: Context, layer, args, kwargs, outs):
    """Slice on axis 1 (time): [start, T - end)."""
    g, x = ctx.g, args[0]
    start, end = (int(c) for c in layer.cropping)
    if not start and not end:
        return [x.name]
    c = lambda v: g.const(np.array([v], np.int64))  # noqa: E731
    y = g.op("Slice", [x.name, c(start), c(-end if end else INT64_MAX), c(1)], hint=layer.name)
    shortens(ctx, x, y, ctx.book.rates.get(x.name, 1) * (start + end))
    return [y]


@converts(L.UpSampling1D)
def upsampling1d(ctx: Context, layer, args, kwargs, outs):
    """Each step repeated `size` times along time: Tile on a new axis after time, then Reshape.
    Streams exactly (each input step gives its `size` output steps, looking neither back nor
    ahead); its output runs at `size` times its input's rate (`ctx.book.rates`, a Fraction below 1)."""
    g, x = ctx.g, args[0]
    size = int(layer.size)
    if size == 1:
        return [x.name]
    tiled = g.op("Tile", [g.unsqueeze(x.name, [2]), g.const(np.array([1, 1, size, 1], np.int64), "repeats")],
                 hint=layer.name)
    shape = g.op("Concat", [g.const(np.array([0, -1], np.int64)), g.dims(x.name, 2, 3)], axis=0)
    y = g.op("Reshape", [tiled, shape], hint=layer.name)
    ctx.book.rates[y] = _rate(Fraction(ctx.book.rates.get(x.name, 1)) / size)
    return [y]
