"""manifest.json: round trip, unknown fields ignored, one-line refusals for bad folders."""

from __future__ import annotations

import json

import pytest

from rnnedge.errors import RnnEdgeError
from rnnedge.manifest import FORMAT_VERSION, Manifest, TensorSpec, is_time_axis


def _manifest() -> Manifest:
    return Manifest(inputs=[TensorSpec("x", ("batch", "time", 4), "float32"),
                            TensorSpec("h", ("batch", 8), "float32", role="state")],
                    outputs=[TensorSpec("y", ("batch", "time", 2), "float32"),
                             TensorSpec("h_out", ("batch", 8), "float32", role="state", feeds="h")],
                    opset=17, ir_version=8, streaming=True)


def test_round_trip_and_roles(tmp_path):
    m = _manifest()
    m.save(tmp_path)
    back = Manifest.load(tmp_path)
    assert back == m and back.format == FORMAT_VERSION
    assert [s.name for s in back.data_inputs] == ["x"] and [s.name for s in back.state_outputs] == ["h_out"]
    assert back.inputs[0].dynamic_axes == {0: "batch", 1: "time"}


def test_fields_a_newer_rnnedge_adds_are_ignored(tmp_path):
    _manifest().save(tmp_path)
    d = json.loads((tmp_path / "manifest.json").read_text())
    d["from_the_future"] = {"x": 1}
    (tmp_path / "manifest.json").write_text(json.dumps(d))
    assert Manifest.load(tmp_path).inputs[0].name == "x"


def test_bad_folders_and_files_get_one_line(tmp_path):
    with pytest.raises(RnnEdgeError, match="missing does not exist"):
        Manifest.load(tmp_path / "missing")
    (tmp_path / "model.keras").write_bytes(b"PK")
    with pytest.raises(RnnEdgeError, match=r"is a Keras model, not an export folder: export it first"):
        Manifest.load(tmp_path / "model.keras")
    with pytest.raises(RnnEdgeError, match="has no manifest.json"):
        Manifest.load(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(RnnEdgeError, match="is not a valid rnnedge manifest .*re-export"):
        Manifest.load(tmp_path)


def test_roles_are_checked_and_time_axes_named():
    with pytest.raises(ValueError, match="role must be"):
        TensorSpec("x", (1,), "float32", role="weights")
    assert is_time_axis("time") and is_time_axis("tokens_time") and not is_time_axis("batch")
