"""Keras' truth for an export: random cases at several batch sizes and lengths (masked rows of
every kind), Keras' outputs for them (states of stateful layers included), the zoo's real rows."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np

from rnnedge.errors import RnnEdgeError
from rnnedge.exporter.convert import functional_graph, own_time_axes, recurrent_layers, share_time
from rnnedge.manifest import TensorSpec, is_time_axis
from rnnedge.samples import sample, sized

BATCHES = (1, 3, 2)  # batch sizes tried where the batch axis is dynamic
LENGTHS = (7, 16, 1)  # sequence lengths tried where a time axis is dynamic
LONG_STEPS = 500  # every export with a dynamic time axis is also checked on one sequence this long
ZOO_GOLDEN_ROWS = 16  # rows of the zoo's real test data stored in golden.npz
DATA_ROWS = 8  # at most this many of the user's --data sequences become golden cases (evenly spaced)
ROW_KINDS = ("gaps", "full", "empty", "front", "back")


def _keep_row(kind: str, steps: int, rng: np.random.Generator) -> np.ndarray:
    """Which steps of one row are real (not padding)."""
    keep = np.ones(steps, bool)
    if kind == "empty":
        keep[:] = False
    elif kind in ("front", "back") and steps > 1:  # keras.utils.pad_sequences pads at the front by default
        real = int(rng.integers(1, steps))
        if kind == "front":
            keep[: steps - real] = False
        else:
            keep[real:] = False
    elif kind == "gaps":
        keep = rng.random(steps) < 0.6
        if steps >= 2:
            keep[:2] = False, True  # padding first, then a real step (a gap after it below)
        if steps >= 4:
            keep[2:4] = False, True
    return keep


def random_cases(inputs: list[TensorSpec], seed: int = 0, random_states: bool = True,
                 time_stride: int = 1, min_steps: int = 0, long: int | None = None) -> list[tuple[str, dict]]:
    """Random inputs at several batch sizes and sequence lengths, and one sequence of `long` steps
    where a time axis is dynamic. Inputs that carry a mask (or are one) get rows of each kind in
    ROW_KINDS in turn: padding at the front, at the back, in gaps, a full row and a fully padded
    one. State inputs are zero in the first case (a fresh stream), random in the others if
    `random_states`. Lengths are multiplied by `time_stride` (the long one rounded up to a multiple
    of it), plus `min_steps` (rounded up to a multiple of it)."""
    rng = np.random.default_rng(seed)
    time_axes = sorted({d for s in inputs for d in s.shape[1:] if isinstance(d, str)})
    fixed_batch = next((s.shape[0] for s in inputs if isinstance(s.shape[0], int)), None)  # stateful models
    padded = next((s for s in inputs if s.pad_value is not None and len(s.shape) >= 2), None)
    cases, row = [], 0
    sizes = list(zip(BATCHES, LENGTHS)) + ([(1, long)] if long and time_axes else [])
    for i, (batch, length) in enumerate(sizes):
        batch = fixed_batch or batch
        # a model that strides over time gets whole strides, one whose 'valid' windows shorten the
        # sequence gets that many steps more (a multiple of the stride), so every case has an output
        whole = -(-length // time_stride) if i >= len(LENGTHS) else length  # strides in the long case: its length
        length = whole * time_stride + -(-min_steps // time_stride) * time_stride
        dims = {"batch": batch, **{t: length + 2 * k for k, t in enumerate(time_axes)}}
        keep = None
        if padded is not None:
            steps = dims.get(padded.shape[1], padded.shape[1])
            keep = np.stack([_keep_row(ROW_KINDS[(row + r) % len(ROW_KINDS)], steps, rng) for r in range(batch)])
            row += batch
        feeds = {}
        for s in inputs:
            x = sample(s, sized(s, dims), rng, keep)
            if s.role == "state" and (i == 0 or not random_states):
                x = np.zeros_like(x)  # a fresh stream
            feeds[s.name] = x
        desc = f"random batch {batch}" + (f", time {length}" if time_axes else "") + (", padded" if padded else "")
        cases.append((desc, feeds))
    if len({d for d, _ in cases}) < len(cases):  # fixed shapes (--static, stateful): the same size each time
        cases = [(f"{d}, sample {k + 1}", f) for k, (d, f) in enumerate(cases)]
    return cases


def stateful_layers(model) -> list:
    return [layer for layer in recurrent_layers(functional_graph(model)) if getattr(layer, "stateful", False)]


def _layer_states(layer) -> list:
    """A stateful layer's state variables, flat (StackedRNNCells nests one list per cell)."""
    return keras.tree.flatten(layer.states)


