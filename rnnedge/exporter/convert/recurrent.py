"""Keras recurrent layers as fused ONNX `LSTM` / `GRU` / `RNN` nodes (one per cell).

Keras -> ONNX weights (layout 0: X is [time, batch, features]): W = kernel.T, R = recurrent_kernel.T,
B = [input bias, recurrent bias]; LSTM gate blocks reordered from Keras' i, f, c, o to ONNX's i, o, f, c;
GRU `reset_after=True` is `linear_before_reset=1` with its two bias rows (see `_cell_weights`).

Masks (any pattern: front or back padding, gaps, fully masked rows). Keras skips a masked step:
the state is carried unchanged and the output is the previous output (zeros before the first
valid step), or zeros with `zero_output_for_mask`. So the RNN sees exactly the valid steps of
each row, in order. With m the mask as 0/1, c = CumSum(m) and lens = c[-1]:

- the valid steps are moved to the front (a stable sort of each row by m: TopK of a key without
  ties, m * T + (T - 1 - t)) and the fused node runs with `sequence_lens = lens`;
- the Keras output at original step t is the compacted output at max(c[t] - 1, 0) where c[t] > 0
  (a reversed node: at c[t] - m[t], where that is < lens), else the previous output of the
  stream (zeros, or the carried h when streaming); with `zero_output_for_mask`, where m[t];
- go_backwards runs the node in reverse over the same compacted steps (lens-1 .. 0: the valid
  steps, last first), so Bidirectional stays one node;
- states: `Where(lens > 0, Y_h, initial state or zeros)` (Keras keeps the initial state of a
  fully masked row; onnxruntime gives zeros there, the ONNX spec nothing).

Every value rebuilt this way is selected with `Where`, so the graph does not rely on what a
runtime writes at steps past `sequence_lens`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from keras import layers as L
from onnx import TensorProto

from rnnedge.exporter.convert import convlstm
from rnnedge.exporter.convert.activations import keras_name, rnn_activation
from rnnedge.exporter.convert.context import Context, StateIO, UnsupportedLayerError
from rnnedge.exporter.convert.graph import Sym
from rnnedge.exporter.convert.layers import merge_directions, weights_of
from rnnedge.exporter.convert.registry import STATE, converts
from rnnedge.exporter.convert.scan import scan_nodes

CELL_OPS = {L.LSTMCell: "LSTM", L.GRUCell: "GRU", L.SimpleRNNCell: "RNN"}
STATE_NAMES = {"LSTM": ("h", "c"), "GRU": ("h",), "RNN": ("h",)}
INT64_MIN, INT64_MAX = np.iinfo(np.int64).min, np.iinfo(np.int64).max


def _cells(ctx: Context, layer) -> list:
    cell = layer.cell
    cells = list(cell.cells) if isinstance(cell, L.StackedRNNCells) else [cell]
    for c in cells:
        if type(c) not in CELL_OPS:
            ctx.fail(layer, f"cell {type(c).__name__} has no fused ONNX op "
                            "(supported: LSTMCell, GRUCell, SimpleRNNCell)")
    return cells


def _n_states(cells) -> int:
    return sum(len(STATE_NAMES[CELL_OPS[type(c)]]) for c in cells)


def _cell_weights(cell):
    """W [G*U, F], R [G*U, U], B [2*G*U] or None, in ONNX gate order."""
    op, units = CELL_OPS[type(cell)], cell.units
    kernel, recurrent = weights_of(cell.kernel), weights_of(cell.recurrent_kernel)
    bias = weights_of(cell.bias) if cell.use_bias else None
    if op == "LSTM":  # Keras i, f, c, o -> ONNX i, o, f, c
        order = np.concatenate([np.arange(b * units, (b + 1) * units) for b in (0, 3, 1, 2)])
        kernel, recurrent = kernel[:, order], recurrent[:, order]
        bias = None if bias is None else np.concatenate([bias[order], np.zeros(4 * units, np.float32)])
    elif op == "GRU":
        if bias is not None:
            bias = bias.reshape(-1) if cell.reset_after else np.concatenate([bias, np.zeros(3 * units, np.float32)])
    elif bias is not None:
        bias = np.concatenate([bias, np.zeros(units, np.float32)])
    return kernel.T, recurrent.T, bias


def _activation_fns(cell) -> list:
    """The cell's Keras activations in the order of the fused node's `activations` attribute."""
    op = CELL_OPS[type(cell)]
    if op == "LSTM":
        return [cell.recurrent_activation, cell.activation, cell.activation]
    if op == "GRU":
        return [cell.recurrent_activation, cell.activation]
    return [cell.activation]


def scan_note(layer) -> str | None:
    """Why a recurrent (or Bidirectional) layer became a Scan: its activations no fused ONNX node
    computes exactly, for the manifest's `notes`; None for a layer whose converter said why itself."""
    subs = [layer.forward_layer, layer.backward_layer] if isinstance(layer, L.Bidirectional) else [layer]
    cells = [c for sub in subs for c in (sub.cell.cells if isinstance(sub.cell, L.StackedRNNCells) else [sub.cell])]
    names = sorted({keras_name(fn) for c in cells if type(c) in CELL_OPS for fn in _activation_fns(c)
                    if rnn_activation(fn) is None})
    if not names:  # no cell of a fused kind (ConvLSTM: convlstm.py notes why)
        return None
    listed = ", ".join(repr(n) for n in names)
    if len(names) == 1:
        return f"activation {listed} has no exact fused ONNX form: exported as an exact Scan"
    return f"activations {listed} have no exact fused ONNX form: exported as an exact Scan"


