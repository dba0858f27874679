"""Native log lines are kept off the terminal while a step works, and shown when it fails."""

from __future__ import annotations

import os

import pytest

from rnnedge.logs import quiet_native_stderr


def test_quiet_native_stderr_hides_a_working_step_and_replays_a_failing_one(capfd):
    with quiet_native_stderr():
        os.write(2, b"I0000 cpu_feature_guard.cc: noise\n")
    assert "noise" not in capfd.readouterr().err
    with pytest.raises(RuntimeError), quiet_native_stderr():
        os.write(2, b"E0000 converter.cc: the real reason\n")
        raise RuntimeError("conversion failed")
    assert "the real reason" in capfd.readouterr().err