def _named(model, name: str):
    """The layer called `name` in the truth model (a tf_keras original), wrappers and nested models searched."""
    for layer in model.layers:
        if layer.name == name:
            return layer
        inner = getattr(layer, "layer", None)
        if inner is not None and inner.name == name:
            return inner
        if hasattr(layer, "layers") and inner is None:
            found = _named(layer, name)
            if found is not None:
                return found
    return None


TRACED_FROM = 64  # steps from which a case runs under tf.function


def _call(runner, inputs: list):
    """The model on one case, in inference mode. A long case runs traced (tf.function): eagerly a
    recurrent layer costs milliseconds a step (2.4 s for the 500-step case of a two-layer model),
    traced 0.02 s after a 0.2 s trace; short cases stay eager, where tracing would cost more."""
    args = inputs if len(inputs) > 1 else inputs[0]
    if max((a.shape[1] for a in inputs if a.ndim >= 2), default=0) < TRACED_FROM:
        return runner(args, training=False)
    import tensorflow as tf

    return tf.function(lambda xs: runner(xs, training=False))(args)


def keras_outputs(model, converted, feeds: dict, truth=None) -> dict[str, np.ndarray]:
    """Keras' outputs for one case, named as the ONNX outputs are (states of stateful layers too).
    `truth`: the model that computes them where it is not `model` (the tf_keras original of a
    Keras 2 model rebuilt in Keras 3; its layers have the same names).

    State inputs and outputs are matched to Keras' state variables by the layer they belong to:
    the converter meets layers in graph order, which need not be the order of `model.layers`."""
    data_in = [feeds[s.name] for s in converted.inputs if s.role == "data"]
    stateful = {layer.name: layer for layer in stateful_layers(model)}
    if truth is not None:  # the truth's own layer of that name (the same object where layers were opened)
        stateful = {name: _named(truth, name) or layer for name, layer in stateful.items()}
    runner = model if truth is None else truth
    state_specs = [s for s in converted.inputs if s.role == "state"]
    if stateful:
        for name, layer in stateful.items():
            specs = [s for s in state_specs if s.layer == name]
            variables = _layer_states(layer)
            if len(specs) != len(variables):
                raise AssertionError(f"{name}: {len(specs)} state inputs for {len(variables)} Keras states")
            for spec, var in zip(specs, variables):
                var.assign(feeds[spec.name])
    elif state_specs:  # --streaming of a stateless model: Keras truth exists for a fresh state only
        if any(np.any(feeds[s.name]) for s in state_specs):
            raise AssertionError("Keras truth for a streaming model needs zero initial states")
    flat = [np.asarray(keras.ops.convert_to_numpy(t)) for t in keras.tree.flatten(_call(runner, data_in))]
    names = [s.name for s in converted.outputs if s.role == "data"]
    out = dict(zip(names, flat))
    if stateful:
        for name, layer in stateful.items():
            specs = [s for s in converted.outputs if s.role == "state" and s.layer == name]
            out.update((s.name, np.asarray(keras.ops.convert_to_numpy(v))) for s, v in zip(specs, _layer_states(layer)))
    return out


def keras_truth(model, converted, seed: int, truth=None, data=None):
    """(cases, axes): the truth's outputs (Keras', or `truth`'s: tf_keras for a Keras 2 model) on the
    random cases, a long one (LONG_STEPS, or the user's longest), and the user's `data` (an .npz) if
    given. Inputs with time axes of their own get different lengths; where Keras refuses that (the
    model joins them step by step), the cases share one length and `axes` names those own time axes,
    which the export must declare as one shared "time" axis (convert.share_time) so the runtime checks
    that their lengths agree; otherwise `axes` is empty. The graph is not touched."""
    random_states = bool(stateful_layers(model))
    users, steps = data_cases(data, converted) if data is not None else ([], None)  # a bad file: refused first
    long = LONG_STEPS if not steps or steps < LONG_STEPS else None
    samples = random_cases(converted.keras_inputs or converted.inputs, seed, random_states=random_states,
                           time_stride=converted.time_stride, min_steps=converted.min_steps, long=long) + users
    try:
        return _finite([(n, f, keras_outputs(model, converted, f, truth)) for n, f in samples], converted), set()
    except Exception:
        own = own_time_axes(converted)
        if not own:
            raise
    shared = share_time(converted, own)
    samples = random_cases(shared.keras_inputs, seed, random_states=random_states, time_stride=shared.time_stride,
                           min_steps=shared.min_steps, long=long) + users
    return _finite([(n, f, keras_outputs(model, shared, f, truth)) for n, f in samples], shared), own


