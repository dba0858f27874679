"""Which cases bench times: batch sizes and sequence lengths, checked against the export's
fixed axes, and the option lists the CLI passes."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from rnnedge.errors import RnnEdgeError
from rnnedge.manifest import Manifest, TensorSpec, is_time_axis
from rnnedge.timing import whole

DEFAULT_TIME = 100  # steps per sequence when the model's time axis is dynamic and none is asked
SWEEP_TIMES = (16, 100, 400)  # lengths a plot draws latency over when none is asked (steps per push: 1, 4, 16)
SWEEP_PUSHES = (1, 4, 16)


def int_list(text: str | None, option: str = "--batch") -> tuple[int, ...] | None:
    """"1,8,32" -> (1, 8, 32); None or "" -> None (not given); RnnEdgeError naming `option` otherwise."""
    if text is None or not str(text).strip():
        return None
    try:
        values = tuple(int(v) for v in str(text).split(","))  # an empty item ("1,,2") is a mistake too
    except ValueError:
        raise RnnEdgeError(f"{option} {text!r}: expected whole numbers separated by commas, e.g. 1,8,32") from None
    for v in values:
        if v < 1:
            raise RnnEdgeError(f"{option} {text!r}: every size must be >= 1")
    return values


def name_list(text: str | None) -> tuple[str, ...]:
    """"fp32,int8" -> ("fp32", "int8"); None or "" -> ()."""
    return tuple(v.strip() for v in str(text or "").split(",") if v.strip())




def time_axes_of(spec: TensorSpec) -> list[int]:
    """Axes of a data input that count steps: named time axes, or a fixed axis 1 of a sequence
    input (rank 3, or rank 2 integer ids)."""
    named = [i for i, d in enumerate(spec.shape) if is_time_axis(d)]
    if named:
        return named
    rank = len(spec.shape)
    if rank >= 2 and isinstance(spec.shape[1], int) and (rank >= 3 or spec.dtype.startswith("int")):
        return [1]
    return []


def sweep_times(manifest: Manifest, stream: bool = False) -> tuple[int, ...] | None:
    """The lengths to draw latency against when none was asked: SWEEP_TIMES (SWEEP_PUSHES for
    streams) where every data input's time axis is dynamic, else None (the model fixes one)."""
    axes = [(s, i) for s in manifest.data_inputs for i in time_axes_of(s)]
    if not axes or any(isinstance(s.shape[i], int) for s, i in axes):
        return None
    return SWEEP_PUSHES if stream else SWEEP_TIMES


def cases_for(manifest: Manifest, batches: Sequence[int] | None = None, times: Sequence[int] | None = None,
              stream: bool = False) -> list[tuple[int, int | None]]:
    """(batch, time) pairs that `bench_dir` times, checked against the fixed axes of the data
    inputs (see `bench_dir` for what None means)."""
    if isinstance(batches, (int, np.integer)):
        batches = (batches,)
    if isinstance(times, (int, np.integer)):
        times = (times,)
    data = manifest.data_inputs
    fixed_batch = [(s.name, s.shape[0]) for s in data if s.shape and isinstance(s.shape[0], int)]
    time_axes = [(s, i) for s in data for i in time_axes_of(s)]
    fixed_time = [(s.name, i, s.shape[i]) for s, i in time_axes if isinstance(s.shape[i], int)]
    if batches is None:
        batches = (fixed_batch[0][1],) if fixed_batch else (1,)
    asked_time = times is not None
    if not asked_time:
        if not time_axes:
            times = (None,)
        elif fixed_time:
            times = (fixed_time[0][2],)
        else:
            times = (1 if stream else DEFAULT_TIME,)
    elif not time_axes:
        inputs = ", ".join(f"{s.name}[{', '.join(map(str, s.shape))}]" for s in data)
        raise RnnEdgeError(f"the model has no time axis (inputs: {inputs}): leave --time out")
    batches = tuple(whole("batch", b, 1) for b in batches)
    if asked_time:
        times = tuple(whole("time", t, 1) for t in times)
    if not batches or not times:
        raise RnnEdgeError("give at least one batch size and one sequence length")
    errors = []
    for b in dict.fromkeys(batches):
        errors += [f"input '{n}' has a fixed batch axis (dimension 0) of {d}, but batch {b} was asked"
                   for n, d in fixed_batch if b != d]
    if asked_time:
        for t in dict.fromkeys(times):
            errors += [f"input '{n}' has a fixed time axis (dimension {i}) of {d}, but time {t} was asked"
                       for n, i, d in fixed_time if t != d]
    if errors:
        raise RnnEdgeError("; ".join(errors) + "; bench those sizes, or re-export with a dynamic axis")
    return [(b, t) for b in dict.fromkeys(batches) for t in dict.fromkeys(times)]
