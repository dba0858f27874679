"""Layers over (time, frequency) frames [batch, time, freq, channels], as keyword spotters build
their front ends (kws_streaming's CRNN and DS-CNN): Conv2D, DepthwiseConv2D, SeparableConv2D,
MaxPooling2D, AveragePooling2D, ZeroPadding2D; and Permute.

Whole sequences, as temporal.py converts the layers over time (`conv_over_time`, `pool_over_time`):
'same' and 'valid' padding, strides and dilations in time, pools of any size and stride, with a
time axis of any length; strides and the steps 'valid' windows consume are recorded for the sample
cases and the runtime's minimum length. A Permute that moves time off axis 1 says so
(`ctx.book.time_axis`), so windows over the axis it put there record nothing.

Streamed, time runs as temporal.py streams it: a ZeroPadding2D's top rows are `past` kept frames (a
state `[batch, past, freq, channels]`), read by the 'valid' convolution after it, which reaches back
exactly those frames; a stride in time (or a pool whose size equals its stride) keeps chunks in
phase. Frequency is whole in every frame, so any padding over it ('same', or a ZeroPadding2D's
left and right) is exact. What looks ahead in time is refused, naming how far and the padding
Keras 3 takes instead.
"""

from __future__ import annotations

import numpy as np
from keras import layers as L

from rnnedge.exporter.convert.context import Context
from rnnedge.exporter.convert.graph import Sym
from rnnedge.exporter.convert.layers import apply_activation, require_channels_last, weights_of
from rnnedge.exporter.convert.registry import STATE, converts
from rnnedge.exporter.convert.temporal import (
    conv_over_time,
    depthwise_weight,
    keeps_time,
    padded,
    past_frames,
    pool_over_time,
    reads_past,
    same_pads,
)


def _pad_hint(layer, x: Sym) -> str:
    """The Keras layer that pads the past in front of `layer` (for the advice of a refusal)."""
    f = (0, 0)
    if layer.padding == "same" and x.shape[2] is not None:
        f = tuple(same_pads(int(x.shape[2]), int(layer.kernel_size[1]), int(layer.strides[1]),
                            int(layer.dilation_rate[1])))
    return "ZeroPadding2D((({past}, 0), " + f"({f[0]}, {f[1]})))"


def _conv2d(ctx: Context, layer, x: Sym, weight: np.ndarray, bias, group: int) -> str:
    """ONNX Conv over (time, frequency) on [B, T, F, C] (weight [out, in/group, kt, kf]); [B, T', F', out]."""
    require_channels_last(ctx, layer)
    return conv_over_time(ctx, layer, x, weight, bias, group, _pad_hint(layer, x))


@reads_past
@converts(L.Conv2D, streaming=STATE)
def conv2d(ctx: Context, layer, args, kwargs, outs):
    kernel = weights_of(layer.kernel)  # [kt, kf, in/groups, out]
    bias = weights_of(layer.bias) if layer.use_bias else None
    y = _conv2d(ctx, layer, args[0], kernel.transpose(3, 2, 0, 1), bias, int(layer.groups))
    return [keeps_time(ctx, y, apply_activation(ctx, layer, y, layer.activation))]


@reads_past
@converts(L.DepthwiseConv2D, streaming=STATE)
def depthwise_conv2d(ctx: Context, layer, args, kwargs, outs):
    kernel = weights_of(layer.kernel)
    bias = weights_of(layer.bias) if layer.use_bias else None
    y = _conv2d(ctx, layer, args[0], depthwise_weight(kernel), bias, kernel.shape[2])
    return [keeps_time(ctx, y, apply_activation(ctx, layer, y, layer.activation))]


@reads_past
@converts(L.SeparableConv2D, streaming=STATE)
def separable_conv2d(ctx: Context, layer, args, kwargs, outs):
    """A depthwise convolution over (time, frequency), then a pointwise one (a MatMul per frame)."""
    g = ctx.g
    depthwise = weights_of(layer.depthwise_kernel)
    z = _conv2d(ctx, layer, args[0], depthwise_weight(depthwise), None, depthwise.shape[2])
    y = g.op("MatMul", [z, g.const(weights_of(layer.pointwise_kernel)[0, 0], f"{layer.name}/pointwise")],
             hint=layer.name)
    if layer.use_bias:
        y = g.op("Add", [y, g.const(weights_of(layer.bias), f"{layer.name}/bias")], hint=layer.name)
    return [keeps_time(ctx, z, apply_activation(ctx, layer, y, layer.activation))]


