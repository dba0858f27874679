"""The results a model returns, and the checks every input passes before onnxruntime sees it.

Inputs are checked in the order names -> shapes -> values; every failure of a phase is collected
and raised as one one-line `RnnEdgeError` naming the input, what was expected and what came.
float64 is cast to float32 and int64/int32 to the declared integer type (when the values fit);
anything else of the wrong kind is refused rather than guessed.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from rnnedge.errors import RnnEdgeError
from rnnedge.manifest import BATCH, TensorSpec, is_time_axis
from rnnedge.tables import INT_RANGES, NUMPY_DTYPES, ORT_DTYPES

STREAM = "<stream>"  # marks an axis size fixed by the stream, not by another input


class Outputs(dict):
    """Output name -> numpy array, in graph order; `out[0]` (an int) is positional access.

    `provider` is the execution provider that computed them; `data` lists the data outputs
    (the Keras model's own outputs) without the recurrent state outputs.
    """

    def __init__(self, items=(), provider: str | None = None, data_names: Sequence[str] | None = None):
        super().__init__(items)
        self.provider = provider
        self._data_names = list(self) if data_names is None else [n for n in data_names if n in self]

    @classmethod
    def of_data(cls, names: list[str], values: list, provider: str | None) -> Outputs:
        """Hot-path constructor: every name is a data output."""
        out = dict.__new__(cls)
        dict.update(out, zip(names, values))
        out.provider = provider
        out._data_names = names
        return out

    def __getitem__(self, key):
        if isinstance(key, int) and not isinstance(key, bool):
            values = list(self.values())
            try:
                return values[key]
            except IndexError:
                raise IndexError(f"output index {key} out of range: there are {len(values)} outputs") from None
        return super().__getitem__(key)

    @property
    def data(self) -> list[np.ndarray]:
        """The data outputs in graph order (state outputs left out)."""
        return [dict.__getitem__(self, n) for n in self._data_names]

    @property
    def data_names(self) -> list[str]:
        return list(self._data_names)  # a copy: `of_data` shares the stream's list

    def __repr__(self) -> str:
        body = ", ".join(f"{k}: {v.dtype}{list(v.shape)}" for k, v in self.items())
        return f"Outputs({body}; provider={self.provider})"


def fmt_shape(shape) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def nth(i: int) -> str:
    return {1: "1st", 2: "2nd", 3: "3rd"}.get(i, f"{i}th")


class Slot:
    """One graph input and what is needed to check an array for it quickly."""

    __slots__ = ("spec", "name", "rank", "fixed", "named", "dtype", "is_int", "is_bool", "time_axis", "right_padded",
                 "min_steps")

    def __init__(self, spec: TensorSpec, ort_type: str | None, right_padded: bool = False,
                 static_time: int | None = None, min_steps: int = 0):
        self.spec = spec
        self.min_steps = min_steps  # steps the model's 'valid' windows consume: a sequence needs more
        self.name = spec.name
        self.rank = len(spec.shape)
        self.fixed = tuple((i, d) for i, d in enumerate(spec.shape) if not isinstance(d, str))
        self.named = tuple((i, d) for i, d in enumerate(spec.shape) if isinstance(d, str))
        declared = NUMPY_DTYPES.get(spec.dtype)
        actual = ORT_DTYPES.get(ort_type) if ort_type else None
        # The graph's own type wins (an fp16 variant may take float16); the manifest says the kind.
        self.dtype = np.dtype(actual or declared or np.float32)
        self.is_int = self.dtype.kind in "iu"
        self.is_bool = self.dtype.kind == "b"
        # format-1 exports turned masks into sequence_lens: only right-padded rows are exact there
        self.right_padded = right_padded and spec.pad_value is not None and self.rank >= 2
        self.time_axis = next((i for i, d in self.named if is_time_axis(d)), None)
        if self.time_axis is None and static_time and self.rank >= 2 and spec.shape[1] == static_time \
                and (self.rank >= 3 or self.is_int or self.is_bool) and spec.role == "data":
            self.time_axis = 1  # a time axis fixed at export (--static time=T): a stream's chunk length

    def describe(self) -> str:
        return f"{fmt_shape(self.spec.shape)} {self.dtype}"


def as_array(name: str, value, errors: list[str]) -> np.ndarray | None:
    if isinstance(value, np.ndarray):
        return value
    if value is None:
        errors.append(f"input '{name}' is None: pass an array")
        return None
    try:
        return np.asarray(value)
    except (ValueError, TypeError) as e:  # ragged nested lists
        errors.append(f"input '{name}': could not make an array of it ({str(e).splitlines()[0]}); "
                      "give a rectangular array (pad sequences to one length)")
        return None


def check_kind(slot: Slot, a: np.ndarray, errors: list[str]) -> bool:
    kind = a.dtype.kind
    if slot.is_bool:
        if kind == "b":
            return True
        errors.append(f"input '{slot.name}': expected a bool mask {slot.describe()} (True at real steps), got "
                      f"{a.dtype}; pass (mask != 0) or mask.astype(bool)")
        return False
    if kind in "fiu" and not (slot.is_int and kind == "f"):
        return True
    if slot.is_int and kind == "f":
        errors.append(f"input '{slot.name}': expected integer ids ({slot.dtype}), got {a.dtype}; "
                      f"cast with .astype('{slot.dtype}') if the values are whole numbers")
    elif kind == "O":
        errors.append(f"input '{slot.name}': expected {slot.dtype}, got an object array "
                      "(ragged lists or mixed types?); give a rectangular numeric array")
    else:
        errors.append(f"input '{slot.name}': expected {slot.dtype}, got {a.dtype}; "
                      f"convert with .astype('{slot.dtype}') if that is what you mean")
    return False


class _Said:
    """How a message names an input's shape (as the user passed it), formatted only when a message
    is made: the checks run on every streamed chunk."""

    def __init__(self, shape: tuple, one_step: bool):
        self.shape, self.one_step = shape, one_step

    def __str__(self) -> str:
        if self.one_step:
            return f"shape {fmt_shape(self.shape[:1] + self.shape[2:])}, one step"
        return f"shape {fmt_shape(self.shape)}"


def check_shape(slot: Slot, a: np.ndarray, axes: dict[str, tuple[int, str]], errors: list[str],
                 one_step: bool = False) -> None:
    """Rank, fixed dimensions, and named axes that must agree across inputs (`axes` collects them).
    `one_step`: `a` is a chunk the user gave without its time axis (dimension 1, added back here):
    messages name the shape and dimensions as the user passed them."""
    shape = a.shape
    said = _Said(shape, one_step)
    if len(shape) != slot.rank:
        errors.append(f"input '{slot.name}': expected {slot.rank} dimensions {fmt_shape(slot.spec.shape)}, "
                      f"got {len(shape)} ({said})")
        return
    for i, d in slot.fixed:
        if shape[i] != d:
            where = f"dimension {i - 1 if one_step and i > 1 else i}"
            errors.append(f"input '{slot.name}': {where} must be {d} ({fmt_shape(slot.spec.shape)}), "
                          f"got {shape[i]} ({said})")
    for i, axis in slot.named:
        n = shape[i]
        if n == 0 and (axis == BATCH or is_time_axis(axis)):
            what = "row" if axis == BATCH else "step"
            errors.append(f"input '{slot.name}': the '{axis}' axis (dimension {i}) is empty: give at least one {what}")
            continue
        if slot.min_steps and is_time_axis(axis) and n <= slot.min_steps:
            errors.append(f"input '{slot.name}': {n} step(s), but the model's 'valid' windows (convolutions, pooling, "
                          f"cropping) consume {slot.min_steps}: give at least {slot.min_steps + 1} steps")
            continue
        seen = axes.get(axis)
        if seen is None:
            axes[axis] = (n, slot.name)
        elif seen[0] != n:
            if seen[1] == STREAM:
                errors.append(f"input '{slot.name}': batch is {n} ({said}) but this stream was "
                              f"opened with batch={seen[0]}; push one row per stream, or open model.stream(batch={n})")
            else:
                errors.append(f"input '{slot.name}': '{axis}' is {n} but input '{seen[1]}' has '{axis}' {seen[0]}; "
                              f"the '{axis}' axis must agree across inputs")


def _first_index(mask: np.ndarray) -> str:
    return fmt_shape(int(i) for i in np.argwhere(mask)[0])


NONFINITE_ADVICE = "clean the data or pass allow_nonfinite=True"  # what a Python caller can do


def check_values(slot: Slot, a: np.ndarray, allow_nonfinite: bool, errors: list[str],
                  nonfinite_advice: str = NONFINITE_ADVICE) -> np.ndarray | None:
    """Cast to what the graph takes and check ids and finiteness. Padded (masked) steps may be
    anywhere: the graph reproduces Keras' masking for any pattern."""
    spec = slot.spec
    if slot.is_bool:
        return a
    if slot.is_int:
        if spec.vocab is not None and a.size:
            # one reduction: seen as unsigned, negative ids are huge and fail the same test
            unsigned = a.view(f"u{a.dtype.itemsize}") if a.dtype.kind == "i" else a
            if unsigned.max() >= spec.vocab:
                bad = (a < 0) | (a >= spec.vocab)
                errors.append(f"input '{slot.name}': token ids must be in [0, {spec.vocab}) (vocabulary size "
                              f"{spec.vocab}), got {a[tuple(np.argwhere(bad)[0])]} at {_first_index(bad)} "
                              f"({int(bad.sum())} out of range)")
                return None
        if a.dtype != slot.dtype:
            lo_ok, hi_ok = INT_RANGES.get(slot.dtype, (None, None))
            if lo_ok is not None and a.size and (a.min() < lo_ok or a.max() > hi_ok):
                errors.append(f"input '{slot.name}': values do not fit {slot.dtype} "
                              f"(got {a.min()} .. {a.max()})")
                return None
            a = a.astype(slot.dtype)
    else:
        if a.dtype != slot.dtype:
            whole = a.dtype.kind in "iu"
            with np.errstate(over="ignore"):
                a, given = a.astype(slot.dtype), a
            with np.errstate(invalid="ignore"):  # int64's top values round to 2**63, which int64 cannot hold
                changed = a.astype(given.dtype) != given if whole and a.size else None
            if changed is not None and changed.any():  # beyond 2**24: rounded
                errors.append(f"input '{slot.name}': {given.dtype} value {given[tuple(np.argwhere(changed)[0])]} "
                              f"at {_first_index(changed)} changes when cast to {slot.dtype} "
                              f"({int(changed.sum())} such values); scale the data or pass floats")
                return None
        if not allow_nonfinite and not np.isfinite(a).all():
            bad = ~np.isfinite(a)
            first = a[tuple(np.argwhere(bad)[0])]
            errors.append(f"input '{slot.name}': contains {first} at {_first_index(bad)} ({int(bad.sum())} "
                          f"non-finite values, float32 overflow included); {nonfinite_advice}")
            return None
    if slot.right_padded and a.shape[1] > 1:
        is_pad = a == spec.pad_value
        if a.ndim > 2:
            is_pad = is_pad.all(axis=tuple(range(2, a.ndim)))  # a step is padding when all its features are
        late = ~is_pad[:, 1:] & is_pad[:, :-1]  # a real step right after a padding step
        if late.any():
            row, step = (int(i) for i in np.argwhere(late)[0])
            errors.append(f"input '{slot.name}': row {row} has padding ({spec.pad_value:g}) before a real step at "
                          f"{step + 1}; this export (manifest format 1) is exact for right-padded rows only: "
                          "re-export it with this rnnedge, whose exports handle padding anywhere")
            return None
    return a


def raise_problems(errors: list[str]) -> None:
    if len(errors) == 1:
        raise RnnEdgeError(errors[0])
    raise RnnEdgeError(f"{len(errors)} input problems: " + "; ".join(errors))


def ort_run(model, call, feeds: dict[str, np.ndarray]):
    """onnxruntime's own errors (an input that passed rnnedge's checks but not the graph's) as one line."""
    import onnxruntime as ort

    try:
        return call()
    except (ort.capi.onnxruntime_pybind11_state.Fail, ort.capi.onnxruntime_pybind11_state.InvalidArgument,
            ort.capi.onnxruntime_pybind11_state.RuntimeException) as e:
        given = ", ".join(f"{n} {fmt_shape(a.shape)} {a.dtype}" for n, a in feeds.items())
        reason = " ".join(str(e).split())[:300]
        raise RnnEdgeError(f"{model.path.name} refused inputs {given} (outputs {', '.join(model.output_names)}): "
                           f"{reason}") from None
