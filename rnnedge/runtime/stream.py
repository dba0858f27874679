"""Streams: sequences fed chunk by chunk with their recurrent state carried (`Model.stream`),
and `run_chunked`, which replays a whole input that way. A stream is built from an onnxruntime
session and the model's `Signature` (runtime/signature.py): it knows nothing of `Model`.

The state stays on the session's device in two sets of `OrtValue`s bound with IOBinding: a call
reads set A and writes set B, the next reads B and writes A, so nothing is allocated or copied
for the state between steps and a failed call leaves the current state untouched.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Protocol

import numpy as np
import onnxruntime as ort

from rnnedge.errors import RnnEdgeError
from rnnedge.manifest import BATCH
from rnnedge.runtime.inputs import (
    STREAM,
    Outputs,
    as_array,
    check_kind,
    check_values,
    fmt_shape,
    ort_run,
    raise_problems,
)
from rnnedge.runtime.signature import Signature
from rnnedge.tables import GPU_PROVIDERS


class Stream:
    """`batch` sequences fed chunk by chunk; the recurrent state stays on the device between calls.

    push(chunk): a chunk is [batch, steps, ...] with any steps >= 1. A chunk without the time
    axis ([batch, features], or [batch] for token ids) is one step, and then the outputs that
    have a time axis come back without it too. Returns the data outputs only.

    Design: two sets of state OrtValues (A, B) on the session's device and two IOBindings, one
    reading A and writing B, the other the reverse; each push binds the data inputs, runs, and
    flips. The state is never copied or reallocated between steps, and a call that fails leaves
    the current state as it was. The data inputs are copied into buffers bound once per chunk
    shape. One stream serves one thread at a time.
    """

    def __init__(self, session: ort.InferenceSession, signature: Signature, batch: int = 1, *,
                 allow_nonfinite: bool = False):
        if isinstance(batch, bool) or not isinstance(batch, (int, np.integer)) or batch < 1:
            raise RnnEdgeError(f"batch must be a whole number >= 1, got {batch!r}")
        sig = signature
        if not sig.state_slots:
            raise RnnEdgeError(sig.why_not_streamable())
        self.signature = sig
        self.session = session
        self.provider: str = session.get_providers()[0]
        self.batch = int(batch)
        self.allow_nonfinite = allow_nonfinite
        feeds_from = sig.state_feeds()  # state input -> the state output that feeds it
        self._axes0 = {BATCH: (self.batch, STREAM)}
        self._shapes = {s.name: sig.state_shape(s, self._axes0) for s in sig.state_slots}

        provider = self.provider
        self._on_cpu = provider not in GPU_PROVIDERS
        if self._on_cpu:
            self._device = ("cpu", 0)
        else:
            opts = session.get_provider_options().get(provider, {})
            self._device = ("cuda", int(opts.get("device_id", 0) or 0))
        # Two sets of state buffers. On CPU the OrtValues wrap numpy arrays we keep (zero-copy).
        self._host: list[dict[str, np.ndarray]] = []
        self._values: list[dict[str, ort.OrtValue]] = []
        for _ in range(2):
            host = {s.name: np.zeros(self._shapes[s.name], s.dtype) for s in sig.state_slots}
            self._host.append(host)
            self._values.append({n: ort.OrtValue.ortvalue_from_numpy(a, *self._device) for n, a in host.items()})
        self._data_in = [s.name for s in sig.data_slots]
        self._data_out = sig.data_output_names
        self._all_out = sig.output_names
        if self._all_out[: len(self._data_out)] != self._data_out:
            raise RnnEdgeError(f"manifest.json lists state outputs before data outputs ({self._all_out}); "
                               "re-export the model")
        self._n_data = len(self._data_in)
        self._n_data_out = len(self._data_out)
        self._bindings = []
        for k in range(2):
            io = session.io_binding()
            for s in sig.state_slots:
                io.bind_ortvalue_input(s.name, self._values[k][s.name])
            state_out = {feeds_from[s.name]: s.name for s in sig.state_slots}
            for name in self._all_out:  # bound in graph order: results come back in that order
                if name in state_out:
                    io.bind_ortvalue_output(name, self._values[1 - k][state_out[name]])
                else:
                    io.bind_output(name, "cpu")
            self._bindings.append(io)
        # Per binding, the CPU buffers its data inputs are bound to (reused while the shape holds).
        self._inputs: list[dict[str, np.ndarray]] = [{}, {}]
        # Per binding, the CPU buffers its data outputs are bound to (for the current input shapes).
        self._outputs: list[list[np.ndarray] | None] = [None, None]
        # Per binding: (the shapes and dtypes of the chunk its buffers were bound for and checked, views
        # of those buffers shaped as that chunk, whether it was one step). A chunk like it needs only
        # its values checked: where every data input is float (finiteness is the only value check).
        self._fast: list[tuple | None] = [None, None]
        self._plain = all(s.dtype.kind == "f" and not s.right_padded for s in sig.data_slots)
        self._current = 0
        self.chunks = 0  # chunks applied since the stream started (or was reset): the next chunk's number
        # Inputs with a time axis: a chunk that lacks it is one step, and then the outputs with a
        # time axis lose it too.
        self._step_ranks = [(s.name, s.rank) for s in sig.data_slots if s.time_axis == 1]
        self._step_names = {name for name, _ in self._step_ranks}
        self._squeeze = [name in sig.time_outputs for name in self._data_out]
        # Strided layers over time (convolutions or pooling striding S steps in all): every chunk is a
        # multiple of S steps, so each strided window starts where it would over the whole sequence.
        self.time_stride = sig.time_stride

    def __repr__(self) -> str:
        return f"<rnnedge.Stream batch={self.batch} on {self.provider}>"

    # -- hot path ------------------------------------------------------------------------------

    def push(self, *arrays, allow_nonfinite: bool | None = None, chunk_index: int | None = None,
             **named) -> Outputs:
        """Feed the next chunk of every row; returns the data outputs for this chunk. `chunk_index`: the
        chunk's number (0 first); a chunk that is not the next one is refused, never applied twice."""
        if chunk_index is not None and chunk_index != self.chunks:
            raise RnnEdgeError(f"chunk {chunk_index!r} is not this stream's next chunk ({self.chunks}): "
                               + ("it was already applied; each chunk is applied once"
                                  if isinstance(chunk_index, int) and 0 <= chunk_index < self.chunks else
                                  "push a stream's chunks in order, numbered from 0"))
        sig = self.signature
        allow = self.allow_nonfinite if allow_nonfinite is None else allow_nonfinite
        k = self._current
        io = self._bindings[k]
        key = _key(arrays) if not named and len(arrays) == self._n_data else None
        fast = self._fast[k]
        if key is not None and fast is not None and fast[0] == key and (allow or all(map(_finite, arrays))):
            # Shaped and typed as the chunk these buffers were bound for (checked then), float data,
            # finite (or allowed): nothing else to check; copy into the bound buffers.
            for view, a in zip(fast[1], arrays):
                view[...] = a
            feeds, single = None, fast[2]
        else:
            given = (dict(zip(self._data_in, arrays)) if key is not None
                     else sig.gather(arrays, named, allow_state=False))
            feeds, single = self._check(given, allow)
            self._bind_inputs(k, io, feeds)
            if key is not None and self._plain:
                buffers = self._inputs[k]
                self._fast[k] = (key, [buffers[n].reshape(a.shape) for n, a in zip(self._data_in, arrays)], single)
        ort_run(sig, lambda: self.session.run_with_iobinding(io), feeds or dict(zip(self._data_in, arrays)))
        outputs = self._outputs[k]
        if outputs is not None:  # onnxruntime wrote into our buffers: hand out copies
            data = [b.copy() for b in outputs]
        else:
            got = io.get_outputs()
            data = [np.array(got[i].numpy()) for i in range(self._n_data_out)]  # copies
            if self._on_cpu:  # from now on, outputs of this shape land in buffers bound once
                self._outputs[k] = [np.empty_like(d) for d in data]
                for name, b in zip(self._data_out, self._outputs[k]):
                    io.bind_ortvalue_output(name, ort.OrtValue.ortvalue_from_numpy(b))
        self._current = 1 - k
        self.chunks += 1
        if single:
            data = [d[:, 0] if squeeze and d.ndim > 1 else d for d, squeeze in zip(data, self._squeeze)]
        return Outputs.of_data(self._data_out, data, self.provider)

    def _bind_inputs(self, k: int, io, feeds: dict[str, np.ndarray]) -> None:
        """Copy checked inputs into binding k's buffers, binding new ones (and letting onnxruntime
        allocate the outputs anew) where a shape changed."""
        buffers = self._inputs[k]
        resized = False
        for name, a in feeds.items():
            buf = buffers.get(name)
            if buf is not None and buf.shape == a.shape:
                buf[...] = a  # same shape as last time on this binding: copy into the bound buffer
            else:
                buf = buffers[name] = np.array(a, order="C")
                io.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(buf))
                resized = True
        if resized:
            for name in self._data_out:
                io.bind_output(name, "cpu")
            self._outputs[k] = None
            self._fast[k] = None

    def _check(self, given: dict, allow: bool) -> tuple[dict[str, np.ndarray], bool]:
        """Every check of a chunk (names, kinds, shapes, values, the time stride); (feeds, whether every
        time input came without its time axis: one step)."""
        expanded = set()
        for name, rank in self._step_ranks:
            a = given[name]
            if type(a) is not np.ndarray:
                try:
                    a = np.asarray(a)
                except (ValueError, TypeError):
                    continue  # reported by the checks below
            if a.ndim == rank - 1 and a.dtype != object:
                given[name] = a[:, None]
                expanded.add(name)
        feeds = self.signature.prepare(given, allow, self._axes0.copy(), frozenset(expanded))
        if self.time_stride > 1 and self._step_ranks:
            self._check_stride(feeds[self._step_ranks[0][0]].shape[1])
        return feeds, bool(self._step_ranks) and len(expanded) == len(self._step_ranks)

    def _check_stride(self, steps: int) -> None:
        if steps % self.time_stride:
            raise RnnEdgeError(f"a chunk of {steps} step(s): this model strides over time by {self.time_stride} (its "
                               f"convolutions or pooling), so each chunk must be a multiple of {self.time_stride} "
                               "steps; hold the rest back for the next chunk")

    # -- state -------------------------------------------------------------------------------

    @property
    def state(self) -> dict[str, np.ndarray]:
        """Copies of the current state, keyed by state input name (so `model.run(x, **stream.state)` works)."""
        k = self._current
        if self._on_cpu:
            return {n: a.copy() for n, a in self._host[k].items()}
        return {n: np.array(v.numpy()) for n, v in self._values[k].items()}

    def _write_state(self, name: str, array: np.ndarray) -> None:
        k = self._current
        if self._on_cpu:
            self._host[k][name][...] = array
        else:
            self._values[k][name].update_inplace(np.ascontiguousarray(array, dtype=self._host[k][name].dtype))

    def reset(self, index: int | None = None) -> None:
        """Zero the state of every row (a fresh stream), or of row `index` only."""
        if index is None:
            for name, a in self._host[self._current].items():
                self._write_state(name, np.zeros_like(a))
            self.chunks = 0
            return
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not -self.batch <= index < self.batch:
            raise RnnEdgeError(f"reset index must be a row number in [0, {self.batch}) for this stream of "
                               f"batch={self.batch}, got {index!r}")
        for name, a in self.state.items():
            a[index] = 0
            self._write_state(name, a)

    def load_state(self, state: Mapping[str, Any]) -> None:
        """Set the state (e.g. saved from `stream.state`): state input name -> [batch, ...] array."""
        sig = self.signature
        errors = []
        arrays = {}
        for name, value in state.items():
            slot = sig.slots.get(name)
            if slot is None or slot.spec.role != "state":
                errors.append(f"'{name}' is not a state input (state inputs: "
                              f"{', '.join(s.name for s in sig.state_slots)})")
                continue
            a = as_array(name, value, errors)
            if a is None or not check_kind(slot, a, errors):
                continue
            if a.shape != self._shapes[name]:
                errors.append(f"state '{name}': expected shape {fmt_shape(self._shapes[name])} for this stream, "
                              f"got {fmt_shape(a.shape)}")
                continue
            arrays[name] = a
        if errors:
            raise_problems(errors)
        for name, a in arrays.items():
            checked = check_values(sig.slots[name], a, self.allow_nonfinite, errors, sig.nonfinite_advice)
            if checked is not None:
                arrays[name] = checked
        if errors:
            raise_problems(errors)
        for name, a in arrays.items():
            self._write_state(name, a)


