"""Run an export's variants on its golden inputs and measure them against Keras' golden outputs,
independently of `rnnedge.quantize.gate` (only its 2%-of-range share is shared)."""

from __future__ import annotations

import numpy as np

import rnnedge
from rnnedge.check import read_golden
from rnnedge.quantize.gate import RANGE_SHARE


def variant_errors(folder, variant: str) -> dict[str, tuple[float, float]]:
    """Output -> (max |diff| of `variant` against Keras' golden outputs over every golden case,
    RANGE_SHARE of that output's range in Keras' outputs: the gate's bound)."""
    model = rnnedge.load(folder, "cpu", variant=variant)
    want: dict[str, list] = {}
    diffs: dict[str, float] = {}
    for _, inputs, expected in read_golden(folder):
        got = dict(model.run(**inputs))
        for name, e in expected.items():
            e = np.asarray(e, np.float64)
            assert np.isfinite(e).all(), name  # golden data holds no NaN: every value is compared
            want.setdefault(name, []).append(e.ravel())
            diffs[name] = max(diffs.get(name, 0.0), float(np.abs(np.asarray(got[name], np.float64) - e).max()))
    spans = {name: float(np.ptp(np.concatenate(v))) for name, v in want.items()}
    return {name: (diffs[name], max(RANGE_SHARE * spans[name], 1e-6)) for name in want}
