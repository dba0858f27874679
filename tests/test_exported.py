"""The committed `exported/` zoo replays its golden samples with onnxruntime (no TensorFlow needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

import rnnedge
from rnnedge.check import check_dir
from rnnedge.manifest import Manifest
from tests.variants import variant_errors

EXPORTED = Path(__file__).resolve().parent.parent / "exported"
FOLDERS = sorted(p.parent.name for p in EXPORTED.glob("*/manifest.json"))


def test_the_zoo_is_exported():
    from rnnedge.zoo import NAMES

    assert set(FOLDERS) == set(NAMES), "run `make demo` and commit exported/"


@pytest.mark.parametrize("name", FOLDERS)
def test_committed_export_still_matches_keras(name):
    folder = EXPORTED / name
    manifest = Manifest.load(folder)
    assert manifest.parity["passed"]
    report = check_dir(folder, "cpu")
    assert report.passed, report.failures()
    for variant, facts in manifest.variants.items():
        assert (folder / facts["file"]).is_file(), variant
        rnnedge.load(folder, "cpu", variant=variant)  # every variant loads
    assert manifest.recommended.get("CPUExecutionProvider") in manifest.variants


@pytest.mark.parametrize("name", FOLDERS)
def test_committed_variants_run_as_they_were_judged(name):
    """Each quantized variant, run here on the golden inputs against Keras' golden outputs, is the
    variant that was measured: its error is the recorded one (within a quarter of the gate's bound,
    room for another CPU's rounding), and within the gate (2% of Keras' range) wherever the
    recorded golden gate passed. A zoo variant is gated by its task metric, which needs the
    zoo's test split: there the golden outputs are checked, not the metric."""
    folder = EXPORTED / name
    manifest = Manifest.load(folder)
    for variant, facts in manifest.variants.items():
        if variant == "fp32":
            continue  # checked against Keras above, with fp32's own tolerance
        assert facts["gate"]["passed"], variant
        recorded = facts["gate"]["golden"]["outputs"]
        for output, (diff, bound) in variant_errors(folder, variant).items():
            assert bound == pytest.approx(recorded[output]["limit"], rel=1e-6), (variant, output)
            assert abs(diff - recorded[output]["max_abs"]) <= bound / 4, (variant, output, diff, recorded[output])
            if recorded[output]["passed"]:
                assert diff <= bound, (variant, output, diff, bound)


def test_unidirectional_exports_stream():
    streaming = [n for n in FOLDERS if Manifest.load(EXPORTED / n).streaming]
    # Bidirectional and encoder-decoder models cannot stream; digits-conv's Conv2D mixes rows.
    assert set(streaming) == {n for n in FOLDERS if not n.startswith(("sentiment", "seq2seq", "digits-conv"))}
