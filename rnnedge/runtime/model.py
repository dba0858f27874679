"""Open an export folder (`load`) and run whole sequences through it (`Model.run`)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from rnnedge.errors import RnnEdgeError
from rnnedge.manifest import MODEL, Manifest, TensorSpec
from rnnedge.runtime.inputs import Outputs, Slot, fmt_shape, ort_run
from rnnedge.runtime.placement import Placement, placement_of
from rnnedge.runtime.providers import (
    TRT_SHAPES,
    make_session,
    normalize_provider,
    precision_options,
    provider_options_for,
    resolve_providers,
    session_options,
)
from rnnedge.runtime.signature import Signature
from rnnedge.runtime.stream import Stream


def _model_file(folder: Path, manifest: Manifest, variant: str) -> Path:
    if variant in manifest.variants:
        entry = manifest.variants[variant]
        name = entry.get("file") if isinstance(entry, Mapping) else None
        if not name:
            raise RnnEdgeError(f"manifest.json variant {variant!r} names no file; re-export the model")
    elif variant == "fp32":
        name = MODEL
    else:
        have = ", ".join(sorted({"fp32", *manifest.variants}))
        raise RnnEdgeError(f"{folder} has no {variant!r} variant (it has: {have}); "
                           f"make it with `rnnedge quantize {folder}` or pick one of those")
    path = folder / name
    if not path.is_file():
        raise RnnEdgeError(f"{path} is missing: the export folder is incomplete; re-export the model")
    return path


def load(
    folder: str | os.PathLike,
    provider: str | Sequence[str] = "auto",
    *,
    variant: str = "fp32",
    threads: int | None = None,
    provider_options: Mapping[str, Any] | None = None,
    fallback: bool = False,
    trt_shapes: Mapping[str, tuple[int, int, int]] | None = None,
    verify: bool = True,
    precision: str | None = None,
    explain: bool = False,
) -> Model:
    """Open an export folder for inference (numpy + onnxruntime only).

    provider: "auto" (TensorRT, then CUDA, then CPU, among those installed), a name ("cpu",
        "cuda", "tensorrt", "openvino", "qnn", case-insensitive, or onnxruntime's full name), or a
        list of them in order of preference. Plugin providers (OpenVINO, QNN: wheels beside
        onnxruntime) are registered by name. A provider that is not installed, finds no device, or
        does not start, raises RnnEdgeError (with its pip line) unless `fallback=True`, which warns
        and runs on CPU.
    variant: "fp32" (model.onnx) or a key of the manifest's `variants` ("int8", "fp16").
    threads: intra-op threads on CPU (None: onnxruntime's default, all cores; 1 is fastest
        for batch-1 recurrent models).
    provider_options: a flat dict for the first provider (e.g. {"device_id": 1}), or a dict of
        provider name -> options.
    trt_shapes: TensorRT shape ranges per named dynamic axis, (min, opt, max); merged over
        `TRT_SHAPES` = {"batch": (1, 1, 32), "time": (1, 100, 1000)}.
    verify: check the model file's size and sha256 against the manifest first, refusing a changed
        or swapped file in one line (exports made before rnnedge recorded them are not checked).
    precision: the precision the first provider computes in, pinned in its options: OpenVINO "f32"
        (its default here, whatever the CPU), "bf16" or "f16"; QNN "fp16" (HTP). None: the table's default.
    explain: start the session with onnxruntime's verbose log captured, so that `model.placement()`
        gives each refused node's reason (slower to start; nothing reaches the terminal).
    """
    folder = Path(folder)
    manifest = Manifest.load(folder)
    path = _model_file(folder, manifest, variant)
    if verify:
        manifest.verify(folder, [path.name])
    so = session_options(threads)
    auto = isinstance(provider, str) and provider.strip().lower() == "auto"
    names = [provider] if isinstance(provider, str) else list(provider or [])
    first = normalize_provider(names[0]) if names and not auto else None
    if precision is not None and first is not None:
        precision_options(first, precision)  # refused before anything starts, even where it falls back
    chosen = resolve_providers(provider, fallback)
    pinned = precision if chosen[0] == first else None
    shapes = {**TRT_SHAPES, **dict(trt_shapes or {})}
    options = provider_options_for(chosen, provider_options, folder, manifest, shapes, pinned)
    log: list[str] | None = [] if explain else None
    session = make_session(path, so, chosen, options, fallback, auto, log=log)
    model = Model(folder, manifest, session, variant=variant, path=path)
    model.precision = precision_options(model.provider, pinned)[0]
    model.session_log = "".join(log or [])
    return model


class Model:
    """A loaded export folder: `run` whole sequences, `stream` them chunk by chunk.

    inputs / outputs: the manifest's TensorSpecs (data first, then state) in graph order.
    provider: the execution provider that actually runs (first of the session's providers).
    session: the onnxruntime InferenceSession, for anything this class does not cover.
    signature: the inputs and outputs and their checks (`runtime/signature.py`); a stream is built
    from the session and the signature alone. `slots`, `data_slots`, `state_slots`, `output_names`,
    `data_output_names`, `gather`, `prepare`, `state_shape` and `why_not_streamable` are its.
    """

    def __init__(self, folder: Path, manifest: Manifest, session: ort.InferenceSession, *, variant: str = "fp32",
                 path: Path | None = None):
        self.folder = Path(folder)
        self.path = Path(path) if path is not None else self.folder / MODEL
        self.manifest = manifest
        self.session = session
        self.variant = variant
        self.provider: str = session.get_providers()[0]
        self.precision: str = "fp32"  # what the provider was pinned to compute in (`load(precision=)`)
        self.session_log: str = ""  # onnxruntime's verbose log at the session's start (`load(explain=True)`)
        sig = self.signature = Signature(self.folder, manifest, session.get_inputs(), session.get_outputs(), self.path)
        self.inputs: list[TensorSpec] = sig.inputs
        self.outputs: list[TensorSpec] = sig.outputs
        self.slots = sig.slots
        self.data_slots = sig.data_slots
        self.state_slots = sig.state_slots
        self.output_names = sig.output_names
        self.data_output_names = sig.data_output_names

    @property
    def nonfinite_advice(self) -> str:
        """What a caller that meets non-finite inputs can do (a server's clients cannot pass allow_nonfinite)."""
        return self.signature.nonfinite_advice

    @nonfinite_advice.setter
    def nonfinite_advice(self, advice: str) -> None:
        self.signature.nonfinite_advice = advice  # the model's streams share its signature, and so the advice

    def placement(self) -> Placement:
        """Which provider runs each node, as onnxruntime recorded it, with each node's Keras layer and,
        for nodes the provider refused, its reason (from the log `load(explain=True)` captured)."""
        return placement_of(self.session, self.manifest.fused_nodes, self.manifest.layers, self.session_log)

    @property
    def name(self) -> str:
        return str(self.manifest.source.get("name") or self.folder.name)

    def __repr__(self) -> str:
        ins = ", ".join(f"{t.name}{fmt_shape(t.shape)}" for t in self.inputs)
        return f"<rnnedge.Model {self.name!r} ({self.variant}) on {self.provider}: {ins}>"

    # -- the signature's, for callers of a model ----------------------------------------------

    def gather(self, arrays: tuple, named: dict, *, allow_state: bool) -> dict[str, Any]:
        """Positional arrays -> data inputs in order, plus named ones (`Signature.gather`)."""
        return self.signature.gather(arrays, named, allow_state=allow_state)

    def prepare(self, given: dict[str, Any], allow_nonfinite: bool, axes: dict[str, tuple[int, str]],
                one_step: frozenset = frozenset()) -> dict[str, np.ndarray]:
        """Every check; arrays ready for onnxruntime (`Signature.prepare`)."""
        return self.signature.prepare(given, allow_nonfinite, axes, one_step)

    def state_shape(self, slot: Slot, axes: Mapping[str, tuple[int, str]]) -> tuple[int, ...]:
        return self.signature.state_shape(slot, axes)

    def why_not_streamable(self) -> str:
        """Why this model has no state to carry, as one line."""
        return self.signature.why_not_streamable()

    # -- running ------------------------------------------------------------------------------

    def run(self, *arrays, allow_nonfinite: bool = False, **named) -> Outputs:
        """Run whole sequences: positional arrays are the data inputs in order, or pass them by name.

        State inputs (streaming exports) may be passed by name; those left out start at zero.
        A single dict positional argument is taken as name -> array. Returns every output,
        state outputs included, as `Outputs` in graph order.
        """
        sig = self.signature
        given = sig.gather(arrays, named, allow_state=True)
        axes: dict[str, tuple[int, str]] = {}
        feeds = sig.prepare(given, allow_nonfinite, axes)
        for slot in sig.state_slots:
            if slot.name not in feeds:
                feeds[slot.name] = np.zeros(sig.state_shape(slot, axes), slot.dtype)
        for name, a in feeds.items():
            if not a.flags.c_contiguous:
                feeds[name] = np.ascontiguousarray(a)
        values = ort_run(sig, lambda: self.session.run(sig.output_names, feeds), feeds)
        return Outputs(zip(sig.output_names, values), self.provider, sig.data_output_names)

    __call__ = run

    def stream(self, batch: int = 1, *, allow_nonfinite: bool = False) -> Stream:
        """A stream of `batch` independent sequences whose state is carried between `push` calls."""
        return Stream(self.session, self.signature, batch, allow_nonfinite=allow_nonfinite)
