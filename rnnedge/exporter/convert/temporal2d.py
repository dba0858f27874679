"""Layers over (time, frequency) frames [batch, time, freq, channels], as keyword spotters build
their front ends (kws_streaming's CRNN and DS-CNN): Conv2D, DepthwiseConv2D, SeparableConv2D,
MaxPooling2D, AveragePooling2D, ZeroPadding2D; and Permute. Streaming only (registry rule 6: a
whole-sequence export gives them to tf2onnx).

Time streams as temporal.py streams it: a ZeroPadding2D's top rows are `past` kept frames (a state
`[batch, past, freq, channels]`), read by the 'valid' convolution after it, which reaches back
exactly those frames; a stride in time (or a pool whose size equals its stride) keeps chunks in
phase. Frequency is whole in every frame, so any padding over it ('same', or a ZeroPadding2D's
left and right) is exact. What looks ahead in time is refused, naming how far and the padding
Keras 3 takes instead.
"""

from __future__ import annotations

import math

import numpy as np
from keras import layers as L

from rnnedge.exporter.convert.context import Context
from rnnedge.exporter.convert.graph import Sym
from rnnedge.exporter.convert.layers import apply_activation, require_channels_last, weights_of
from rnnedge.exporter.convert.registry import STATE, converts
from rnnedge.exporter.convert.temporal import conv_input, in_phase, past_frames, reads_past