def _finite(cases, converted):
    """The truth must be numbers: where Keras itself gives NaN or infinity, matching it proves nothing
    (an all-NaN output would "pass" with |diff| 0), so the export is refused naming the output. Rows
    that are all padding are exempt: Keras gives NaN there by design (a masked mean over no step)."""
    padded = [s for s in converted.keras_inputs or converted.inputs if s.pad_value is not None and len(s.shape) >= 2]
    for name, feeds, outputs in cases:
        empty = None
        for spec in padded:
            x = np.asarray(feeds[spec.name])
            rows = np.all(x.reshape(x.shape[0], -1) == spec.pad_value, axis=1)
            empty = rows if empty is None else empty & rows
        for output, value in outputs.items():
            value = np.asarray(value)
            if not np.issubdtype(value.dtype, np.floating) or np.isfinite(value).all():
                continue
            if empty is not None and value.ndim and value.shape[0] == empty.shape[0]:
                value = value[~empty]
                if np.isfinite(value).all():
                    continue
            bad = "NaN" if np.isnan(value).any() else "infinity"
            raise RnnEdgeError(f"Keras itself outputs {bad} in {output!r} on the case {name!r}: parity against "
                               "it would prove nothing; check the model's weights (e.g. a BatchNormalization "
                               "with a negative moving_variance, or weights that make the state overflow)")
    return cases


def zoo_case(entry, converted) -> tuple[str, dict]:
    """The first rows of the zoo's real test data, with a fresh (zero) state where the export streams."""
    specs = [s for s in converted.inputs if s.role == "data"]
    feeds = {s.name: np.asarray(x[:ZOO_GOLDEN_ROWS]) for s, x in zip(specs, entry.x_test)}
    rows = len(next(iter(feeds.values())))
    for s in converted.inputs:
        if s.role == "state":
            feeds[s.name] = np.zeros((rows, *s.shape[1:]), np.float32)
    return f"{entry.task} test split ({rows} rows)", feeds


def data_cases(path, converted) -> tuple[list[tuple[str, dict]], int | None]:
    """The user's --data sequences as golden cases, at their own length: every row, or DATA_ROWS
    rows evenly spaced when there are more (the case's name says which); and their length. Stateful models (a fixed
    batch) get their rows in cases of that batch; state inputs start at zero (a fresh stream)."""
    from rnnedge import preflight
    from rnnedge.runtime.datafiles import read_npz

    specs = [s for s in (converted.keras_inputs or converted.inputs) if s.role == "data"]
    preflight.data_matches(path, preflight.data_headers(path), [(s.name, s.shape, s.dtype) for s in specs])
    arrays = read_npz(path)
    if len(specs) == 1 and specs[0].name not in arrays:
        arrays[specs[0].name] = arrays[next(k for k in ("x", "arr_0") if k in arrays)]
    data = {s.name: np.asarray(arrays[s.name]).astype(s.dtype, copy=False) for s in specs}
    rows = len(next(iter(data.values())))
    if rows == 0 or any(len(a) != rows for a in data.values()):
        raise RnnEdgeError(f"--data {path}: expected the same number of rows (at least one) in every input, got "
                           + ", ".join(f"'{n}' {len(a)}" for n, a in data.items()))
    picked = np.unique(np.linspace(0, rows - 1, min(rows, DATA_ROWS)).round().astype(int))
    which = f"all {rows} rows" if len(picked) == rows else f"rows {','.join(map(str, picked))} of {rows}"
    batch = next((s.shape[0] for s in converted.inputs if isinstance(s.shape[0], int)), None)  # stateful models
    groups = [picked] if batch is None else \
        [g for g in np.resize(picked, max(batch, len(picked) // batch * batch)).reshape(-1, batch)]
    steps = max((data[s.name].shape[1] for s in specs if len(s.shape) >= 3 or is_time_axis(s.shape[1])),
                default=None)
    cases = []
    for i, rows_of in enumerate(groups):
        feeds = {n: a[rows_of] for n, a in data.items()}
        for s in converted.inputs:
            if s.role == "state":
                feeds[s.name] = np.zeros((len(rows_of), *s.shape[1:]), s.dtype)
        part = f", part {i + 1} of {len(groups)}" if len(groups) > 1 else ""
        cases.append((f"--data {Path(path).name}, {which}{part}", feeds))
    return cases, steps