def _key(arrays) -> tuple | None:
    """What a chunk's checks depend on: each array's shape and dtype (None unless all are arrays)."""
    if len(arrays) == 1:
        a = arrays[0]
        return (a.shape, a.dtype) if type(a) is np.ndarray else None
    if all(type(a) is np.ndarray for a in arrays):
        return tuple((a.shape, a.dtype) for a in arrays)
    return None


def _finite(a: np.ndarray) -> bool:
    """Every value of a float array is finite. The sum of squares is one BLAS call, and NaN or an
    infinity anywhere makes it non-finite; values so large that their squares overflow (>1.8e19 in
    float32) get the exact check."""
    flat = a.reshape(-1)
    return math.isfinite(np.dot(flat, flat)) or bool(np.isfinite(a).all())


class Streamable(Protocol):
    """What `run_chunked` needs of a model (a `Model` is one): its session and its signature."""

    session: ort.InferenceSession
    signature: Signature


def run_chunked(model: Streamable, inputs: Mapping[str, Any], chunk: int) -> tuple[Outputs, dict[str, np.ndarray]]:
    """Stream `inputs` through `model` `chunk` steps at a time, the state carried (state inputs
    in `inputs` start the stream). Returns the data outputs (those with a time axis concatenated
    along it, the others from the last chunk) and the final state, by state input name."""
    inputs = dict(inputs)
    if isinstance(chunk, bool) or not isinstance(chunk, (int, np.integer)) or chunk < 1:
        raise RnnEdgeError(f"chunk must be a whole number of steps >= 1, got {chunk!r}")
    sig = model.signature
    timed = [s for s in sig.data_slots if s.time_axis == 1]
    if not timed:
        raise RnnEdgeError(f"the export {sig.folder} has no input with a time axis: run it without chunk")
    state = {s.name: inputs.pop(s.name) for s in sig.state_slots if s.name in inputs}
    arrays = {n: np.asarray(v) for n, v in inputs.items()}
    first = arrays[timed[0].name]
    if first.ndim < 2:
        raise RnnEdgeError(f"input '{timed[0].name}' has shape {fmt_shape(first.shape)}: streaming in chunks "
                           f"needs {fmt_shape(timed[0].spec.shape)} with the time axis second")
    batch, steps = int(first.shape[0]), int(first.shape[1])
    stream = Stream(model.session, sig, batch)
    if state:
        stream.load_state(state)
    timed_names = {s.name for s in timed}
    pieces: dict[str, list[np.ndarray]] = {}
    last: Outputs | None = None
    for start in range(0, max(steps, 1), int(chunk)):
        part = {n: (a[:, start:start + chunk] if n in timed_names and a.ndim >= 2 else a) for n, a in arrays.items()}
        last = stream.push(**part)
        for name, value in last.items():
            pieces.setdefault(name, []).append(value)
    merged = {n: (np.concatenate(v, axis=1) if n in sig.time_outputs else v[-1]) for n, v in pieces.items()}
    return Outputs(merged, stream.provider, list(merged)), stream.state
