"""Recurrent cells with an activation no fused ONNX node computes exactly (gelu, silu, selu,
softplus, ...), as an ONNX `Scan` over the cell's own math: a drop-in for the fused node.

Same inputs (X [T, B, F], sequence_lens, initial h and c [D, B, U]) and outputs (Y [T, D, B, U],
Y_h and Y_c [D, B, U]) as `recurrent._fused_node`, with the weights in the fused node's gate order.
X·Wᵀ plus the biases for every step is one MatMul before the loop; the body does the recurrent
MatMul, the gates and the activations (`activations.apply`). With sequence_lens, step t of a row
is valid while t < lens; at the other steps the state is carried unchanged and Y is zero, as the
fused nodes write. A reversed direction scans from the last step and writes Y in time order.
"""

from __future__ import annotations

import numpy as np
from onnx import TensorProto

from rnnedge.exporter.convert.activations import apply, keras_name
from rnnedge.exporter.convert.context import Context
from rnnedge.exporter.convert.graph import GraphBuilder


def scan_nodes(ctx: Context, layer, op, cells, direction, x_tbf, lens, h0, c0, hint, weights):
    """One Scan per cell of ONNX type `op` (LSTM, GRU, RNN): 1 cell (forward/reverse) or 2
    (bidirectional, forward first). `weights(cell)` gives (W [G*U, F], R [G*U, U], B [2*G*U] or
    None) in ONNX gate order.

    Returns (Y [T, D, B, U], Y_h [D, B, U], Y_c [D, B, U] or None), like the fused node.
    """
    g = ctx.g
    if direction == "bidirectional":
        split = lambda s: g.op("Split", [s], outputs=2, axis=0) if s else [None, None]  # noqa: E731
        parts = [_scan(ctx, layer, op, c, rev, x_tbf, lens, h, cc, f"{hint}_{name}", weights)
                 for c, rev, h, cc, name in zip(cells, (False, True), split(h0), split(c0), ("fw", "bw"))]
    else:
        parts = [_scan(ctx, layer, op, cells[0], direction == "reverse", x_tbf, lens, h0, c0, hint, weights)]
    if len(parts) == 1:
        return parts[0]
    Y = g.op("Concat", [p[0] for p in parts], axis=1)
    Yh = g.op("Concat", [p[1] for p in parts], axis=0)
    Yc = g.op("Concat", [p[2] for p in parts], axis=0) if parts[0][2] else None
    return Y, Yh, Yc


def _scan(ctx: Context, layer, op, cell, reverse, x_tbf, lens, h0, c0, hint, weights):
    """One direction of one cell as a Scan. Returns (Y [T, 1, B, U], Y_h [1, B, U], Y_c or None)."""
    g = ctx.g
    units = cell.units
    W, R, B = weights(cell)
    gu = W.shape[0]
    Wb, Rb = (B[:gu], B[gu:]) if B is not None else (np.zeros(gu, np.float32), np.zeros(gu, np.float32))
    folded, inner_bias = Wb + Rb, None
    if op == "GRU" and cell.reset_after and B is not None:  # r multiplies (h·Rhᵀ + Rbh): Rbh stays in the body
        folded = Wb + np.concatenate([Rb[:2 * units], np.zeros(units, np.float32)])
        inner_bias = Rb[2 * units:]
    xw = g.op("MatMul", [x_tbf, g.const(W.T.copy(), f"{hint}/W")], hint=f"{hint}/input_projection")
    if B is not None:
        xw = g.op("Add", [xw, g.const(folded, f"{hint}/B")])

    n_states = 2 if op == "LSTM" else 1
    zeros = None
    if h0 is None or (n_states == 2 and c0 is None):
        # Expand of a float initializer, not ConstantOfShape: the fp16 converter retypes initializers,
        # not ConstantOfShape's value attribute
        shape = g.op("Concat", [g.dims(x_tbf, 1, 2), g.const(np.array([units], np.int64))], axis=0)
        zeros = g.op("Expand", [g.const(np.zeros((1, units), np.float32), f"{hint}/zeros"), shape])
    init = [g.squeeze(h0, [0]) if h0 else zeros] + ([g.squeeze(c0, [0]) if c0 else zeros] if n_states == 2 else [])
    scanned = [xw]
    if lens:  # valid[t, b] = t < lens[b], as [T, B, 1]
        steps = g.op("Range", [g.const(np.int64(0)), g.squeeze(g.dims(x_tbf, 0, 1), [0]), g.const(np.int64(1))])
        valid = g.op("Less", [g.unsqueeze(steps, [1]), g.unsqueeze(g.op("Cast", [lens], to=TensorProto.INT64), [0])])
        scanned.append(g.unsqueeze(valid, [2]))

    body = g.body(f"{hint}/body")
    state_in = [body.fresh(f"{hint}/{s}_prev") for s in ("h", "c")[:n_states]]
    xw_t = body.fresh(f"{hint}/xw_t")
    valid_t = body.fresh(f"{hint}/valid_t") if lens else None
    step = {"LSTM": _lstm_step, "GRU": _gru_step, "RNN": _rnn_step}[op]
    act = lambda x, fn, name: apply_activation(ctx, layer, body, x, fn, f"{hint}/{name}")  # noqa: E731
    new = step(body, cell, act, xw_t, state_in, R.T.copy(), inner_bias, hint)
    y = new[0]
    if valid_t:  # an invalid step carries the state and writes zeros
        new = [body.op("Where", [valid_t, n, s]) for n, s in zip(new, state_in)]
        y = body.op("Where", [valid_t, y, body.const(np.float32(0.0))])
    state_out = [body.op("Identity", [n], hint=f"{hint}/{s}") for n, s in zip(new, ("h", "c"))]
    y_out = body.op("Identity", [y], hint=f"{hint}/y")
    graph = body.graph([(s, "float32") for s in state_in] + [(xw_t, "float32")] + ([(valid_t, "bool")] if lens else []),
                       [(s, "float32") for s in state_out] + [(y_out, "float32")])
    outs = g.op("Scan", init + scanned, hint=hint, outputs=n_states + 1, body=graph, num_scan_inputs=len(scanned),
                scan_input_directions=[int(reverse)] * len(scanned), scan_output_directions=[int(reverse)])
    ctx.scans.setdefault(layer.name, []).append(g.nodes[-1].name)
    Y = g.unsqueeze(outs[-1], [1])
    return Y, g.unsqueeze(outs[0], [0]), g.unsqueeze(outs[1], [0]) if n_states == 2 else None