@converts(L.ZeroPadding2D, streaming=STATE)
def zero_padding2d(ctx: Context, layer, args, kwargs, outs):
    """One Pad over time and frequency; streamed, frequency padding on every frame (Pad) and the top
    rows (the past) as kept frames."""
    g, x = ctx.g, args[0]
    require_channels_last(ctx, layer)
    (top, bottom), (left, right) = ((int(a), int(b)) for a, b in layer.padding)
    if not ctx.streaming:
        pads = g.const(np.array([0, top, left, 0, 0, bottom, right, 0], np.int64), f"{layer.name}/pads")
        y = g.op("Pad", [x.name, pads], hint=layer.name, mode="constant")
        padded(ctx, x, y, top + bottom)
        return [y]
    if bottom:
        ctx.fail_stream(layer, f"it pads {bottom} step(s) at the end of time, so what follows looks {bottom} step(s) "
                               f"ahead; pad the past only: ZeroPadding2D((({top + bottom}, 0), ({left}, {right})))")
    y = x.name
    if left or right:
        pads = g.const(np.array([0, 0, left, 0, 0, 0, right, 0], np.int64), f"{layer.name}/pads")
        y = g.op("Pad", [x.name, pads], hint=layer.name, mode="constant")
    if not top:
        return [y]
    freq = None if x.shape[2] is None else int(x.shape[2]) + left + right
    full = past_frames(ctx, layer, Sym(y, (x.shape[0], x.shape[1], freq, x.shape[3]), x.dtype), top)
    ctx.book.overlaps[full] = top  # read by the next convolution ('valid', reaching exactly `top` back)
    return [full]


def _pool2d(op_type, keras_type):
    @converts(keras_type, streaming=STATE)
    def convert(ctx: Context, layer, args, kwargs, outs):
        x = args[0]
        require_channels_last(ctx, layer)
        (kt, kf), (st, sf) = (tuple(int(v) for v in a) for a in (layer.pool_size, layer.strides))
        if ctx.streaming and kt != st:
            ctx.fail_stream(layer, f"it pools {kt} steps with stride {st} over time: its windows "
                                   f"{'overlap, so it looks ' + str(kt - st) + ' step(s) ahead' if kt > st else 'skip'}"
                                   f"; use pool_size[0] == strides[0] (e.g. ({st}, {kf}) with strides ({st}, {sf}))")
        if ctx.streaming and layer.padding == "same" and kt > 1:
            ctx.fail_stream(layer, "padding='same' shifts its windows in time by the sequence's length; use "
                                   "padding='valid'")
        if ctx.streaming and layer.padding == "same" and sf > 1 and x.shape[2] is None:
            ctx.fail_stream(layer, "padding='same' over a frequency axis of unknown size is not one rnnedge streams")
        return [pool_over_time(ctx, layer, x, op_type)]

    return convert


_pool2d("MaxPool", L.MaxPooling2D)
_pool2d("AveragePool", L.AveragePooling2D)


def _permute_stream(layer, x) -> str | None:
    dims = [int(d) for d in layer.dims]
    if dims[0] == 1:
        return None
    return f"it moves the time axis to axis {dims.index(1) + 1}, so a step's output mixes the steps of the whole " \
           "sequence (it looks ahead to the sequence's end); keep time first: Permute((1, ...))"


@converts(L.Permute, streaming=_permute_stream)
def permute(ctx: Context, layer, args, kwargs, outs):
    """A Transpose; where the time axis ends up is recorded (axis 1 after it, or which one)."""
    x = args[0]
    y = ctx.g.transpose(x.name, [0, *(int(d) for d in layer.dims)])
    time = ctx.book.time_axis.get(x.name, 1)
    ctx.book.time_axis[y] = None if time is None else [0, *(int(d) for d in layer.dims)].index(time)
    return [y]
