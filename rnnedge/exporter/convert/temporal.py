"""Layers over the time axis: those whose output at a step reads neighbouring steps (convolutions
over time: Conv1D, DepthwiseConv1D, SeparableConv1D; ZeroPadding1D; pooling), those that change
which steps there are (Cropping1D, UpSampling1D), and how each streams.

Whole sequences: ONNX Conv / Pad / pooling ops with the layer's padding, over [batch, time, *space,
channels] of any rank (temporal2d.py's layers over (time, frequency) run through the same
`conv_over_time` and `pool_over_time`). 'same' padding strided in time pads by TensorFlow's rule,
which depends on the sequence's length: a Pad op computes it where time is dynamic. Strides are
recorded (`in_phase`) and the steps 'valid' windows consume (`shortens`), so sample cases and the
runtime's minimum length are right; an axis that is not the input's time (a TimeDistributed's
frames folded into the batch, a Permute that moved time) records neither (`over_time`).

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
import onnx
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


def over_time(ctx: Context, x: Sym) -> bool:
    """Whether axis 1 of `x` is the input's time (not a TimeDistributed's folded frames, nor an
    axis a Permute moved there): only then do strides and windows over it change the time."""
    return x.rank >= 3 and ctx.book.time_axis.get(x.name, 1) == 1


def in_phase(ctx: Context, layer, x: Sym, stride: int, out: str) -> None:
    """Record that `out` runs at 1/stride of `x`'s rate: streamed chunks must keep that stride in
    phase, and the sample cases are at least that long."""
    if not over_time(ctx, x):
        return
    rate = Fraction(ctx.book.rates.get(x.name, 1)) * stride
    ctx.book.rates[out] = _rate(rate)
    ctx.book.time_stride = math.lcm(ctx.book.time_stride, rate.numerator)  # chunks of n input steps give n / rate steps


def _rate(rate: Fraction) -> int | Fraction:
    """A rate as an int where it is one (an UpSampling1D makes it a Fraction below 1)."""
    return int(rate) if rate.denominator == 1 else rate


def keeps_time(ctx: Context, src: str, out: str) -> str:
    """`out` is computed step by step from `src` (an activation, a pointwise kernel after a strided
    or 'valid' convolution): it has `src`'s rate and the steps `src` lost, not the layer input's."""
    for book in (ctx.book.rates, ctx.book.shortened):
        if src in book:
            book[out] = book[src]
    return out


def shortens(ctx: Context, x: Sym, out: str, steps: int) -> None:
    """`out` is `steps` input steps shorter than `x`: sample cases must be longer than that."""
    if not over_time(ctx, x):
        return
    ctx.book.shortened[out] = ctx.book.shortened.get(x.name, 0) + steps
    ctx.book.min_steps = max(ctx.book.min_steps, math.ceil(ctx.book.shortened[out]))  # a Fraction after an UpSampling1D


def padded(ctx: Context, x: Sym, out: str, steps: int) -> None:
    """`out` is `steps` steps of padding longer than `x`: the 'valid' windows after it consume those
    steps first, so they count against what the windows consume, not against the input."""
    if not over_time(ctx, x):
        return
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
        if padding == "same" and (stride == 1 or x.shape[1] is not None):
            return x.name, same_pads(x.shape[1], past + 1, stride)
        if padding == "same":
            return same_padded(ctx, layer, x, (past + 1,), (stride,)), [0, 0]
        ctx.fail(layer, f"padding='{padding}' is not supported")
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


def same_pads(size: int | None, k: int, s: int, d: int = 1) -> list[int]:
    """TensorFlow's 'same' padding [before, after] of one axis of `size` steps (the extra one at
    the end); with a stride of 1 it is the same for every size."""
    span = (k - 1) * d + 1
    total = span - 1 if s == 1 else max((math.ceil(size / s) - 1) * s + span - size, 0)
    return [total // 2, total - total // 2]


def same_padded(ctx: Context, layer, x: Sym, spans: tuple, strides: tuple, mode: str = "constant") -> str:
    """`x` [B, T, *space, C] padded (zeros, or `mode` "edge") as TensorFlow pads 'same' windows of
    `spans` steps strided by `strides` over axes 1, 2, ...: an axis of n steps gets
    (ceil(n / s) - 1) * s + span - n (at least 0), the extra one at the end; the graph computes
    it at run time where a strided axis has no fixed size (time)."""
    g = ctx.g
    c = lambda v: g.const(np.array([v], np.int64))  # noqa: E731
    before, after = [], []
    for axis, (span, s) in enumerate(zip(spans, strides), start=1):
        if s == 1 or x.shape[axis] is not None:
            pads = same_pads(x.shape[axis], span, s)
            before.append(c(pads[0]))
            after.append(c(pads[1]))
            continue
        n = g.dims(x.name, axis, axis + 1)
        covered = g.op("Mul", [g.op("Div", [g.op("Add", [n, c(s - 1)]), c(s)]), c(s)])  # ceil(n / s) * s
        total = g.op("Max", [g.op("Add", [g.op("Sub", [covered, n]), c(span - s)]), c(0)])
        before.append(g.op("Div", [total, c(2)]))
        after.append(g.op("Sub", [total, before[-1]]))
    rest = [g.const(np.zeros(x.rank - 1 - len(spans), np.int64))]
    pads = g.op("Concat", [c(0), *before, *rest, c(0), *after, *rest], axis=0)
    return g.op("Pad", [x.name, pads], hint=f"{layer.name}/same", mode=mode)


def _space_pads(ctx: Context, layer, size: int | None, padding: str, k: int, s: int, d: int) -> list[int]:
    """The padding of an axis after time (frequency; whole in every frame, so exact streamed too)."""
    if padding != "same":
        return [0, 0]
    if s > 1 and size is None:
        why = f"padding='same' strided by {s} over an axis of unknown size"
        if ctx.streaming:
            ctx.fail_stream(layer, why)
        ctx.fail(layer, f"{why} is not supported")
    return same_pads(size, k, s, d)


def channels_first(rank: int) -> tuple:
    return (0, rank - 1, *range(1, rank - 1))


def channels_last(rank: int) -> tuple:
    return (0, *range(2, rank), 1)


def conv_over_time(ctx: Context, layer, x: Sym, weight: np.ndarray, bias, group: int,
                   pad_layer: str = "ZeroPadding1D(({past}, 0))") -> str:
    """ONNX Conv of `layer` (its kernel_size, strides, dilation_rate, padding) over [B, T, *space, C]
    (weight [out, in/group, *kernel]); returns [B, T', *space', out]. Time goes through
    `conv_input` (streamed or not), the axes after it take Keras' padding as it is."""
    g = ctx.g
    kernel, strides, dilations = (tuple(int(v) for v in a) for a in (layer.kernel_size, layer.strides,
                                                                      layer.dilation_rate))
    past = dilations[0] * (kernel[0] - 1)
    space = [_space_pads(ctx, layer, x.shape[2 + i], layer.padding, *a)
             for i, a in enumerate(zip(kernel[1:], strides[1:], dilations[1:]))]
    padding = "valid" if layer.padding == "same" and not past else layer.padding  # a 1-step window pads nothing
    x_in, pads = conv_input(ctx, layer, x, padding, past, strides[0], pad_layer)
    inputs = [g.transpose(x_in, channels_first(x.rank)), g.const(weight, f"{layer.name}/kernel")]
    if bias is not None:
        inputs.append(g.const(bias, f"{layer.name}/bias"))
    y = g.op("Conv", inputs, hint=layer.name, kernel_shape=list(kernel), strides=list(strides),
             dilations=list(dilations), pads=[pads[0], *(p[0] for p in space), pads[1], *(p[1] for p in space)],
             group=group)
    y = g.transpose(y, channels_last(x.rank))
    if strides[0] > 1:
        in_phase(ctx, layer, x, strides[0], y)
    if padding == "valid" and past and x.name not in ctx.book.overlaps:  # no padding, no kept frames
        shortens(ctx, x, y, ctx.book.rates.get(x.name, 1) * past)
    return y