def _same_pads(size: int | None, k: int, s: int, d: int) -> list[int]:
    """TensorFlow's 'same' padding of one axis of static `size` (the extra one at the end)."""
    total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
    return [total // 2, total - total // 2]


def _freq_pads(ctx: Context, layer, x: Sym, padding: str, k: int, s: int, d: int) -> list[int]:
    if padding == "valid":
        return [0, 0]
    if x.shape[2] is None:
        ctx.fail_stream(layer, "padding='same' over a frequency axis of unknown size is not one rnnedge streams")
    return _same_pads(int(x.shape[2]), k, s, d)


def _pad_hint(padding: str, freq: list[int]) -> str:
    f = tuple(freq) if padding == "same" else (0, 0)
    return "ZeroPadding2D((({past}, 0), " + f"({f[0]}, {f[1]})))"


def _conv2d(ctx: Context, layer, x: Sym, weight: np.ndarray, bias, group: int) -> str:
    """ONNX Conv over (time, frequency) on [B, T, F, C] (weight [out, in/group, kt, kf]); [B, T', F', out]."""
    g = ctx.g
    require_channels_last(ctx, layer)
    (kt, kf), (st, sf), (dt, df) = (tuple(int(v) for v in a) for a in (layer.kernel_size, layer.strides,
                                                                       layer.dilation_rate))
    past = dt * (kt - 1)
    freq = _freq_pads(ctx, layer, x, layer.padding, kf, sf, df)
    time_padding = "same" if layer.padding == "same" and past else "valid" if layer.padding == "same" else \
        layer.padding
    x_in, _ = conv_input(ctx, layer, x, time_padding, past, st, _pad_hint(layer.padding, freq))
    inputs = [g.transpose(x_in, (0, 3, 1, 2)), g.const(weight, f"{layer.name}/kernel")]
    if bias is not None:
        inputs.append(g.const(bias, f"{layer.name}/bias"))
    y = g.op("Conv", inputs, hint=layer.name, kernel_shape=[kt, kf], strides=[st, sf], dilations=[dt, df],
             pads=[0, freq[0], 0, freq[1]], group=group)
    y = g.transpose(y, (0, 2, 3, 1))
    if st > 1:
        in_phase(ctx, layer, x, st, y)
    return y


def _depthwise_weight(kernel: np.ndarray) -> np.ndarray:
    """Keras' depthwise kernel [kt, kf, in, multiplier] as ONNX's grouped Conv weight [in * mult, 1, kt, kf]."""
    kt, kf, channels, mult = kernel.shape
    return kernel.transpose(2, 3, 0, 1).reshape(channels * mult, 1, kt, kf)


@reads_past
@converts(L.Conv2D, streaming=STATE, streaming_only=True)
def conv2d(ctx: Context, layer, args, kwargs, outs):
    kernel = weights_of(layer.kernel)  # [kt, kf, in/groups, out]
    bias = weights_of(layer.bias) if layer.use_bias else None
    y = _conv2d(ctx, layer, args[0], kernel.transpose(3, 2, 0, 1), bias, int(layer.groups))
    return [apply_activation(ctx, layer, y, layer.activation)]


@reads_past
@converts(L.DepthwiseConv2D, streaming=STATE, streaming_only=True)
def depthwise_conv2d(ctx: Context, layer, args, kwargs, outs):
    kernel = weights_of(layer.kernel)
    bias = weights_of(layer.bias) if layer.use_bias else None
    y = _conv2d(ctx, layer, args[0], _depthwise_weight(kernel), bias, kernel.shape[2])
    return [apply_activation(ctx, layer, y, layer.activation)]


@reads_past
@converts(L.SeparableConv2D, streaming=STATE, streaming_only=True)
def separable_conv2d(ctx: Context, layer, args, kwargs, outs):
    """A depthwise convolution over (time, frequency), then a pointwise one (a MatMul per frame)."""
    g = ctx.g
    depthwise = weights_of(layer.depthwise_kernel)
    y = _conv2d(ctx, layer, args[0], _depthwise_weight(depthwise), None, depthwise.shape[2])
    y = g.op("MatMul", [y, g.const(weights_of(layer.pointwise_kernel)[0, 0], f"{layer.name}/pointwise")],
             hint=layer.name)
    if layer.use_bias:
        y = g.op("Add", [y, g.const(weights_of(layer.bias), f"{layer.name}/bias")], hint=layer.name)
    return [apply_activation(ctx, layer, y, layer.activation)]


@converts(L.ZeroPadding2D, streaming=STATE, streaming_only=True)
def zero_padding2d(ctx: Context, layer, args, kwargs, outs):
    """Frequency padding on every frame (Pad); the top rows (the past) as kept frames."""
    g, x = ctx.g, args[0]
    require_channels_last(ctx, layer)
    (top, bottom), (left, right) = ((int(a), int(b)) for a, b in layer.padding)
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
    @converts(keras_type, streaming=STATE, streaming_only=True)
    def convert(ctx: Context, layer, args, kwargs, outs):
        g, x = ctx.g, args[0]
        require_channels_last(ctx, layer)
        (kt, kf), (st, sf) = (tuple(int(v) for v in a) for a in (layer.pool_size, layer.strides))
        if kt != st:
            ctx.fail_stream(layer, f"it pools {kt} steps with stride {st} over time: its windows "
                                   f"{'overlap, so it looks ' + str(kt - st) + ' step(s) ahead' if kt > st else 'skip'}"
                                   f"; use pool_size[0] == strides[0] (e.g. ({st}, {kf}) with strides ({st}, {sf}))")
        if layer.padding == "same" and kt > 1:
            ctx.fail_stream(layer, "padding='same' shifts its windows in time by the sequence's length; use "
                                   "padding='valid'")
        freq = _freq_pads(ctx, layer, x, layer.padding, kf, sf, 1)
        extra = {"count_include_pad": 0} if op_type == "AveragePool" else {}
        y = g.op(op_type, [g.transpose(x.name, (0, 3, 1, 2))], hint=layer.name, kernel_shape=[kt, kf],
                 strides=[st, sf], pads=[0, freq[0], 0, freq[1]], **extra)
        y = g.transpose(y, (0, 2, 3, 1))
        if st > 1:
            in_phase(ctx, layer, x, st, y)
        return [y]

    return convert


_pool2d("MaxPool", L.MaxPooling2D)
_pool2d("AveragePool", L.AveragePooling2D)


def _permute_stream(layer, x) -> str | None:
    dims = [int(d) for d in layer.dims]
    if dims[0] == 1:
        return None
    return f"it moves the time axis to axis {dims.index(1) + 1}, so a step's output mixes the steps of the whole " \
           "sequence (it looks ahead to the sequence's end); keep time first: Permute((1, ...))"


@converts(L.Permute, streaming=_permute_stream, streaming_only=True)
def permute(ctx: Context, layer, args, kwargs, outs):
    return [ctx.g.transpose(args[0].name, [0, *(int(d) for d in layer.dims)])]
