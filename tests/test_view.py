"""`rnnedge view DIR`: the export's model served by Netron on 127.0.0.1 (netron stood in for here:
the test checks what rnnedge asks of it, not Netron itself)."""

from __future__ import annotations

from tests.onnx_fixtures import gru_folder
from tests.test_cli import assert_user_error, invoke


def test_view_serves_the_model_on_localhost(fake_netron, tmp_path):
    folder = gru_folder(tmp_path / "exp")
    result = invoke("view", folder, "--port", 8123, "--no-browse")
    assert result.exit_code == 0, result.output
    assert fake_netron == [("start", str(folder / "model.onnx"), ("127.0.0.1", 8123), False), ("wait",)]
    assert "http://127.0.0.1:8123" in result.output


def test_view_refuses_a_missing_variant(fake_netron, tmp_path):
    folder = gru_folder(tmp_path / "exp")
    assert_user_error(invoke("view", folder, "--variant", "int8"), "no int8 variant", "rnnedge quantize")
    assert fake_netron == []


def test_view_without_netron_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setattr("rnnedge.preflight.missing", lambda extra: ["netron"] if extra == "view" else [])
    assert_user_error(invoke("view", gru_folder(tmp_path / "exp")), "pip install 'rnnedge[view]'")
