"""ConvLSTM1D/2D/3D as an rnnedge-built ONNX `Scan` of Conv ops: no fused ONNX node has
convolutional gates, and tf2onnx makes them a `Loop`.

The layer's data_format must be channels_last (TensorFlow runs no other on CPU, so no other could be
checked). Inside, values are channels first ([batch, channels, *space]), as ONNX `Conv` takes them. The input
convolution of every step (kernel, strides, dilation, padding 'same' / 'valid' as Keras, bias) is one
Conv over [time * batch, C, *space] before the Scan; the body adds the recurrent convolution of h
('same', stride 1: Keras' `recurrent_conv`), splits the gates in Keras' order i, f, c, o, applies the
activations (`scan.apply_activation`: Keras 2's hard_sigmoid of a rebuilt tf_keras file included)
and carries h and c [batch, filters, *space']. go_backwards reverses the steps before the Scan (Keras
returns the sequence in processing order). States, given (`initial_state`), carried (`stateful`) or
streamed (`--streaming`), are in Keras' layout, [batch, *space', filters] (channels_last).
A [batch, time] mask (an explicit `mask=` input: Keras' masking layers make none for frames) is
scanned beside the steps: at a masked step h and c are carried unchanged and the output is the
previous output (zeros before the first valid step, or always zeros with `zero_output_for_mask`), as
Keras computes it; a third carried value holds that previous output. Streamed, it starts from the
carried h (the last valid output of the stream so far), as over the whole sequence.
"""

from __future__ import annotations

import numpy as np
from keras import layers as L
from onnx import TensorProto

from rnnedge.exporter.convert.context import Context, StateIO
from rnnedge.exporter.convert.graph import Sym
from rnnedge.exporter.convert.layers import merge_directions, weights_of
from rnnedge.exporter.convert.registry import STATE, converts
from rnnedge.exporter.convert.scan import apply_activation

INT64_MIN = np.iinfo(np.int64).min


def scan_note(layer) -> str:
    """Why the layer became a Scan, for the manifest's `notes` (the export line quotes the type)."""
    return (f"layer type '{type(layer).__name__}' has no fused ONNX form (its gates are convolutions): "
            "exported as an exact Scan of Conv ops")


