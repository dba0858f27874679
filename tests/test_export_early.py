"""`rnnedge export`'s options that need no model are refused before TensorFlow loads (issue #28):
--tolerance, --atol/--rtol, a --custom .py file that is not there, --metric without --data or --quantize. Run with
TensorFlow blocked: each refusal is its own line, not "pip install 'rnnedge[export]'"."""

from __future__ import annotations

import json

from tests.helpers import run_without_tensorflow

CASES = [  # (extra arguments, what the one line says)
    (["--tolerance", "dense"], "expected OUTPUT=ATOL[,RTOL]"),
    (["--tolerance", "dense=abc"], "expected OUTPUT=ATOL[,RTOL]"),
    (["--atol", "-1"], "tolerances must be finite numbers >= 0"),
    (["--rtol", "nan"], "tolerances must be finite numbers >= 0"),
    (["--custom", "missing_layers.py"], "--custom missing_layers.py: no such file"),
    (["--metric", "accuracy"], "--metric accuracy scores the targets of --data"),
    (["--metric", "rmse", "--data", "d.npz"], "--metric rmse judges the --quantize variants"),  # else ignored
]


def test_export_options_refused_before_tensorflow_loads(tmp_path):
    model = tmp_path / "m.keras"
    model.write_bytes(b"")  # never read: each refusal comes first
    done = run_without_tensorflow(
        "import json\n"
        "from typer.testing import CliRunner\n"
        "from rnnedge.cli import app\n"
        f"cases = json.loads({json.dumps(json.dumps(CASES))})\n"
        "for extra, says in cases:\n"
        f"    r = CliRunner().invoke(app, ['export', r'{model}', '--out', r'{tmp_path / 'o'}', *extra])\n"
        "    lines = r.output.strip().splitlines()\n"
        "    assert r.exit_code == 1 and len(lines) == 1 and says in lines[0], (extra, r.output)\n"
    )
    assert done.returncode == 0 and "ok" in done.stdout, (done.stdout + done.stderr)[-1500:]
    assert not (tmp_path / "o").exists()