def pool_over_time(ctx: Context, layer, x: Sym, op_type: str) -> str:
    """ONNX MaxPool / AveragePool of `layer` (its pool_size, strides, padding) over [B, T, *space, C].
    'same' pads by TensorFlow's rule, never counting the padding: static pads (count_include_pad=0;
    MaxPool skips them) where no axis of unknown size is strided; else `same_padded` at run time
    (onnxruntime's SAME_UPPER refuses a window smaller than its stride): for MaxPool the edge
    repeated (every window holds the edge step it repeats, so its max is unchanged), for
    AveragePool zeros, divided by the share of each window that is real."""
    g = ctx.g
    kernel, strides = (tuple(int(v) for v in a) for a in (layer.pool_size, layer.strides))
    attrs = {"count_include_pad": 0} if op_type == "AveragePool" else {}
    sizes = x.shape[1:1 + len(kernel)]
    x_in, dynamic = x.name, layer.padding == "same" and any(n is None and s > 1 for n, s in zip(sizes, strides))
    if layer.padding == "same" and not dynamic:
        pads = [same_pads(n, k, s) for n, k, s in zip(sizes, kernel, strides)]
        attrs["pads"] = [p[0] for p in pads] + [p[1] for p in pads]
    elif dynamic:
        x_in = same_padded(ctx, layer, x, kernel, strides, "edge" if op_type == "MaxPool" else "constant")

    def pool(v):
        y = g.op(op_type, [g.transpose(v, channels_first(x.rank))], hint=layer.name, kernel_shape=list(kernel),
                 strides=list(strides), **attrs)
        return g.transpose(y, channels_last(x.rank))

    y = pool(x_in)
    if dynamic and op_type == "AveragePool":
        shape = g.op("Concat", [g.dims(x.name, 0, x.rank - 1), g.const(np.array([1], np.int64))], axis=0)
        ones = g.op("ConstantOfShape", [shape], value=onnx.helper.make_tensor("one", onnx.TensorProto.FLOAT, [1], [1]))
        real = pool(same_padded(ctx, layer, Sym(ones, (*x.shape[:-1], 1), x.dtype), kernel, strides))
        y = g.op("Div", [y, real], hint=f"{layer.name}/real_share")
    if strides[0] > 1:
        in_phase(ctx, layer, x, strides[0], y)
    if layer.padding == "valid" and kernel[0] > strides[0]:  # overlapping windows: the first one takes k steps
        shortens(ctx, x, y, ctx.book.rates.get(x.name, 1) * (kernel[0] - 1))
    return y