def _conv_geometry(cell, space: tuple) -> tuple[list[int], list[int]]:
    """(output space, ONNX pads [begins..., ends...]) of the cell's input convolution on `space`,
    as TensorFlow pads 'same' (the smaller half first)."""
    out, begins, ends = [], [], []
    for n, k, s, d in zip(space, cell.kernel_size, cell.strides, cell.dilation_rate):
        span = d * (k - 1) + 1
        if cell.padding == "same":
            o = -(-n // s)
            total = max((o - 1) * s + span - n, 0)
            begins.append(total // 2)
            ends.append(total - total // 2)
        else:
            o = (n - span) // s + 1
            begins.append(0)
            ends.append(0)
        out.append(o)
    return out, begins + ends


def _check(ctx: Context, layer, x: Sym, mask: Sym | None = None):
    cell = layer.cell
    if x.rank != cell.rank + 3:
        ctx.fail(layer, f"expected a [batch, time, {cell.rank} spatial axes, channels] input, got rank {x.rank}")
    if x.dtype != "float32":
        ctx.fail(layer, f"expected float32 inputs, got {x.dtype}")
    if mask is not None and mask.rank != 2:
        ctx.fail(layer, f"expected a [batch, time] mask, got rank {mask.rank} (a masking layer over frames masks "
                        "single pixels, which a ConvLSTM cannot skip); pass a [batch, time] mask= instead")
    if cell.data_format != "channels_last":
        ctx.fail(layer, f"data_format={cell.data_format!r} is not supported (TensorFlow cannot run it on CPU to check "
                        "the export): rebuild the layer with data_format='channels_last'")
    space = x.shape[2:-1]
    if any(d is None for d in space):
        ctx.fail(layer, f"expected fixed spatial sizes, got {space}")
    out_space, _ = _conv_geometry(cell, tuple(space))
    if min(out_space) < 1:
        ctx.fail(layer, f"its kernel does not fit the input's spatial size {tuple(space)} with padding 'valid'")
    return tuple(int(d) for d in space), out_space


def _initial(ctx: Context, layer, args, kwargs, n: int) -> list[str]:
    """The `n` initial states a call gives (h and c per direction), or []."""
    init = kwargs.get("initial_state")
    if init is None and len(args) > 1:
        init = args[1:]
    flat = []
    stack = [init] if init is not None else []
    while stack:
        s = stack.pop(0)
        if isinstance(s, Sym):
            flat.append(s.name)
        elif s is not None:
            stack[:0] = list(s)
    if flat and len(flat) != n:
        ctx.fail(layer, f"expected {n} initial states (h and c per direction), got {len(flat)}")
    return flat


def _state_inputs(ctx: Context, layer, x: Sym, out_space: list[int]) -> list[str]:
    """Graph inputs (Keras layout) for h and c, carried across calls (stateful or --streaming)."""
    names = []
    batch = x.shape[0] if x.shape[0] is not None else "batch"
    filters = layer.cell.filters
    shape = (batch, *out_space, filters)
    for s in ("h", "c"):
        name = ctx.g.fresh(f"{layer.name}/state_in/{s}")
        out = ctx.g.fresh(f"{layer.name}/state_out/{s}")
        ctx.g.add_input(name, "float32", list(shape))
        ctx.book.states.append(StateIO(input=name, output=out, layer=layer.name, shape=shape))
        names.append(name)
    return names


TYPES = (L.ConvLSTM1D, L.ConvLSTM2D, L.ConvLSTM3D)


@converts(*TYPES, recurrent=True, streaming=STATE)
def conv_lstm(ctx: Context, layer, args, kwargs, outs):
    x = args[0]
    _, out_space = _check(ctx, layer, x, kwargs.get("mask"))
    initial = _initial(ctx, layer, args, kwargs, 2)
    carried = layer.stateful or ctx.streaming
    if carried:
        if initial:
            ctx.fail(layer, "its initial state comes from another tensor, so it cannot also carry its state "
                            "across calls (stateful=True or --streaming)")
        if ctx.streaming and layer.go_backwards:
            ctx.fail_stream(layer, "go_backwards=True reads the sequence from its end")
        initial = _state_inputs(ctx, layer, x, out_space)
    # streamed, the output before a chunk's first valid step is the stream's last one: the carried h
    prev = initial[0] if ctx.streaming and not layer.stateful else None
    y, h, c = _run(ctx, layer, x, initial, owner=layer, mask=_mask(ctx, kwargs.get("mask")), prev=prev)
    if carried:
        for io, value in zip(ctx.book.states[-2:], (h, c)):
            ctx.book.state_outputs[io.output] = value
    return [y, h, c] if layer.return_state else [y]


def bidirectional(ctx: Context, layer, args, kwargs):
    """Bidirectional around a ConvLSTM layer (recurrent.bidirectional hands it here): one Scan per
    direction, merged as Keras merges them (the backward sequence back in time order)."""
    g, x = ctx.g, args[0]
    fw, bw = layer.forward_layer, layer.backward_layer
    if ctx.streaming or fw.stateful or bw.stateful:
        ctx.fail(layer, "a Bidirectional layer cannot stream or be stateful: its backward direction needs the "
                        "whole sequence at once")
    _check(ctx, fw, x, kwargs.get("mask"))
    _check(ctx, bw, x, None)
    initial = _initial(ctx, layer, args, kwargs, 4)
    mask = _mask(ctx, kwargs.get("mask"))
    y_f, h_f, c_f = _run(ctx, fw, x, initial[:2], owner=layer, mask=mask)
    y_b, h_b, c_b = _run(ctx, bw, x, initial[2:], owner=layer, mask=mask)
    if layer.return_sequences:
        c = lambda v: g.const(np.array([v], np.int64))  # noqa: E731
        y_b = g.op("Slice", [y_b, c(-1), c(INT64_MIN), c(1), c(-1)], hint=f"{layer.name}/backward_in_time_order")
    merged = merge_directions(ctx, layer, y_f, y_b)
    return merged + ([h_f, c_f, h_b, c_b] if layer.return_state else [])


def _mask(ctx: Context, mask: Sym | None) -> str | None:
    """A [batch, time] Keras mask as bool (nonzero: a valid step), or None."""
    if mask is None:
        return None
    ctx.annotate(mask, pad_value=0.0)  # a mask given as a model input: 0 / False marks a masked step
    return mask.name if mask.dtype == "bool" else ctx.g.op("Cast", [mask.name], to=TensorProto.BOOL)


def _run(ctx: Context, layer, x: Sym, initial: list[str], owner, mask: str | None = None,
         prev: str | None = None) -> tuple[str, str, str]:
    """The ConvLSTM `layer` over x from `initial` h and c (Keras layout; zeros when empty), its Scan
    recorded under `owner` (the layer, or the Bidirectional around it); `mask` bool [B, T] or None;
    `prev` the output before the first step (Keras layout; zeros when None). Returns (Keras' output:
    the sequence or the last output, h, c)."""
    g, cell = ctx.g, layer.cell
    space, out_space = _check(ctx, layer, x, None)
    rank, filters = cell.rank, cell.filters
    to_first = [0, rank + 1, *range(1, rank + 1)]  # [N, *S, C] -> [N, C, *S]
    to_last = [0, *range(2, rank + 2), 1]

    # the input convolution of every step, one Conv over [T*B, C, *S], then [T, B, 4F, *S']
    x_tb = g.transpose(x.name, [1, 0, *range(2, rank + 3)])
    flat = g.transpose(g.op("Reshape", [x_tb, g.const(np.array([-1, *space, x.shape[-1]], np.int64))]), to_first)
    kernel = weights_of(cell.kernel)  # [*k, C, 4F]
    W = np.ascontiguousarray(kernel.transpose(rank + 1, rank, *range(rank)))
    _, pads = _conv_geometry(cell, space)
    conv_inputs = [flat, g.const(W, f"{layer.name}/W")]
    if cell.use_bias:
        conv_inputs.append(g.const(weights_of(cell.bias), f"{layer.name}/B"))
    xw = g.op("Conv", conv_inputs, hint=f"{layer.name}/input_conv", kernel_shape=list(cell.kernel_size),
              strides=list(cell.strides), dilations=list(cell.dilation_rate), pads=pads)
    xw = g.op("Reshape", [xw, g.op("Concat", [g.dims(x_tb, 0, 2), g.const(np.array([4 * filters, *out_space],
                                                                                     np.int64))], axis=0)])
    scanned = [xw]
    if mask is not None:  # valid [T, B, 1, *1]: broadcast over filters and space in the body
        scanned.append(g.unsqueeze(g.transpose(mask, [1, 0]), list(range(2, rank + 3))))
    if layer.go_backwards:
        c = lambda v: g.const(np.array([v], np.int64))  # noqa: E731
        scanned = [g.op("Slice", [v, c(-1), c(INT64_MIN), c(0), c(-1)], hint=f"{layer.name}/reverse") for v in scanned]

    zeros = None
    if not initial or (mask is not None and prev is None):
        shape = g.op("Concat", [g.dims(x.name, 0, 1), g.const(np.array([filters, *out_space], np.int64))], axis=0)
        zeros = g.op("Expand", [g.const(np.zeros((1, filters, *out_space), np.float32), f"{layer.name}/zeros"), shape])
    init = [g.transpose(s, to_first) for s in initial] if initial else [zeros, zeros]
    if mask is not None:
        init.append(g.transpose(prev, to_first) if prev else zeros)

    h, c, *last, Y = _scan(ctx, layer, init, scanned)
    ctx.scans.setdefault(owner.name, []).append(g.nodes[-1].name)
    ctx.note(owner, scan_note(layer))
    h, c = g.transpose(h, to_last), g.transpose(c, to_last)
    if layer.return_sequences:
        y = g.transpose(Y, [1, 0, *range(3, rank + 3), 2])
    else:  # Keras' last output: the output at the last step (h, where no step is masked)
        y = g.transpose(last[0], to_last) if last else h
    return y, h, c


def _scan(ctx: Context, layer, init: list[str], scanned: list[str]) -> list[str]:
    """The Scan over xw [T, B, 4F, *S'] (and valid [T, B, 1, *1] where masked) from h and c [B, F, *S']
    (and the previous output, where masked): [h, c, (last output,) Y [T, B, F, *S']]."""
    g, cell = ctx.g, layer.cell
    hint, filters = f"{layer.name}/ConvLSTM", cell.filters
    body = g.body(f"{hint}/body")
    h, c, xw_t = (body.fresh(f"{hint}/{s}") for s in ("h_prev", "c_prev", "xw_t"))
    masked = len(scanned) == 2
    prev, valid = (body.fresh(f"{hint}/{s}") for s in ("y_prev", "valid_t")) if masked else (None, None)
    R = weights_of(cell.recurrent_kernel)  # [*k, F, 4F]
    R = np.ascontiguousarray(R.transpose(cell.rank + 1, cell.rank, *range(cell.rank)))
    pads = [(k - 1) // 2 for k in cell.kernel_size] + [k - 1 - (k - 1) // 2 for k in cell.kernel_size]
    rec = body.op("Conv", [h, body.const(R, f"{hint}/R")], hint=f"{hint}/recurrent_conv",
                  kernel_shape=list(cell.kernel_size), pads=pads)
    gates = body.op("Add", [xw_t, rec])
    i, f, z, o = body.op("Split", [gates, body.const(np.array([filters] * 4, np.int64))], outputs=4, axis=1)
    act = lambda v, fn, name: apply_activation(ctx, layer, body, v, fn, f"{hint}/{name}")  # noqa: E731
    rec_act = cell.recurrent_activation
    i, f, o = act(i, rec_act, "i"), act(f, rec_act, "f"), act(o, rec_act, "o")
    c_new = body.op("Add", [body.op("Mul", [f, c]), body.op("Mul", [i, act(z, cell.activation, "g")])],
                    hint=f"{hint}/c")
    h_new = body.op("Mul", [o, act(c_new, cell.activation, "h")], hint=f"{hint}/h")
    if not masked:
        y = body.op("Identity", [h_new], hint=f"{hint}/y")
        graph = body.graph([(n, "float32") for n in (h, c, xw_t)], [(n, "float32") for n in (h_new, c_new, y)])
        return g.op("Scan", [*init, *scanned], hint=hint, outputs=3, body=graph, num_scan_inputs=1)
    # a masked step carries h and c, and outputs the previous output (zeros with zero_output_for_mask)
    h_new, c_new = body.op("Where", [valid, h_new, h]), body.op("Where", [valid, c_new, c])
    fill = body.const(np.float32(0.0)) if layer.zero_output_for_mask else prev
    y = body.op("Where", [valid, h_new, fill], hint=f"{hint}/y")
    outs = [body.op("Identity", [v], hint=f"{hint}/{name}")
            for v, name in ((h_new, "h"), (c_new, "c"), (y, "y_last"), (y, "y"))]
    graph = body.graph([(n, "float32") for n in (h, c, prev, xw_t)] + [(valid, "bool")],
                       [(n, "float32") for n in outs])
    return g.op("Scan", [*init, *scanned], hint=hint, outputs=4, body=graph, num_scan_inputs=2)