# ONNX's default activations per direction (onnx/defs/rnn): a node that spells them out is the same
# node to onnxruntime's CPU provider, but QNN refuses the attribute whatever its value.
DEFAULT_ACTIVATIONS = {"LSTM": ["Sigmoid", "Tanh", "Tanh"], "GRU": ["Sigmoid", "Tanh"], "RNN": ["Tanh"]}


def fused_attributes(op: str, units: int, direction: str, acts: list, reset_after: bool = False) -> dict:
    """The fused node's attributes, only those that differ from ONNX's defaults (accelerators such
    as QNN refuse an attribute even when it holds the default value).

    `acts` is (ONNX name, alpha, beta) per activation slot, for every direction in order."""
    attrs: dict = {"hidden_size": units}
    if direction != "forward":
        attrs["direction"] = direction
    names = [a for a, _, _ in acts]
    alphas = [al for _, al, _ in acts if al is not None]
    betas = [be for _, _, be in acts if be is not None]
    if alphas or betas or names != DEFAULT_ACTIVATIONS[op] * (len(names) // len(DEFAULT_ACTIVATIONS[op])):
        attrs["activations"] = names
    if alphas:
        attrs["activation_alpha"] = alphas
    if betas:
        attrs["activation_beta"] = betas
    if reset_after:
        attrs["linear_before_reset"] = 1
    return attrs


def _fused_node(ctx: Context, layer, cells, direction, x_tbf, lens, h0, c0, hint):
    """One ONNX LSTM/GRU/RNN node over 1 cell (forward/reverse) or 2 cells (bidirectional); an
    exact Scan per cell instead where an activation has no fused form (see convert/scan.py).

    Returns (Y [T, D, B, U], Y_h [D, B, U], Y_c [D, B, U] or None).
    """
    g = ctx.g
    op = CELL_OPS[type(cells[0])]
    if any(rnn_activation(fn) is None for c in cells for fn in _activation_fns(c)):
        return scan_nodes(ctx, layer, op, cells, direction, x_tbf, lens, h0, c0, hint, _cell_weights)
    units = cells[0].units
    weights = [_cell_weights(c) for c in cells]
    W = np.stack([w for w, _, _ in weights])
    R = np.stack([r for _, r, _ in weights])
    B = None
    if any(b is not None for _, _, b in weights):
        B = np.stack([b if b is not None else np.zeros(2 * W.shape[1], np.float32) for _, _, b in weights])
    attrs = fused_attributes(op, units, direction, [rnn_activation(fn) for c in cells for fn in _activation_fns(c)],
                             reset_after=op == "GRU" and bool(cells[0].reset_after))
    inputs = [x_tbf, g.const(W, f"{hint}/W"), g.const(R, f"{hint}/R"),
              g.const(B, f"{hint}/B") if B is not None else "", lens or "", h0 or ""]
    if op == "LSTM":
        inputs.append(c0 or "")
    while inputs and not inputs[-1]:
        inputs.pop()
    outs = g.op(op, inputs, hint=hint, outputs=3 if op == "LSTM" else 2, **attrs)
    ctx.fused.setdefault(layer.name, []).append(g.nodes[-1].name)
    return outs[0], outs[1], outs[2] if op == "LSTM" else None


def _check_layer(ctx: Context, layer, x: Sym):
    if x.rank != 3:
        ctx.fail(layer, f"expected a [batch, time, features] input, got rank {x.rank}")
    if x.dtype != "float32":
        ctx.fail(layer, f"expected float32 inputs, got {x.dtype}")
    if getattr(layer, "time_major", False):
        ctx.fail(layer, "time_major=True is not supported")


@dataclass(frozen=True)
class _Mask:
    """A [batch, time] Keras mask in the forms the fused nodes and the rebuilt outputs need."""

    m: str  # bool [B, T]
    mi: str  # int64 [B, T], 1 at valid steps
    c: str  # int64 [B, T], valid steps up to and including t
    n: str  # int64 [B, 1], valid steps per row
    lens: str  # int32 [B], the same as sequence_lens
    src: str  # int64 [B, T, 1], the original step of compacted step j (valid steps first, in order)


def _mask(ctx: Context, layer, mask: Sym | None) -> _Mask | None:
    if mask is None:
        return None
    if mask.rank != 2:
        ctx.fail(layer, f"expected a [batch, time] mask, got rank {mask.rank}")
    g = ctx.g
    ctx.annotate(mask, pad_value=0.0)  # a mask given as a model input: 0 / False marks a masked step
    # nonzero = valid, as Keras
    m = mask.name if mask.dtype == "bool" else g.op("Cast", [mask.name], to=TensorProto.BOOL)
    mi = g.op("Cast", [m], hint="mask_int", to=TensorProto.INT64)
    c = g.op("CumSum", [mi, g.const(np.int64(1))], hint="mask_cumsum")
    n = g.op("Slice", [c, g.const(np.array([-1], np.int64)), g.const(np.array([INT64_MAX], np.int64)),
                       g.const(np.array([1], np.int64))])
    lens = g.op("Cast", [g.squeeze(n, [1])], hint="sequence_lens", to=TensorProto.INT32)
    # Valid steps first, then masked ones, each in time order: TopK of m * T + (T - 1 - t), a key with no ties
    # (ONNX breaks ties by the lower index, QNN's TopK does not).
    steps = g.dims(mi, 1, 2)
    t = g.op("Range", [g.const(np.int64(0)), g.squeeze(steps, [0]), g.const(np.int64(1))])
    key = g.op("Add", [g.op("Mul", [mi, steps]), g.op("Sub", [g.op("Sub", [steps, g.const(np.int64(1))]), t])],
               hint="mask_key")
    _, order = g.op("TopK", [key, steps], hint="mask_order", outputs=2, axis=1, largest=1, sorted=1)
    return _Mask(m, mi, c, n, lens, g.unsqueeze(order, [2]))


def _compact(ctx: Context, x_btf: str, mk: _Mask | None) -> str:
    """[B, T, F] -> [T, B, F] with each row's valid steps first."""
    g = ctx.g
    if mk is not None:
        x_btf = g.op("GatherND", [x_btf, mk.src], hint="compact", batch_dims=1)
    return g.transpose(x_btf, (1, 0, 2))


def _uncompact(ctx: Context, y_btu: str, mk: _Mask, reverse: bool, zero_output: bool, prev: str | None) -> str:
    """Keras' per-step outputs [B, T, U] in original time order from the compacted outputs.
    `prev`: the output before the first valid step ([B, U]), zeros when None."""
    g = ctx.g
    if reverse:  # after the valid steps at and after t: compacted index c - m, valid while < lens
        idx = g.op("Sub", [mk.c, mk.mi])
        valid = mk.m if zero_output else g.op("Less", [idx, mk.n])
    else:  # after the valid steps up to t: compacted index c - 1, valid once c > 0
        idx = g.op("Max", [g.op("Sub", [mk.c, g.const(np.int64(1))]), g.const(np.int64(0))])
        valid = mk.m if zero_output else g.op("Greater", [mk.c, g.const(np.int64(0))])
    picked = g.op("GatherND", [y_btu, g.unsqueeze(idx, [2])], hint="uncompact", batch_dims=1)
    fill = g.unsqueeze(prev, [1]) if prev else g.const(np.float32(0.0))
    return g.op("Where", [g.unsqueeze(valid, [2]), picked, fill])


def _flip_time(ctx: Context, x: str, axis: int) -> str:
    g = ctx.g
    c = lambda v: g.const(np.array([v], np.int64))  # noqa: E731
    return g.op("Slice", [x, c(-1), c(INT64_MIN), c(axis), c(-1)])


def _flat_states(initial_state) -> list:
    if initial_state is None:
        return []
    if isinstance(initial_state, Sym):
        return [initial_state]
    flat = []
    for s in initial_state:
        flat.extend(_flat_states(s))
    return flat


def _state_inputs(ctx: Context, layer, cells, x: Sym) -> list[str]:
    """Graph inputs for the states a stateful or streaming layer carries across calls."""
    names = []
    batch = x.shape[0] if x.shape[0] is not None else "batch"
    for k, cell in enumerate(cells):
        for s in STATE_NAMES[CELL_OPS[type(cell)]]:
            suffix = f"{s}{k}" if len(cells) > 1 else s
            name = ctx.g.fresh(f"{layer.name}/state_in/{suffix}")
            out = ctx.g.fresh(f"{layer.name}/state_out/{suffix}")  # a shared layer carries one state per call
            ctx.g.add_input(name, "float32", [batch, cell.units])
            ctx.book.states.append(StateIO(input=name, output=out, layer=layer.name, shape=(batch, cell.units)))
            names.append(name)
    return names


def _run_cells(ctx: Context, layer, cells, x_tbf, lens, initial, reverse):
    """Chain one fused node per cell. Returns (Y of the last cell [T, B, U], Y_h of the last cell
    [B, U], the flat list of each cell's final states [B, U] in Keras order)."""
    g = ctx.g
    seq, states, k0 = x_tbf, [], 0
    for k, cell in enumerate(cells):
        n = len(STATE_NAMES[CELL_OPS[type(cell)]])
        init = initial[k0:k0 + n] if initial else [None] * n
        k0 += n
        h0 = g.unsqueeze(init[0], [0]) if init[0] else None
        c0 = g.unsqueeze(init[1], [0]) if n == 2 and init[1] else None
        hint = f"{layer.name}/{CELL_OPS[type(cell)]}" + (f"_{k}" if len(cells) > 1 else "")
        Y, Yh, Yc = _fused_node(ctx, layer, [cell], "reverse" if reverse else "forward", seq, lens, h0, c0, hint)
        seq = g.squeeze(Y, [1])
        states.append(g.squeeze(Yh, [0]))
        if Yc is not None:
            states.append(g.squeeze(Yc, [0]))
    last_h = states[-2] if CELL_OPS[type(cells[-1])] == "LSTM" else states[-1]
    return seq, last_h, states


def _keep_initial(ctx: Context, states, initial, mk: _Mask | None):
    """Keras keeps the initial state (zeros if none) of a fully masked row."""
    if mk is None:
        return states
    g = ctx.g
    has_steps = g.unsqueeze(g.op("Greater", [mk.lens, g.const(np.int32(0))]), [1])
    zero = g.const(np.float32(0.0))
    return [g.op("Where", [has_steps, s, i]) for s, i in zip(states, initial or [zero] * len(states))]


def _keras_sequence(ctx: Context, layer, Y_tbu, reverse, mk: _Mask | None, prev=None, original_order=False):
    """Keras' return_sequences output [B, T, U] from the fused node's Y [T, B, U]."""
    g = ctx.g
    y = g.transpose(Y_tbu, (1, 0, 2))
    if mk is not None:
        y = _uncompact(ctx, y, mk, reverse, bool(layer.zero_output_for_mask), prev)
    if reverse and not original_order:
        y = _flip_time(ctx, y, 1)
    return y


def _keras_last(ctx: Context, layer, Yh, reverse, mk: _Mask | None, prev=None):
    """Keras' last output [B, U]: the output at the last step in processing order."""
    if mk is None:
        return Yh
    g = ctx.g
    if layer.zero_output_for_mask:  # zeros if that step is masked
        cond = g.op("Gather", [mk.m, g.const(np.int64(0 if reverse else -1))], axis=1)
        fill = g.const(np.float32(0.0))
    else:  # the output of the last valid step, or the output before any
        cond = g.op("Greater", [mk.lens, g.const(np.int32(0))])
        fill = prev or g.const(np.float32(0.0))
    return g.op("Where", [g.unsqueeze(cond, [1]), Yh, fill])


def _initial(args, kwargs):
    init = kwargs.get("initial_state")
    if init is None and len(args) > 1:
        init = args[1:]
    return _flat_states(init)


@converts(L.LSTM, L.GRU, L.SimpleRNN, L.RNN, recurrent=True, streaming=STATE)
def rnn(ctx: Context, layer, args, kwargs, outs):
    x, mask = args[0], kwargs.get("mask")
    _check_layer(ctx, layer, x)
    cells = _cells(ctx, layer)
    initial = [s.name for s in _initial(args, kwargs)]
    if initial and len(initial) != _n_states(cells):
        ctx.fail(layer, f"expected {_n_states(cells)} initial states, got {len(initial)}")
    carried = layer.stateful or ctx.streaming
    if carried:
        if initial:
            ctx.fail(layer, "its initial state comes from another tensor, so it cannot also carry its state "
                            "across calls (stateful=True or --streaming); export the decoder as its own model "
                            "with the state as an input instead")
        if ctx.streaming and layer.go_backwards:
            ctx.fail(layer, "go_backwards=True cannot stream: it reads the sequence from its end")
        initial = _state_inputs(ctx, layer, cells, x)
    mk = _mask(ctx, layer, mask)
    reverse = bool(layer.go_backwards)
    Y, Yh, states = _run_cells(ctx, layer, cells, _compact(ctx, x.name, mk), mk and mk.lens, initial, reverse)
    # Streamed, the output before this chunk's first valid step is the last valid output of the
    # stream so far: the carried h of the last cell (zeros in a fresh stream), as Keras gives over
    # the whole sequence. A stateful layer is Keras called once per chunk: that starts from zeros.
    streamed = ctx.streaming and not layer.stateful and mk is not None
    prev = initial[-2 if CELL_OPS[type(cells[-1])] == "LSTM" else -1] if streamed else None
    states = _keep_initial(ctx, states, initial, mk)
    if layer.return_sequences:
        result = [_keras_sequence(ctx, layer, Y, reverse, mk, prev)]
    else:
        result = [_keras_last(ctx, layer, Yh, reverse, mk, prev)]
    if carried:
        for io, value in zip(ctx.book.states[-len(states):], states):
            ctx.book.state_outputs[io.output] = value
    if layer.return_state:
        result += states
    return result


def _one_node(fw_cells, bw_cells, fw, bw) -> bool:
    """Can both directions share one ONNX node with direction="bidirectional"?"""
    if len(fw_cells) != 1 or len(bw_cells) != 1 or fw.go_backwards or not bw.go_backwards:
        return False
    a, b = fw_cells[0], bw_cells[0]
    if type(a) is not type(b) or a.units != b.units:
        return False
    return not isinstance(a, L.GRUCell) or bool(a.reset_after) == bool(b.reset_after)


@converts(L.Bidirectional, recurrent=True, streaming=STATE)  # refuses --streaming itself, saying why
def bidirectional(ctx: Context, layer, args, kwargs, outs):
    g, x, mask = ctx.g, args[0], kwargs.get("mask")
    fw, bw = layer.forward_layer, layer.backward_layer
    if isinstance(fw, convlstm.TYPES):  # a Scan of Conv ops per direction
        return convlstm.bidirectional(ctx, layer, args, kwargs)
    why = "its backward direction needs the whole sequence at once"
    if ctx.streaming:  # --allow-loop cannot stream either: no advice to pass it
        ctx.fail_stream(layer, why)
    if fw.stateful or bw.stateful:
        raise UnsupportedLayerError(layer, f"a Bidirectional layer cannot be stateful: {why}",
                                    advice="rebuild it with stateful=False (--allow-loop cannot keep state either)")
    _check_layer(ctx, layer, x)
    fw_cells, bw_cells = _cells(ctx, fw), _cells(ctx, bw)
    initial = [s.name for s in _initial(args, kwargs)]
    n_fw = _n_states(fw_cells)
    if initial and len(initial) != n_fw + _n_states(bw_cells):
        ctx.fail(layer, f"expected {n_fw + _n_states(bw_cells)} initial states, got {len(initial)}")
    init_fw, init_bw = (initial[:n_fw], initial[n_fw:]) if initial else ([], [])
    mk = _mask(ctx, layer, mask)
    x_tbf = _compact(ctx, x.name, mk)

    if _one_node(fw_cells, bw_cells, fw, bw):
        both = lambda i: g.op("Concat", [g.unsqueeze(init_fw[i], [0]), g.unsqueeze(init_bw[i], [0])], axis=0)  # noqa: E731
        h0 = both(0) if initial else None
        c0 = both(1) if initial and len(init_fw) == 2 else None
        Y, Yh, Yc = _fused_node(ctx, layer, [fw_cells[0], bw_cells[0]], "bidirectional", x_tbf, mk and mk.lens, h0, c0,
                                f"{layer.name}/{CELL_OPS[type(fw_cells[0])]}")
        pick = lambda t, i, axis: g.op("Gather", [t, g.const(np.int64(i))], axis=axis)  # noqa: E731
        Y_f, Y_b = pick(Y, 0, 1), pick(Y, 1, 1)
        st_f = [pick(Yh, 0, 0)] + ([pick(Yc, 0, 0)] if Yc else [])
        st_b = [pick(Yh, 1, 0)] + ([pick(Yc, 1, 0)] if Yc else [])
        if layer.return_sequences:
            y_f = _keras_sequence(ctx, fw, Y_f, False, mk)
            y_b = _keras_sequence(ctx, bw, Y_b, True, mk, original_order=True)
        else:
            y_f, y_b = _keras_last(ctx, fw, st_f[0], False, mk), _keras_last(ctx, bw, st_b[0], True, mk)
    else:  # different cells, units or stacks per direction: one node per cell and direction
        def direction(sub, cells, init):
            rev = bool(sub.go_backwards)
            Y, Yh, st = _run_cells(ctx, layer, cells, x_tbf, mk and mk.lens, init, rev)
            if layer.return_sequences:
                return _keras_sequence(ctx, sub, Y, rev, mk), st
            return _keras_last(ctx, sub, Yh, rev, mk), st

        y_f, st_f = direction(fw, fw_cells, init_fw)
        y_b, st_b = direction(bw, bw_cells, init_bw)
        if layer.return_sequences:
            y_b = _flip_time(ctx, y_b, 1)
    st_f, st_b = _keep_initial(ctx, st_f, init_fw, mk), _keep_initial(ctx, st_b, init_bw, mk)

    merged = merge_directions(ctx, layer, y_f, y_b)
    return merged + (st_f + st_b if layer.return_state else [])