def apply_activation(ctx: Context, layer, body: GraphBuilder, x: str, fn, hint: str) -> str:
    """The Keras activation `fn` on x in the body; refused by layer where rnnedge has no ONNX form for it."""
    y = apply(body, x, fn, hint)
    if y is None:
        ctx.fail(layer, f"activation '{keras_name(fn)}' has no ONNX form in rnnedge (neither a fused node nor a Scan)")
    return y


def _lstm_step(b: GraphBuilder, cell, act, xw, state, Rt, _, hint):
    """Gates i, o, f, c: c' = f*c + i*g(c~), h' = o*h(c'), g = h = the cell's activation."""
    h, c = state
    gates = b.op("Add", [xw, b.op("MatMul", [h, b.const(Rt, f"{hint}/R")])])
    i, o, f, z = b.op("Split", [gates], outputs=4, axis=1)
    rec = cell.recurrent_activation
    i, o, f = act(i, rec, "i"), act(o, rec, "o"), act(f, rec, "f")
    c_new = b.op("Add", [b.op("Mul", [f, c]), b.op("Mul", [i, act(z, cell.activation, "g")])])
    return [b.op("Mul", [o, act(c_new, cell.activation, "h")]), c_new]


def _gru_step(b: GraphBuilder, cell, act, xw, state, Rt, inner_bias, hint):
    """Gates z, r, h: h' = z*h + (1-z)*h~, with h~ = g(x_h + r*(h·Rhᵀ + Rbh)) (reset after)
    or g(x_h + (r*h)·Rhᵀ)."""
    (h,) = state
    units = cell.units
    x_zr, x_h = b.op("Split", [xw, b.const(np.array([2 * units, units], np.int64))], outputs=2, axis=1)
    zr = b.op("Add", [x_zr, b.op("MatMul", [h, b.const(Rt[:, :2 * units].copy(), f"{hint}/R_zr")])])
    z, r = b.op("Split", [zr], outputs=2, axis=1)
    z, r = act(z, cell.recurrent_activation, "z"), act(r, cell.recurrent_activation, "r")
    Rh = b.const(Rt[:, 2 * units:].copy(), f"{hint}/R_h")
    if cell.reset_after:
        inner = b.op("MatMul", [h, Rh])
        if inner_bias is not None:
            inner = b.op("Add", [inner, b.const(inner_bias, f"{hint}/Rb_h")])
        cand = b.op("Add", [x_h, b.op("Mul", [r, inner])])
    else:
        cand = b.op("Add", [x_h, b.op("MatMul", [b.op("Mul", [r, h]), Rh])])
    cand = act(cand, cell.activation, "h_tilde")
    one_minus_z = b.op("Sub", [b.const(np.float32(1.0)), z])
    return [b.op("Add", [b.op("Mul", [z, h]), b.op("Mul", [one_minus_z, cand])])]


def _rnn_step(b: GraphBuilder, cell, act, xw, state, Rt, _, hint):
    """h' = f(x·Wᵀ + h·Rᵀ + b)."""
    (h,) = state
    return [act(b.op("Add", [xw, b.op("MatMul", [h, b.const(Rt, f"{hint}/R")])]), cell.activation, "h")]