@reads_past
@converts(L.Conv1D, streaming=STATE)
def conv1d(ctx: Context, layer, args, kwargs, outs):
    x = args[0]
    require_channels_last(ctx, layer)
    kernel = weights_of(layer.kernel)  # [k, in/groups, out]
    bias = weights_of(layer.bias) if layer.use_bias else None
    y = conv_over_time(ctx, layer, x, kernel.transpose(2, 1, 0), bias, int(layer.groups))
    return [keeps_time(ctx, y, apply_activation(ctx, layer, y, layer.activation))]


def depthwise_weight(kernel: np.ndarray) -> np.ndarray:
    """Keras' depthwise kernel [*kernel, in, multiplier] as ONNX's grouped Conv weight [in * multiplier, 1, *kernel]."""
    *k, channels, mult = kernel.shape
    return kernel.transpose(len(k), len(k) + 1, *range(len(k))).reshape(channels * mult, 1, *k)


@reads_past
@converts(L.DepthwiseConv1D, streaming=STATE)
def depthwise_conv1d(ctx: Context, layer, args, kwargs, outs):
    x = args[0]
    require_channels_last(ctx, layer)
    kernel = weights_of(layer.kernel)
    bias = weights_of(layer.bias) if layer.use_bias else None
    y = conv_over_time(ctx, layer, x, depthwise_weight(kernel), bias, kernel.shape[-2])
    return [keeps_time(ctx, y, apply_activation(ctx, layer, y, layer.activation))]


@reads_past
@converts(L.SeparableConv1D, streaming=STATE)
def separable_conv1d(ctx: Context, layer, args, kwargs, outs):
    """A depthwise convolution over time, then a pointwise one (a MatMul per step), bias, activation."""
    g, x = ctx.g, args[0]
    require_channels_last(ctx, layer)
    depthwise = weights_of(layer.depthwise_kernel)
    z = conv_over_time(ctx, layer, x, depthwise_weight(depthwise), None, depthwise.shape[-2])
    y = g.op("MatMul", [z, g.const(weights_of(layer.pointwise_kernel)[0], f"{layer.name}/pointwise")], hint=layer.name)
    if layer.use_bias:
        y = g.op("Add", [y, g.const(weights_of(layer.bias), f"{layer.name}/bias")], hint=layer.name)
    return [keeps_time(ctx, z, apply_activation(ctx, layer, y, layer.activation))]


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
        x = args[0]
        require_channels_last(ctx, layer)
        (k,), (s,) = tuple(layer.pool_size), tuple(layer.strides)
        if ctx.streaming and x.rank >= 3 and (k > 1 or s > 1):
            if k != s:
                _refuse(ctx, layer, f"it pools {k} steps with stride {s}: it streams where pool size and stride are "
                                    "equal (windows that neither overlap nor skip)")
            if layer.padding != "valid":
                _refuse(ctx, layer, "padding='same' shifts its windows by the sequence's length; use padding='valid'")
        return [pool_over_time(ctx, layer, x, op_type)]

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
