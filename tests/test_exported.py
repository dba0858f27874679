"""The committed `exported/` zoo replays its golden samples with onnxruntime (no TensorFlow needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

import rnnedge
from rnnedge.check import check_dir
from rnnedge.manifest import Manifest

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


def test_unidirectional_exports_stream():
    streaming = [n for n in FOLDERS if Manifest.load(EXPORTED / n).streaming]
    # Bidirectional and encoder-decoder models cannot stream; digits-conv's Conv2D mixes rows.
    assert set(streaming) == {n for n in FOLDERS if not n.startswith(("sentiment", "seq2seq", "digits-conv"))}
