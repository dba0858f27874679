"""Random inputs for an export's TensorSpecs: one generator for the golden cases an export
writes, the latency cases bench and quantize time, and the baselines (numpy only)."""

from __future__ import annotations

import numpy as np

from rnnedge.errors import RnnEdgeError
from rnnedge.manifest import BATCH, Manifest, TensorSpec, is_time_axis


def sample(spec: TensorSpec, shape: tuple[int, ...], rng: np.random.Generator,
           keep: np.ndarray | None = None) -> np.ndarray:
    """One array for `spec`: floats from N(0, 1), token ids in [0, vocab) ([1, vocab) where 0 pads; of
    the spec's dtype, float too, where it has a vocab),
    bool masks all True (random where no padding is declared). `keep` ([batch, time] bool) marks
    the real steps; the others get the spec's padding value."""
    if spec.dtype == "bool":
        x = np.ones(shape, bool) if spec.pad_value is not None else rng.random(shape) < 0.5
    elif spec.dtype.startswith(("int", "uint")):
        low = 1 if spec.pad_value is not None else 0
        x = rng.integers(low, max(spec.vocab or 10, low + 1), size=shape).astype(spec.dtype)
    elif spec.vocab:  # token ids in a float input (a Keras 2 Embedding's model input is float32)
        x = rng.integers(0, spec.vocab, size=shape).astype(spec.dtype)
    else:
        x = rng.normal(0, 1, size=shape).astype(spec.dtype)
    if spec.pad_value is not None and keep is not None and x.shape[:2] == keep.shape:
        x[~keep] = spec.pad_value
    return x


def sized(spec: TensorSpec, dims: dict, default: int | None = 1) -> tuple[int, ...]:
    """The spec's shape with its named axes sized from `dims` (others `default`; None: refuse)."""
    shape = []
    for i, d in enumerate(spec.shape):
        if isinstance(d, int):
            shape.append(d)
        elif d in dims:
            shape.append(dims[d])
        elif default is not None:
            shape.append(default)
        else:
            raise RnnEdgeError(f"input '{spec.name}' has a dynamic axis '{d}' (dimension {i}) that cannot be sized "
                               "here (only 'batch' and time axes): re-export with that axis fixed")
    return tuple(shape)


def random_inputs(manifest: Manifest, batch: int, steps: int | None, seed: int = 0) -> dict[str, np.ndarray]:
    """Data inputs of `batch` rows and `steps` steps (no padding); state inputs (streaming
    exports) zero, as a fresh stream starts."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for spec in manifest.inputs:
        dims = {BATCH: batch, **({d: steps for d in spec.shape if is_time_axis(d)} if steps is not None else {})}
        shape = sized(spec, dims, default=None)
        feeds[spec.name] = np.zeros(shape, spec.dtype) if spec.role == "state" else sample(spec, shape, rng)
    return feeds
