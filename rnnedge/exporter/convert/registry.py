"""Which converter handles a Keras layer or op, declared where the converter is defined.

    @converts(L.Dense, per_step=True)
    def dense(ctx, layer, args, kwargs, outs): ...

A converter is `fn(ctx, layer, args, kwargs, outs) -> list[str]` (see layers.py). Put it in the
module of its kind, which core.py imports (a new module must be added to that import): layers.py
(per-step and shape layers, mask ops), temporal.py (layers over the time axis: convolutions,
padding, pooling, cropping, upsampling), temporal2d.py (the same over (time, frequency), and
Permute), recurrent.py. Tests: a case in tests/test_convert.py's matrix
(`test_every_supported_layer_type_has_a_test` names the missing ones), and for streaming,
tests/test_stream_conv.py and tests/test_stream_kws.py. Its declaration says what core.py needs to
route a call; the rules it applies, in one place (`route`):

1. Type: a layer's own type first, then its bases in MRO order. A subclass that keeps its base's
   `call` is converted by the base's converter; one with its own `call` is not (what it computes is
   unknown): a recurrent one is refused, any other goes to tf2onnx, and the manifest says why.
2. Masks: a call that receives a mask goes to tf2onnx unless the converter is `mask_aware` (reads
   the mask, or ignores it correctly at inference); the manifest says why.
3. Per step: `per_step` converters act on each step alone, on the last axis: TimeDistributed
   applies them to [batch, time, ...] directly instead of folding time into the batch.
4. Declining: a converter that declines an option of its own layer (`ctx.fail`) hands the layer
   to tf2onnx, unless it is recurrent (refused: a recurrent layer is fused or refused); the
   manifest says why (`notes`).
5. Streaming (`--streaming`): each chunk runs alone, so `streaming` says how the layer behaves:
   PER_STEP (its output at a step depends on that step only), STATE (it keeps what it needs of
   the past in state inputs and outputs it adds itself) or WHOLE (it needs the whole sequence:
   refused); a callable `(layer, x) -> reason or None` for layers whose configuration decides
   (the reason completes "layer 'name' (Type): <reason>, so it cannot run chunk by chunk").
   A layer that changes how many steps there are records it for the stream and the sample cases
   (temporal.py: `in_phase` for strides, `shortens` for steps dropped, `ctx.book.rates` for
   upsampling); core.py gives every other output its input's rate and length.
   Layers tf2onnx converts are probed in Keras instead (splice.py). Every converter serves
   whole-sequence exports too, where the same bookkeeping gives the sample cases' lengths and the
   runtime's minimum length.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

PER_STEP, STATE, WHOLE = "per-step", "state", "whole"


@dataclass(frozen=True)
class Converter:
    """One converter and what it declares (see the module docstring)."""

    fn: Callable
    types: tuple
    recurrent: bool = False  # a recurrent layer: fused (or a Scan), never tf2onnx
    mask_aware: bool = False
    per_step: bool = False
    streaming: str | Callable = PER_STEP

    def stream_refusal(self, layer, x) -> str | None:
        """Why `layer` cannot run chunk by chunk on input `x` (a Sym with a time axis), or None."""
        if callable(self.streaming):
            return self.streaming(layer, x)
        if self.streaming == WHOLE:
            return "it needs the whole sequence at once"
        return None


CONVERTERS: dict[type, Converter] = {}


def converts(*types, recurrent: bool = False, mask_aware: bool = False, per_step: bool = False,
             streaming: str | Callable = PER_STEP):
    """Declare the decorated function the converter of `types` (Keras layer or op classes)."""
    if not callable(streaming) and streaming not in (PER_STEP, STATE, WHOLE):
        raise ValueError(f"streaming must be {PER_STEP!r}, {STATE!r}, {WHOLE!r} or a callable, got {streaming!r}")

    def register(fn):
        entry = Converter(fn, tuple(types), recurrent, mask_aware, per_step, streaming)
        for t in types:
            if t in CONVERTERS:
                raise ValueError(f"{t.__name__} has two converters: {CONVERTERS[t].fn.__name__} and {fn.__name__}")
            CONVERTERS[t] = entry
        return fn

    return register


@dataclass(frozen=True)
class Route:
    """How core.py converts one call: `converter` (None: tf2onnx), or `refusal` (a reason), and
    `note`, why the call did not take its type's usual route (for the manifest)."""

    converter: Converter | None
    note: str | None = None
    refusal: str | None = None


def lookup(op) -> tuple[Converter | None, type | None]:
    """(the converter of `op`'s type or nearest base, that type), or (None, None)."""
    for cls in type(op).__mro__:
        if cls in CONVERTERS:
            return CONVERTERS[cls], cls
    return None, None


def _own_call(op, base: type) -> bool:
    return getattr(type(op), "call", None) is not getattr(base, "call", None)


def route(op, mask) -> Route:
    """Rules 1 and 2 for a call of `op` (`mask`: what Keras passes it, or None)."""
    conv, base = lookup(op)
    if conv is None:
        return Route(None)
    if base is not type(op) and _own_call(op, base):
        what = f"{type(op).__name__} subclasses {base.__name__} with a call() of its own"
        if conv.recurrent and type(op).__module__.startswith("keras."):  # a Keras RNN rnnedge has no converter for
            return Route(None, refusal=f"layer type {type(op).__name__} is not supported by rnnedge's converter "
                                       "(no fused ONNX op computes it)")
        if conv.recurrent:
            return Route(None, refusal=f"{what}, which rnnedge cannot fuse: use {base.__name__} itself, or move "
                                       "the extra computation into layers around it")
        return Route(None, note=f"tf2onnx: {what}")
    if mask is not None and not (conv.mask_aware or conv.recurrent):
        return Route(None, note=f"tf2onnx: it receives a mask, which {conv.fn.__name__} does not read")
    note = f"{base.__name__}'s converter: {type(op).__name__} keeps its call()" if base is not type(op) else None
    return Route(conv, note=note)


def is_recurrent(op) -> bool:
    conv, _ = lookup(op)
    return conv is not None and conv.recurrent


def recurrent_types() -> tuple:
    return tuple(t for t, c in CONVERTERS.items() if c.recurrent)


def recurrent_names() -> frozenset[str]:
    """The class names of the recurrent layer types (a Keras 2 file's config names its layers so)."""
    return frozenset(t.__name__ for t in recurrent_types())
