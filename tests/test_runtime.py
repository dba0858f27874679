"""rnnedge.runtime on hand-built ONNX folders (no TensorFlow): running, input checks, streaming,
providers, files. GPU tests are marked `gpu` and skipped where no CUDA/TensorRT provider exists.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import rnnedge
from rnnedge import RnnEdgeError, runtime
from rnnedge.manifest import Manifest, TensorSpec
from rnnedge.runtime import Outputs, available_providers, load, providers, read_inputs, run_file, write_outputs

try:
    from tests.onnx_fixtures import bidirectional_folder, gru_folder, identity_folder, token_folder
except ImportError:  # tests/ on sys.path (pytest's default "prepend" import mode)
    from onnx_fixtures import bidirectional_folder, gru_folder, identity_folder, token_folder

REPO = Path(__file__).resolve().parents[1]
GPU = [p for p in ("CUDAExecutionProvider", "TensorrtExecutionProvider") if p in available_providers()]
needs_gpu = pytest.mark.skipif(not GPU, reason="no CUDA or TensorRT execution provider")
cpu_only = pytest.mark.skipif("CUDAExecutionProvider" in available_providers(), reason="CUDA is installed here")


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("exports")
    return {
        "gru": gru_folder(root / "gru"),
        "gru2": gru_folder(root / "gru2", extra_input=True),
        "masked": gru_folder(root / "masked", pad_value=0.0),
        "plain": gru_folder(root / "plain", streaming=False),
        "tokens": token_folder(root / "tokens"),
        "tokens32": token_folder(root / "tokens32", dtype="int32"),
        "bigru": bidirectional_folder(root / "bigru"),
        "identity": identity_folder(root / "identity"),
        "identity0": identity_folder(root / "identity0", streaming=False),
    }


@pytest.fixture(scope="module")
def gru(folders):
    return load(folders["gru"], "cpu", threads=1)


@pytest.fixture(scope="module")
def tokens(folders):
    return load(folders["tokens"], "cpu", threads=1)


def seq(batch=2, steps=20, features=4, seed=0):
    return np.random.default_rng(seed).normal(size=(batch, steps, features)).astype(np.float32)


def error(fn, *args, **kwargs) -> str:
    with pytest.raises(RnnEdgeError) as info:
        fn(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message, "errors are one line"
    return message


# ---------------------------------------------------------------------------------- running


def test_run_positional_named_and_outputs(gru):
    x = seq()
    out = gru.run(x)
    assert isinstance(out, Outputs) and list(out) == ["y", "probs", "h_out"]
    assert out.provider == gru.provider == "CPUExecutionProvider"
    assert out[0] is out["y"] and out[-1] is out["h_out"]
    assert [a.shape for a in out.data] == [(2, 20, 8), (2, 3)]
    assert out.data_names == ["y", "probs"]
    np.testing.assert_array_equal(gru.run(x=x)["y"], out["y"])
    np.testing.assert_array_equal(gru.run({"x": x})["y"], out["y"])
    np.testing.assert_allclose(out["probs"].sum(axis=1), 1, rtol=1e-5)
    # the last state output is the last step of y
    np.testing.assert_allclose(out["h_out"], out["y"][:, -1], atol=1e-6)


def test_model_attributes(gru, folders):
    assert gru.folder == folders["gru"] and gru.variant == "fp32"
    assert [t.name for t in gru.inputs] == ["x", "h"] and [t.role for t in gru.inputs] == ["data", "state"]
    assert [t.name for t in gru.outputs] == ["y", "probs", "h_out"]
    assert isinstance(gru.manifest, Manifest)
    assert "CPUExecutionProvider" in repr(gru)


def test_missing_state_is_zero_and_state_by_name(gru):
    x = seq()
    whole = gru.run(x)
    zero = gru.run(x, h=np.zeros((2, 8), np.float32))
    np.testing.assert_array_equal(whole["y"], zero["y"])
    first = gru.run(x[:, :9])
    second = gru.run(x[:, 9:], h=first["h_out"])
    np.testing.assert_allclose(np.concatenate([first["y"], second["y"]], axis=1), whole["y"], atol=1e-5)


def test_python_lists_accepted(gru):
    x = seq(batch=1, steps=3)
    np.testing.assert_allclose(gru.run(x.tolist())["y"], gru.run(x)["y"], atol=1e-6)


def test_float64_cast_to_float32(gru):
    x = seq()
    out = gru.run(x.astype(np.float64))
    assert out["y"].dtype == np.float32
    np.testing.assert_array_equal(out["y"], gru.run(x)["y"])


def test_integer_array_for_float_input_is_cast(gru):
    x = np.ones((1, 3, 4), np.int64)
    np.testing.assert_array_equal(gru.run(x)["y"], gru.run(x.astype(np.float32))["y"])


def test_int32_ids_cast_to_declared_int64(tokens):
    ids = np.array([[1, 2, 3, 0]])
    np.testing.assert_array_equal(tokens.run(ids.astype(np.int32))["y"], tokens.run(ids)["y"])


def test_int64_ids_cast_to_declared_int32(folders):
    m = load(folders["tokens32"], "cpu")
    ids = np.array([[1, 2, 3], [4, 0, 9]])
    out = m.run(ids.astype(np.int64))
    assert out["y"].shape == (2, 3, 8)
    np.testing.assert_array_equal(out["y"], m.run(ids.astype(np.int32))["y"])  # the cast keeps every id


# ------------------------------------------------------------------------- input checks: names


def test_unknown_input_name(gru):
    message = error(gru.run, seq(), xx=seq())
    assert "unknown input 'xx'" in message and "did you mean 'x'" in message


def test_missing_input(gru):
    message = error(gru.run, h=np.zeros((2, 8), np.float32))
    assert "missing input 'x'" in message and "[batch, time, 4]" in message


def test_too_many_positional(gru):
    assert "2 positional arrays" in error(gru.run, seq(), seq())


def test_input_given_twice(gru):
    assert "'x' given both positionally and by name" in error(gru.run, seq(), x=seq())


def test_names_checked_before_shapes(gru):
    message = error(gru.run, seq()[0], bogus=1)  # bad rank and an unknown name: only the name phase
    assert "bogus" in message and "dimensions" not in message


# ------------------------------------------------------------------------ input checks: shapes


def test_wrong_rank(gru):
    message = error(gru.run, seq()[0])
    assert "input 'x'" in message and "expected 3 dimensions [batch, time, 4]" in message and "[20, 4]" in message


def test_fixed_dimension_mismatch(gru):
    message = error(gru.run, np.zeros((2, 5, 6), np.float32))
    assert "input 'x'" in message and "dimension 2 must be 4" in message and "got 6" in message


@pytest.mark.parametrize("dtype", [bool, np.complex64, "U3", object])
def test_unsupported_dtypes_refused(gru, dtype):
    x = np.zeros((1, 2, 4), dtype=dtype) if dtype is not object else np.array([[[1, "a", 2, 3]]], dtype=object)
    message = error(gru.run, x)
    assert "input 'x'" in message and "expected float32" in message


def test_float_for_int_input_refused(tokens):
    message = error(tokens.run, np.array([[1.0, 2.0]]))
    assert "input 'tokens'" in message and "integer ids" in message and "float64" in message


def test_ragged_list_refused(gru):
    message = error(gru.run, [[[0.0] * 4, [0.0] * 4], [[0.0] * 4]])
    assert "input 'x'" in message and "rectangular" in message


def test_batch_disagreement(folders):
    m = load(folders["gru2"], "cpu")
    message = error(m.run, seq(batch=2, steps=5), np.zeros((3, 5, 2), np.float32))
    assert "input 'aux'" in message and "'batch' is 3" in message and "input 'x' has 'batch' 2" in message


def test_state_batch_disagreement(gru):
    message = error(gru.run, seq(batch=2), h=np.zeros((3, 8), np.float32))
    assert "input 'h'" in message and "'batch'" in message


def test_time_disagreement(folders):
    m = load(folders["gru2"], "cpu")
    message = error(m.run, seq(batch=2, steps=5), np.zeros((2, 6, 2), np.float32))
    assert "input 'aux'" in message and "'time' is 6" in message


def test_empty_time_axis(gru, tokens):
    assert "input 'x': the 'time' axis (dimension 1) is empty" in error(gru.run, np.zeros((1, 0, 4), np.float32))
    assert "input 'tokens'" in error(tokens.run, np.zeros((1, 0), np.int64))


def test_shapes_checked_before_values(folders):
    m = load(folders["gru2"], "cpu")
    x = seq(batch=1, steps=3)
    x[0, 0, 0] = np.nan
    message = error(m.run, x, np.zeros((1, 3, 5), np.float32))
    assert "input 'aux'" in message and "nan" not in message


def test_every_failure_of_a_phase_is_reported(folders):
    m = load(folders["gru2"], "cpu")
    message = error(m.run, np.zeros((1, 3, 5), np.float32), np.zeros((1, 3, 7), np.float32))
    assert message.startswith("2 input problems") and "input 'x'" in message and "input 'aux'" in message


# ------------------------------------------------------------------------ input checks: values


def test_token_ids_out_of_vocab(tokens):
    message = error(tokens.run, np.array([[1, 2, 10]]))
    assert "input 'tokens'" in message and "[0, 10)" in message and "got 10 at [0, 2]" in message
    assert "got -1" in error(tokens.run, np.array([[-1, 2]]))


def test_int64_ids_too_big_for_int32(folders):
    m = load(folders["tokens32"], "cpu")
    assert "input 'tokens'" in error(m.run, np.array([[2**40]], np.int64))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nonfinite_refused(gru, bad):
    x = seq()
    x[1, 3, 2] = bad
    message = error(gru.run, x)
    assert "input 'x'" in message and "[1, 3, 2]" in message and "allow_nonfinite=True" in message


def test_float64_overflow_is_nonfinite(gru):
    x = seq().astype(np.float64)
    x[0, 0, 0] = 1e300
    assert "input 'x'" in error(gru.run, x)


def test_allow_nonfinite(gru):
    x = seq()
    clean = gru.run(x)
    x[0, 5, 0] = np.nan
    out = gru.run(x, allow_nonfinite=True)  # reaches onnxruntime (whose GRU kernel may absorb a NaN)
    assert out["y"].shape == (2, 20, 8)
    np.testing.assert_array_equal(out["y"][1], clean["y"][1])  # the other row is untouched
    np.testing.assert_array_equal(out["y"][0, :5], clean["y"][0, :5])  # and the steps before the NaN
    assert not np.array_equal(out["y"][0, 5:], clean["y"][0, 5:], equal_nan=True)  # the NaN went in


def test_padding_anywhere_is_accepted_tokens(tokens):
    """Exports reproduce Keras' masks of any pattern in the graph (tests/test_masks.py checks the
    numbers), so the runtime no longer refuses front padding or gaps."""
    ids = np.array([[1, 2, 3, 4], [0, 2, 3, 0], [0, 0, 0, 0]])
    out = tokens.run(ids)
    assert out["y"].shape[:2] == (3, 4)
    for row in range(3):  # each row as it would run alone: accepted, and computed, not only shaped
        alone = tokens.run(ids[row:row + 1])
        np.testing.assert_allclose(out["y"][row], alone["y"][0], atol=1e-6)
        np.testing.assert_allclose(out["h_out"][row], alone["h_out"][0], atol=1e-6)
    np.testing.assert_array_equal(out["h_out"][2], 0)  # a row of padding only keeps its (zero) state


def test_padding_anywhere_is_accepted_masked_features(folders):
    m = load(folders["masked"], "cpu")
    x = seq(batch=2, steps=5)
    x[0, :2] = 0  # front padding
    x[1, 1] = 0  # a gap
    out = m.run(x)
    assert out["y"].shape == (2, 5, 8)
    for row in range(2):
        np.testing.assert_allclose(out["y"][row], m.run(x[row:row + 1])["y"][0], atol=1e-6)


def test_format_1_exports_still_refuse_padding_before_real_steps(folders, tmp_path):
    """Exports made before masks were exact in the graph (manifest format 1) turned masks into
    sequence_lens: for them front padding and gaps stay refused, with what to do."""
    import json
    import shutil

    old = tmp_path / "old"
    shutil.copytree(folders["masked"], old)
    manifest = json.loads((old / "manifest.json").read_text())
    manifest["format"] = 1
    (old / "manifest.json").write_text(json.dumps(manifest))
    m = load(old, "cpu")
    x = seq(batch=2, steps=5)
    x[0, 3:] = 0  # trailing padding: exact in a format-1 export too
    x[1, 2, 0] = 0  # one zero feature is not a padding step
    m.run(x)
    x[1, :2] = 0
    message = error(m.run, x)
    assert "row 1" in message and "manifest format 1" in message and "re-export" in message


def test_padded_rows_match_shorter_sequences(tokens):
    ids = np.array([[4, 5, 6, 7], [4, 5, 0, 0]])
    padded = tokens.run(ids)
    short = tokens.run(ids[1:, :2])
    np.testing.assert_allclose(padded["h_out"][1], short["h_out"][0], atol=1e-6)
    np.testing.assert_array_equal(padded["y"][1, 2:], 0)  # ONNX writes zeros at padded steps


# --------------------------------------------------------------------------------- streaming


@pytest.mark.parametrize("chunk", [1, 3, 7, 20])
def test_stream_chunks_match_whole_sequence(gru, chunk):
    x = seq(batch=2, steps=20)
    whole = gru.run(x)
    stream = gru.stream(batch=2)
    ys = []
    for start in range(0, 20, chunk):
        out = stream.push(x[:, start:start + chunk])
        assert list(out) == ["y", "probs"]  # data outputs only
        ys.append(out["y"])
    np.testing.assert_allclose(np.concatenate(ys, axis=1), whole["y"], atol=1e-5)
    np.testing.assert_allclose(out["probs"], whole["probs"], atol=1e-5)
    np.testing.assert_allclose(stream.state["h"], whole["h_out"], atol=1e-5)


def test_stream_chunk_lengths_may_change_every_call(gru):
    x = seq(batch=1, steps=24)
    whole = gru.run(x)
    stream = gru.stream()
    ys, start = [], 0
    for n in [1, 5, 1, 5, 2, 2, 8]:
        ys.append(stream.push(x[:, start:start + n])["y"])
        start += n
    np.testing.assert_allclose(np.concatenate(ys, axis=1), whole["y"], atol=1e-5)


def test_stream_single_step_without_time_axis(gru):
    x = seq(batch=2, steps=6)
    whole = gru.run(x)
    stream = gru.stream(batch=2)
    for t in range(6):
        out = stream.push(x[:, t])  # [batch, features]: one step
        assert out["y"].shape == (2, 8) and out["probs"].shape == (2, 3)
        np.testing.assert_allclose(out["y"], whole["y"][:, t], atol=1e-5)


def test_stream_tokens_single_step_and_idle_rows(tokens):
    ids = np.array([[1, 2, 3, 4, 5], [6, 7, 8, 9, 1]])
    whole = tokens.run(ids)
    stream = tokens.stream(batch=2)
    stream.push(ids[:, :2])
    stream.push(np.array([[3], [0]]))  # row 1 has nothing this tick: padded, its state is kept
    stream.push(np.array([[4, 5], [8, 9]]))
    stream.push(np.array([[0], [1]]))  # row 0 idle, row 1 gets its last id
    np.testing.assert_allclose(stream.state["h"], whole["h_out"], atol=1e-5)
    stream.push(np.array([1, 2]))  # 1-D ids: one step per row
    assert stream.state["h"].shape == (2, 8)


def test_streams_in_a_batch_and_reset_of_one_row(gru):
    x = seq(batch=3, steps=12, seed=3)
    stream = gru.stream(batch=3)
    stream.push(x[:, :5])
    stream.reset(1)
    assert np.all(stream.state["h"][1] == 0) and np.any(stream.state["h"][0] != 0)
    last = stream.push(x[:, 5:])
    whole = gru.run(x)
    fresh = gru.run(x[1:2, 5:])
    np.testing.assert_allclose(last["probs"][[0, 2]], whole["probs"][[0, 2]], atol=1e-5)
    np.testing.assert_allclose(last["probs"][1], fresh["probs"][0], atol=1e-5)
    np.testing.assert_allclose(last["y"][1], fresh["y"][0], atol=1e-5)


def test_reset_all_gives_a_fresh_stream(gru):
    x = seq(batch=2, steps=6)
    stream = gru.stream(batch=2)
    first = stream.push(x)
    stream.push(x)
    stream.reset()
    assert not stream.state["h"].any()
    np.testing.assert_array_equal(stream.push(x)["y"], first["y"])


def test_reset_index_checked(gru):
    stream = gru.stream(batch=2)
    assert "[0, 2)" in error(stream.reset, 2)
    assert "row number" in error(stream.reset, "0")
    stream.reset(-1)  # python-style negative index


def test_state_is_a_copy_and_load_state_round_trips(gru):
    x = seq(batch=1, steps=8)
    stream = gru.stream()
    stream.push(x[:, :4])
    saved = stream.state
    saved["h"][:] = 123  # a copy: the stream is unaffected
    saved = stream.state
    tail = stream.push(x[:, 4:])
    other = gru.stream()
    other.load_state(saved)
    np.testing.assert_array_equal(other.push(x[:, 4:])["y"], tail["y"])
    np.testing.assert_allclose(gru.run(x[:, 4:], **saved)["y"], tail["y"], atol=1e-6)
    assert "expected shape [1, 8]" in error(other.load_state, {"h": np.zeros((2, 8))})
    assert "not a state input" in error(other.load_state, {"x": np.zeros((1, 8))})


def test_failed_push_leaves_state_untouched(gru):
    x = seq(batch=1, steps=4)
    stream = gru.stream()
    stream.push(x)
    before = stream.state["h"]
    bad = x.copy()
    bad[0, 1, 1] = np.inf
    assert "input 'x'" in error(stream.push, bad)
    np.testing.assert_array_equal(stream.state["h"], before)


def test_stream_checks_batch_shape_and_dtype(gru, tokens):
    stream = gru.stream(batch=2)
    assert "opened with batch=2" in error(stream.push, seq(batch=3, steps=1))
    assert "dimension 2 must be 4" in error(stream.push, np.zeros((2, 1, 3), np.float32))
    assert "expected float32, got bool" in error(stream.push, np.zeros((2, 1, 4), bool))
    assert "recurrent state kept by the stream" in error(stream.push, seq(batch=2, steps=1), h=np.zeros((2, 8)))
    assert "[0, 10)" in error(tokens.stream().push, np.array([[11]]))
    tokens.stream().push(np.array([[0, 3]]))  # padding before a real step: fine


def test_stream_allow_nonfinite(gru):
    x = seq(batch=1, steps=2)
    x[0, 0, 0] = np.nan
    for pushed in (gru.stream(allow_nonfinite=True).push(x), gru.stream().push(x, allow_nonfinite=True)):
        assert pushed["y"].shape == (1, 2, 8)
        assert (not np.isfinite(pushed["y"][0, 0]).all()
                or not np.array_equal(pushed["y"], gru.run(np.nan_to_num(x))["y"]))


def test_stream_keeps_its_state_buffers(gru):
    stream = gru.stream()
    buffers = [id(v) for values in stream._values for v in values.values()]
    for _ in range(5):
        stream.push(seq(batch=1, steps=1))
    assert [id(v) for values in stream._values for v in values.values()] == buffers


def test_stream_bad_batch(gru):
    assert "batch must be" in error(gru.stream, 0)


def test_stream_needs_state_inputs(folders):
    message = error(load(folders["plain"], "cpu").stream)
    assert "no state inputs" in message and "rnnedge export --streaming" in message


def test_stream_refuses_bidirectional(folders):
    message = error(load(folders["bigru"], "cpu").stream)
    assert "bidirectional" in message and "cannot stream" in message


def test_identity_state_passes_through(folders):
    m = load(folders["identity"], "cpu")
    stream = m.stream(batch=2)
    state = np.arange(16, dtype=np.float32).reshape(2, 8)
    stream.load_state({"h": state})
    for _ in range(3):
        stream.push(seq(batch=2, steps=2))
    np.testing.assert_array_equal(stream.state["h"], state)


# --------------------------------------------------------------------------------- providers


def test_available_providers():
    assert "CPUExecutionProvider" in available_providers()


@pytest.mark.parametrize("name", ["cpu", "CPU", "CPUExecutionProvider", ["cpu"], ("Cpu",)])
def test_provider_names(folders, name):
    assert load(folders["gru"], name).provider == "CPUExecutionProvider"


def test_auto_provider(folders):
    assert load(folders["gru"]).provider in available_providers()


@cpu_only
def test_unavailable_provider_raises(folders):
    message = error(load, folders["gru"], "cuda")
    assert "'cuda' (CUDAExecutionProvider) is not available" in message
    assert "CPUExecutionProvider" in message and "pip install rnnedge[gpu]" in message
    assert "fallback=True" in message
    assert "TensorrtExecutionProvider" in error(load, folders["gru"], "tensorrt")


@cpu_only
def test_fallback_to_cpu_warns(folders):
    with pytest.warns(RuntimeWarning, match="falling back to CPUExecutionProvider"):
        m = load(folders["gru"], "cuda", fallback=True)
    assert m.provider == "CPUExecutionProvider"
    assert m.run(seq())["y"].shape == (2, 20, 8)


def test_unknown_provider_name(folders):
    assert "unknown provider 'warp-drive'" in error(load, folders["gru"], "warp-drive")


def test_threads_checked(folders):
    assert "threads" in error(load, folders["gru"], "cpu", threads=0)
    x = seq()
    two = load(folders["gru"], "cpu", threads=2).run(x)
    assert two["y"].shape == (2, 20, 8)
    np.testing.assert_allclose(two["y"], load(folders["gru"], "cpu", threads=1).run(x)["y"], atol=1e-6)


def test_trt_profiles_from_manifest(folders):
    m = Manifest.load(folders["gru2"])
    profiles = providers._trt_profiles(m.inputs, runtime.TRT_SHAPES)
    assert profiles == {
        "trt_profile_min_shapes": "x:1x1x4,aux:1x1x2,h:1x8",
        "trt_profile_opt_shapes": "x:1x100x4,aux:1x100x2,h:1x8",
        "trt_profile_max_shapes": "x:32x1000x4,aux:32x1000x2,h:32x8",
    }
    assert "trt_shapes" in error(providers._trt_profiles, m.inputs, {"batch": (1, 1, 2)})
    own_time = [TensorSpec("a", ("batch", "a_time"), "int64")]  # inputs with time axes of their own
    assert providers._trt_profiles(own_time, runtime.TRT_SHAPES)["trt_profile_max_shapes"] == "a:32x1000"


def test_provider_options_layout(folders):
    m = Manifest.load(folders["gru"])
    chosen = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    flat = providers.provider_options_for(chosen, {"device_id": 1, "trt_fp16_enable": True}, folders["gru"], m,
                                     runtime.TRT_SHAPES)
    assert flat[0]["device_id"] == "1" and flat[0]["trt_fp16_enable"] == "True"
    assert flat[0]["trt_profile_max_shapes"] == "x:32x1000x4,h:32x8"
    assert flat[1] == {"device_id": "1"} and flat[2] == {}
    nested = providers.provider_options_for(chosen[1:], {"cuda": {"device_id": 2}}, folders["gru"], m,
                                            runtime.TRT_SHAPES)
    assert nested == [{"device_id": "2"}, {}]


# ----------------------------------------------------------------------- folders and variants


def test_variant_files(tmp_path, folders):
    folder = tmp_path / "v"
    shutil.copytree(folders["gru"], folder)
    shutil.copy(folder / "model.onnx", folder / "model.int8.onnx")
    m = Manifest.load(folder)
    m.variants = {"int8": {"file": "model.int8.onnx"}}
    m.save(folder)
    model = load(folder, "cpu", variant="int8")
    assert model.variant == "int8" and model.path.name == "model.int8.onnx"
    assert model.run(seq())["y"].shape == (2, 20, 8)
    assert load(folder, "cpu").path.name == "model.onnx"  # fp32 absent from variants: model.onnx
    message = error(load, folder, "cpu", variant="fp16")
    assert "no 'fp16' variant" in message and "int8" in message
    (folder / "model.int8.onnx").unlink()
    assert "missing" in error(load, folder, "cpu", variant="int8")


def test_not_an_export_folder(tmp_path):
    assert "nothing does not exist" in error(load, tmp_path / "nothing")
    assert "manifest.json" in error(load, tmp_path)


def test_manifest_that_disagrees_with_the_graph(tmp_path, folders):
    folder = tmp_path / "m"
    shutil.copytree(folders["gru"], folder)
    d = json.loads((folder / "manifest.json").read_text())
    d["inputs"][0]["name"] = "features"
    (folder / "manifest.json").write_text(json.dumps(d))
    assert "re-export" in error(load, folder, "cpu")


@pytest.mark.parametrize("feeds, expected", [("x", "feeds 'x', which is not a state input"),
                                              (None, "feeds None, which is not a state input")])
def test_a_stream_refuses_state_outputs_that_feed_no_state_input(tmp_path, folders, feeds, expected):
    """A hand-edited manifest whose state output does not feed its state input: loads and runs whole
    sequences, but a stream is refused in one line (it would carry no state, or the wrong one)."""
    folder = tmp_path / "m"
    shutil.copytree(folders["gru"], folder)
    d = json.loads((folder / "manifest.json").read_text())
    state_out = [o for o in d["outputs"] if o.get("role") == "state"]
    assert [o["feeds"] for o in state_out] == ["h"]
    state_out[0]["feeds"] = feeds
    (folder / "manifest.json").write_text(json.dumps(d))
    m = load(folder, "cpu")
    assert m.run(seq()).data[0].shape[0] == 2
    message = error(m.stream, 1)
    assert expected in message and "re-export" in message


def test_rnnedge_load_entry_point(folders):
    model = rnnedge.load(folders["gru"], provider="cpu")
    assert isinstance(model, runtime.Model)


# ---------------------------------------------------------------------------------------- files


def test_npy_round_trip(tmp_path, gru):
    x = seq()
    np.save(tmp_path / "x.npy", x)
    inputs = read_inputs(tmp_path / "x.npy", gru)
    np.testing.assert_array_equal(inputs["x"], x)
    out = gru.run(**inputs)
    assert "2 outputs" in error(write_outputs, tmp_path / "y.npy", {"a": x, "b": x})
    write_outputs(tmp_path / "probs.npy", {"probs": out["probs"]})
    np.testing.assert_array_equal(np.load(tmp_path / "probs.npy"), out["probs"])


def test_npz_by_name_and_positional(tmp_path, folders):
    m = load(folders["gru2"], "cpu")
    x, aux = seq(batch=1, steps=3), np.ones((1, 3, 2), np.float32)
    np.savez(tmp_path / "named.npz", aux=aux, x=x)
    np.savez(tmp_path / "pos.npz", x, aux)
    for name in ("named.npz", "pos.npz"):
        inputs = read_inputs(tmp_path / name, m)
        np.testing.assert_array_equal(inputs["x"], x)
        np.testing.assert_array_equal(inputs["aux"], aux)
    np.savez(tmp_path / "bad.npz", x=x, extra=x)
    assert "extra" in error(read_inputs, tmp_path / "bad.npz", m)
    np.savez(tmp_path / "short.npz", x=x)
    assert "no array for input(s) aux" in error(read_inputs, tmp_path / "short.npz", m)
    np.save(tmp_path / "one.npy", x)
    assert "takes 2 inputs (x, aux)" in error(read_inputs, tmp_path / "one.npy", m)
    (tmp_path / "one.csv").write_text("1,2,3,4\n")
    assert "takes 2 inputs (x, aux)" in error(read_inputs, tmp_path / "one.csv", m)


def test_npz_outputs_written_by_name(tmp_path, gru):
    out = gru.run(seq())
    write_outputs(tmp_path / "out.npz", out)
    with np.load(tmp_path / "out.npz") as z:
        assert sorted(z.files) == ["h_out", "probs", "y"]
        np.testing.assert_array_equal(z["y"], out["y"])


def test_csv_round_trip(tmp_path, gru):
    x = seq(batch=1, steps=6)
    path = tmp_path / "x.csv"
    path.write_text("a,b,c,d\n" + "\n".join(",".join(f"{v:.9g}" for v in row) for row in x[0]) + "\n")
    inputs = read_inputs(path, gru)
    assert inputs["x"].shape == (1, 6, 4)  # a [time, features] table is one sequence
    np.testing.assert_allclose(inputs["x"], x, rtol=1e-7)
    out = gru.run(**inputs)
    write_outputs(tmp_path / "y.csv", {"y": out["y"]})  # 3-D with batch 1 -> [time, features]
    lines = (tmp_path / "y.csv").read_text().splitlines()
    assert lines[0].startswith("y_0,y_1") and len(lines) == 7
    y_as_input = Manifest(inputs=[TensorSpec("y", ("batch", "time", 8), "float32")], outputs=[], opset=17,
                          ir_version=8)
    back = read_inputs(tmp_path / "y.csv", y_as_input)
    np.testing.assert_allclose(back["y"], out["y"], rtol=1e-6)
    # Outputs with several data outputs: a CSV takes one
    assert "2 outputs" in error(write_outputs, tmp_path / "all.csv", out)


def test_csv_tokens_one_row_per_sequence(tmp_path, tokens):
    (tmp_path / "ids.csv").write_text("1,2,3\n4,5,0\n")
    inputs = read_inputs(tmp_path / "ids.csv", tokens)
    assert inputs["tokens"].dtype == np.int64 and inputs["tokens"].shape == (2, 3)
    (tmp_path / "frac.csv").write_text("1,2.5\n")
    assert "non-integer" in error(read_inputs, tmp_path / "frac.csv", tokens)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("", "empty"),
        ("1,2,3,4\n1,2\n", "different lengths"),
        ("1,2,3,4\n1,2,x,4\n", "'x', not a number"),
        ("a,b,c\n1,2,3\n", "3 columns"),
        ("Month,Passengers\n", "no rows"),
    ],
)
def test_bad_csv(tmp_path, gru, text, expected):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    assert expected in error(read_inputs, path, gru)


def test_bad_input_files(tmp_path, gru):
    assert "does not exist" in error(read_inputs, tmp_path / "nope.npy", gru)
    assert "is not a regular file: expected a .npy, .npz or .csv" in error(read_inputs, tmp_path, gru)
    (tmp_path / "junk.npy").write_bytes(b"not numpy at all")
    assert "not a readable .npy" in error(read_inputs, tmp_path / "junk.npy", gru)
    (tmp_path / "junk.npz").write_bytes(b"PK not a zip")
    assert "not a readable .npz" in error(read_inputs, tmp_path / "junk.npz", gru)
    np.save(tmp_path / "array.npy", seq())
    shutil.copy(tmp_path / "array.npy", tmp_path / "array.npz")
    assert "holds an .npy array" in error(read_inputs, tmp_path / "array.npz", gru)
    np.savez(tmp_path / "archive.npz", x=seq())
    shutil.copy(tmp_path / "archive.npz", tmp_path / "archive.npy")
    assert "holds an .npz archive" in error(read_inputs, tmp_path / "archive.npy", gru)
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    assert "not a readable .npy" in error(read_inputs, tmp_path / "objects.npy", gru)
    (tmp_path / "x.txt").write_text("1")
    assert ".npy, .npz or .csv" in error(read_inputs, tmp_path / "x.txt", gru)
    assert ".npy, .npz or .csv" in error(write_outputs, tmp_path / "y.json", {"y": np.zeros(2)})


def test_read_inputs_from_folder_path(tmp_path, folders):
    np.save(tmp_path / "x.npy", seq())
    assert list(read_inputs(tmp_path / "x.npy", folders["gru"])) == ["x"]


# ------------------------------------------------------------------------------------- run_file


def test_run_file_whole_and_chunked(tmp_path, folders, gru):
    x = seq(batch=2, steps=11)
    np.save(tmp_path / "x.npy", x)
    whole = run_file(folders["gru"], tmp_path / "x.npy", tmp_path / "y.npz", provider="cpu")
    assert list(whole) == ["y", "probs"]
    np.testing.assert_allclose(whole["y"], gru.run(x)["y"], atol=1e-6)
    for chunk in (1, 4, 11, 50):
        chunked = run_file(folders["gru"], tmp_path / "x.npy", tmp_path / f"c{chunk}.npz", chunk=chunk, provider="cpu")
        np.testing.assert_allclose(chunked["y"], whole["y"], atol=1e-5)
        np.testing.assert_allclose(chunked["probs"], whole["probs"], atol=1e-5)
        with np.load(tmp_path / f"c{chunk}.npz") as z:
            assert z["y"].shape == (2, 11, 8)


def test_run_file_chunked_starts_from_saved_state(tmp_path, folders, gru):
    x = seq(batch=1, steps=6)
    h = gru.run(x[:, :3])["h_out"]
    np.savez(tmp_path / "in.npz", x=x[:, 3:], h=h)
    out = run_file(folders["gru"], tmp_path / "in.npz", chunk=2, provider="cpu")
    np.testing.assert_allclose(out["y"], gru.run(x)["y"][:, 3:], atol=1e-5)


def test_run_file_errors(tmp_path, folders):
    np.save(tmp_path / "x.npy", seq())
    assert "chunk must be" in error(run_file, folders["gru"], tmp_path / "x.npy", chunk=0, provider="cpu")
    assert "--streaming" in error(run_file, folders["plain"], tmp_path / "x.npy", chunk=5, provider="cpu")
    np.save(tmp_path / "bad.npy", np.zeros((2, 3, 5), np.float32))
    assert "dimension 2 must be 4" in error(run_file, folders["gru"], tmp_path / "bad.npy", provider="cpu")


# --------------------------------------------------------------------------- no TensorFlow at run time

_NO_TF = """
import importlib.abc, sys
BLOCKED = {"tensorflow", "keras", "tf2onnx", "tf_keras", "tensorboard"}
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{name} is blocked in this test")
sys.meta_path.insert(0, Block())
import numpy as np
import rnnedge
m = rnnedge.load(sys.argv[1])
x = np.random.default_rng(0).normal(size=(1, 5, 4)).astype(np.float32)
out = m.run(x)
stream = m.stream()
step = stream.push(x[:, :1])
assert step["y"].shape == (1, 1, 8), step
assert not [k for k in sys.modules if k.split(".")[0] in BLOCKED]
print("ok", m.provider)
"""


def test_runtime_needs_no_tensorflow(folders):
    result = subprocess.run(
        [sys.executable, "-c", _NO_TF, str(folders["gru"])],
        capture_output=True, text=True, cwd=REPO, timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith("ok")


# ---------------------------------------------------------------------------------------- GPU


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("provider", GPU or ["cuda"])
def test_gpu_run_and_stream_match_cpu(folders, provider):
    cpu = load(folders["gru"], "cpu")
    gpu = load(folders["gru"], provider)
    assert gpu.provider == provider
    x = seq(batch=2, steps=12)
    np.testing.assert_allclose(gpu.run(x)["y"], cpu.run(x)["y"], atol=1e-3)
    stream = gpu.stream(batch=2)
    ys = [stream.push(x[:, t:t + 3])["y"] for t in range(0, 12, 3)]
    np.testing.assert_allclose(np.concatenate(ys, axis=1), cpu.run(x)["y"], atol=1e-3)
    stream.reset(0)
    assert not stream.state["h"][0].any() and stream.state["h"][1].any()


@pytest.mark.gpu
@needs_gpu
def test_gpu_stream_state_stays_on_device(folders):
    stream = load(folders["gru"], "cuda").stream()
    assert all(v.device_name().lower() == "cuda" for values in stream._values for v in values.values())


def test_a_one_step_chunk_is_named_with_the_shape_the_user_passed():
    stream = load(REPO / "exported" / "events-gru", "cpu").stream(1)
    said = error(stream.push, np.zeros((1, 7), np.float32))
    assert "got 7 (shape [1, 7], one step)" in said and "[1, 1, 7]" not in said, said
    said = error(stream.push, np.zeros((2, 40), np.float32))
    assert "batch is 2 (shape [2, 40], one step)" in said, said


def test_chunks_on_an_export_without_states_name_the_export_folder(tmp_path):
    folder = tmp_path / "not-streaming"
    shutil.copytree(REPO / "exported" / "seq2seq-gru", folder)
    model = load(folder, "cpu")
    said = error(model.stream, 1)
    assert f"the export {folder}" in said and "zoo:" not in said, said
