"""The figures as a reader sees them: the latency plot names rnnedge's lines, keeps a colour per
candidate from plot to plot, and writes its log axis in plain numbers."""

from __future__ import annotations

import pytest

from rnnedge.bench import BenchRow, plot
from rnnedge.bench.report import candidate_label

pytest.importorskip("matplotlib")


@pytest.fixture
def drawn(monkeypatch):
    """The figures plot() saves, kept for inspection."""
    from matplotlib.figure import Figure

    figures = []
    saved = Figure.savefig
    monkeypatch.setattr(Figure, "savefig", lambda self, *a, **k: (figures.append(self), saved(self, *a, **k))[1])
    return figures


def _rows(candidates, scale=1.0):
    providers = {"keras": "TensorFlow", "litert": "LiteRT (CPU)"}
    return [BenchRow(candidate=c, provider=providers.get(c, "CPUExecutionProvider"), batch=1, time=t, threads=1,
                     p50_ms=scale * (k + 1) * t / 80, p90_ms=100.0, p99_ms=100.0, seq_per_s=1.0, steps_per_s=1.0)
            for k, c in enumerate(candidates) for t in (16, 100, 400)]


def _lines(fig):
    ax = fig.axes[0]
    return {line.get_label(): line.get_color() for line in ax.get_lines()}


def test_lines_say_which_are_rnnedges_and_keep_their_colour(drawn, tmp_path):
    plot(_rows(["fp32", "int8", "tf2onnx", "keras"]), tmp_path / "a.png", model="m")
    plot(_rows(["keras", "fp32"]), tmp_path / "b.png", model="m")  # another order, fewer candidates
    first, second = (_lines(f) for f in drawn)
    assert set(first) == {"rnnedge fp32, CPU", "rnnedge int8, CPU", "tf2onnx, CPU", "keras, TensorFlow"}
    assert first["rnnedge fp32, CPU"] == second["rnnedge fp32, CPU"]
    assert first["keras, TensorFlow"] == second["keras, TensorFlow"]
    assert len(set(first.values())) == 4


def test_log_axis_ticks_are_plain_numbers(drawn, tmp_path):
    plot(_rows(["fp32", "keras"], scale=0.5), tmp_path / "a.png")  # 0.1 ms to 10 ms: a log axis
    ax = drawn[0].axes[0]
    assert ax.get_yscale() == "log"
    drawn[0].canvas.draw()
    low, high = ax.get_ylim()
    labels = [t.get_text() for t in ax.get_yticklabels() if low <= t.get_position()[1] <= high and t.get_text()]
    assert {"0.2", "0.5", "1", "2", "5"} <= set(labels), labels
    assert not any("10^" in s or "$" in s for s in labels)


def test_candidate_labels():
    assert candidate_label("fp32") == "rnnedge fp32"
    assert candidate_label("stream-int8") == "rnnedge int8, streamed"
    assert candidate_label("tf2onnx") == "tf2onnx" and candidate_label("litert-int8") == "litert-int8"
    assert candidate_label("floor").startswith("floor")
