"""rnnedge.serve: Triton repositories (checked with Triton's schema), a real local tritonserver
(nvidia-pytriton's, python backend) driven through tritonclient over HTTP and gRPC, the load
test, and the ORT format. No TensorFlow: the committed exports are served.

The served models' outputs are compared with Keras' own (each export's golden.npz, at `rnnedge
check`'s CPU tolerance), not with rnnedge's runtime, which the python backend itself runs: a fault in
either shows. The onnxruntime-backend repositories are checked against the schema only: the wheel's
server has no onnxruntime backend.
"""

from __future__ import annotations

import importlib.util
import json
import os
import queue
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import rnnedge
from rnnedge.check import STREAM_CHUNKS, ParityReport, Tolerance, compare, read_golden
from rnnedge.cli import app
from rnnedge.errors import RnnEdgeError
from rnnedge.manifest import Manifest, is_time_axis
from rnnedge.tables import CPU, tolerance_of

pytest.importorskip("tritonclient.grpc", reason="the serve extra is not installed: pip install 'rnnedge[serve]'")
pytest.importorskip("tritonclient.http", reason="the serve extra is not installed: pip install 'rnnedge[serve]'")

from rnnedge.serve import triton as tr  # noqa: E402
from rnnedge.serve.client import OutcomeUnknown, Refused, TritonRunner, parse_url  # noqa: E402
from rnnedge.serve.loadtest import load_test  # noqa: E402

EXPORTED = Path(__file__).resolve().parent.parent / "exported"
STREAMING = EXPORTED / "airline-gru"  # [batch, time, 1] -> [batch, 1], one GRU state
PER_STEP = EXPORTED / "events-gru"  # [batch, time, 40] -> [batch, time, 4], two GRU states
STATELESS = EXPORTED / "sentiment-bilstm"  # int32 tokens [batch, 20] -> [batch, 1]
SPOTTER = EXPORTED / "kws-gru"  # [batch, time, 40] -> [batch, time, 4]: a causal Conv1D's frames and two GRU states
IDLE_S = 2.0
KERAS = Tolerance(*tolerance_of(CPU))  # the server runs onnxruntime on CPU: `rnnedge check`'s tolerance there
runner = CliRunner()

need_server = pytest.mark.skipif(importlib.util.find_spec("pytriton") is None,
                                 reason="the serve extra is not installed (nvidia-pytriton ships tritonserver): "
                                        "pip install 'rnnedge[serve]'")


# --------------------------------------------------------------------------------------------
# Repositories: schema, contents, atomic writes


@pytest.mark.parametrize("folder", [STREAMING, PER_STEP, STATELESS, EXPORTED / "seq2seq-lstm", SPOTTER],
                         ids=lambda p: p.name)
@pytest.mark.parametrize("backend,gpu,tensorrt", [("onnxruntime", False, False), ("onnxruntime", True, True),
                                                  ("python", False, False), ("python", True, False)])
def test_config_parses_with_tritons_schema_and_says_what_the_manifest_says(folder, backend, gpu, tensorrt, tmp_path):
    target = tr.write_repository(folder, tmp_path / "repo", backend=backend, gpu=gpu, tensorrt=tensorrt,
                                 max_batch=16, instances=2)
    config = tr.parse_config((target / "config.pbtxt").read_text())
    manifest = Manifest.load(folder)
    assert config.name == folder.name and config.backend == backend and config.max_batch_size == 16
    assert [(i.name, list(i.dims)) for i in config.input] == [
        (s.name, [d if isinstance(d, int) else -1 for d in s.shape[1:]]) for s in manifest.data_inputs]
    assert [o.name for o in config.output] == [s.name for s in manifest.data_outputs]
    from tritonclient.grpc import model_config_pb2 as pb

    for t, spec in zip([*config.input, *config.output], [*manifest.data_inputs, *manifest.data_outputs]):
        assert pb.DataType.Name(t.data_type) == tr.TRITON_DTYPES[spec.dtype]
    group = config.instance_group[0]
    assert group.count == 2
    assert pb.ModelInstanceGroup.Kind.Name(group.kind) == ("KIND_GPU" if gpu else "KIND_CPU")
    if manifest.streaming:
        seq = config.sequence_batching
        assert config.HasField("sequence_batching") and not config.HasField("dynamic_batching")
        if backend == "onnxruntime":
            assert not seq.control_input  # the ONNX graph takes no control input: Triton feeds the state
            pairs = {o.feeds: o.name for o in manifest.state_outputs}
            assert [(s.input_name, s.output_name) for s in seq.state] == [(s.name, pairs[s.name])
                                                                         for s in manifest.state_inputs]
            for s, spec in zip(seq.state, manifest.state_inputs):
                assert list(s.dims) == list(spec.shape[1:]) and s.initial_state[0].zero_data
                assert list(s.initial_state[0].dims) == list(spec.shape[1:])
            assert (target / "1" / "model.onnx").read_bytes() == (folder / "model.onnx").read_bytes()
        else:
            assert [c.name for c in seq.control_input] == ["START", "END", "READY", "CORRID"]
            assert not seq.state and seq.max_sequence_idle_microseconds == 60_000_000
        assert config.sequence_batching.max_sequence_idle_microseconds == 60_000_000
    else:
        assert config.HasField("dynamic_batching") and not config.HasField("sequence_batching")
    if backend == "python":
        assert (target / "1" / "model.py").read_text() == tr.MODEL_PY.read_text()
        assert Manifest.load(target / "1" / "export").inputs == manifest.inputs
    accelerators = config.optimization.execution_accelerators.gpu_execution_accelerator
    assert [a.name for a in accelerators] == (["tensorrt"] if tensorrt else [])


def test_existing_entry_needs_force_and_a_failed_write_leaves_it_as_it_was(tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    first = tr.write_repository(STREAMING, repo, backend="python")
    with pytest.raises(RnnEdgeError, match="already exists: pass --force"):
        tr.write_repository(STREAMING, repo, backend="onnxruntime")
    assert (first / "1" / "model.py").is_file()

    def broken(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(tr.shutil, "copy2", broken)
    with pytest.raises(RnnEdgeError, match="the disk is full"):
        tr.write_repository(STREAMING, repo, backend="onnxruntime", force=True)
    monkeypatch.undo()
    assert (first / "1" / "model.py").is_file() and not (first / "1" / "model.onnx").exists()
    assert sorted(p.name for p in repo.iterdir()) == ["airline-gru"]  # no temporary folder left
    tr.write_repository(STREAMING, repo, backend="onnxruntime", force=True)
    assert (first / "1" / "model.onnx").is_file() and not (first / "1" / "model.py").exists()
    assert sorted(p.name for p in repo.iterdir()) == ["airline-gru"]


def test_copied_files_are_verified_and_killed_runs_leftovers_tidied(tmp_path, writer_of):
    folder = tmp_path / "m"
    shutil.copytree(STREAMING, folder)
    golden = folder / "golden.npz"
    golden.write_bytes(golden.read_bytes()[:-1] + b"x")  # the python backend copies every file
    repo = tmp_path / "repo"
    with pytest.raises(RnnEdgeError, match=r"golden\.npz does not match manifest\.json"):
        tr.write_repository(folder, repo, backend="python")
    assert tr.write_repository(folder, repo, backend="onnxruntime").is_dir()  # it copies model.onnx only
    model = folder / "model.onnx"
    model.write_bytes(model.read_bytes() + b"\0")
    r = runner.invoke(app, ["triton", str(folder), "--out", str(repo), "--force"])
    assert r.exit_code == 1 and "model.onnx does not match manifest.json (size differs" in r.output, r.output
    assert len(r.output.strip().splitlines()) == 1
    r = runner.invoke(app, ["triton", str(folder), "--out", str(repo), "--force", "--no-verify"])
    assert r.exit_code == 0, r.output
    # a killed `rnnedge triton` leaves .m.XXXX.tmp, which tritonserver refuses to start with
    (repo / ".m.dead0001.tmp" / "1").mkdir(parents=True)
    tr.tidy_repository(repo)
    assert sorted(p.name for p in repo.iterdir()) == ["m"]
    live = writer_of(repo / "m")  # one still being written is left alone, and serving waits for it
    with pytest.raises(RnnEdgeError, match="another rnnedge run is writing"):
        tr.tidy_repository(repo)
    assert live.is_dir()


@pytest.mark.parametrize("backend", ["python", "onnxruntime"])
def test_the_queue_delay_reaches_the_sequence_batcher(tmp_path, backend):
    config = tr.parse_config((tr.write_repository(STREAMING, tmp_path, backend=backend, queue_delay_ms=2.5)
                              / "config.pbtxt").read_text())
    strategy = config.sequence_batching.oldest if backend == "python" else config.sequence_batching.direct
    assert strategy.max_queue_delay_microseconds == 2500
    with pytest.raises(RnnEdgeError, match="queue delay must be from 0 to 1,000 ms"):
        tr.write_repository(STREAMING, tmp_path / "r2", backend=backend, queue_delay_ms=-1)


def test_a_config_triton_cannot_parse_is_our_bug_and_nothing_is_written(tmp_path, monkeypatch):
    from google.protobuf.text_format import ParseError

    monkeypatch.setattr(tr, "model_config", lambda manifest, options: 'name: "m"\nsequence_batching { bogus: 1 }\n')
    with pytest.raises(ParseError):
        tr.write_repository(STREAMING, tmp_path / "repo")
    assert not (tmp_path / "repo").exists()


def test_cli_triton_writes_and_refuses_in_one_line(tmp_path):
    out = tmp_path / "repo"
    r = runner.invoke(app, ["triton", str(STREAMING), "--out", str(out), "--backend", "python", "--name", "ag",
                            "--max-batch", "8", "--instances", "2", "--idle-seconds", "5"])
    assert r.exit_code == 0, r.output
    config = tr.parse_config((out / "ag" / "config.pbtxt").read_text())
    assert config.max_batch_size == 8 and config.sequence_batching.max_sequence_idle_microseconds == 5_000_000
    for args, message in [([], "already exists: pass --force"),
                          (["--force", "--name", "a/b"], "model name 'a/b'"),
                          (["--force", "--tensorrt"], "pass --gpu --backend onnxruntime with --tensorrt"),
                          (["--force", "--instances", "1025"], "instances must be a whole number from 1 to 1,024")]:
        r = runner.invoke(app, ["triton", str(STREAMING), "--out", str(out), "--backend", "python", "--name", "ag",
                                *args])
        assert r.exit_code == 1 and message in r.output and len(r.output.strip().splitlines()) == 1, r.output
    r = runner.invoke(app, ["triton", str(tmp_path / "nope"), "--out", str(out)])
    assert r.exit_code == 1 and "nope does not exist" in r.output


def test_the_serve_package_imports_no_tensorflow():
    import subprocess
    import sys

    code = ("import sys; import rnnedge.serve.triton, rnnedge.serve.server, rnnedge.serve.client, rnnedge.serve.ort; "
            "print(sorted(m for m in ('tensorflow', 'keras', 'tf2onnx') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).resolve().parent.parent)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stderr


@pytest.mark.parametrize("url,expected", [("127.0.0.1:8001", ("grpc", "127.0.0.1:8001")),
                                          ("http://localhost:8000", ("http", "localhost:8000")),
                                          ("grpc://[::1]:9", ("grpc", "[::1]:9"))])
def test_loopback_urls(url, expected):
    assert parse_url(url) == expected


@pytest.mark.parametrize("url", ["grpc://10.1.2.3:8001", "http://example.com:8000", "triton.internal:8001"])
def test_non_loopback_urls_are_refused_in_one_line(url):
    with pytest.raises(RnnEdgeError, match="not on this machine"):
        parse_url(url)
    r = runner.invoke(app, ["bench", str(STREAMING), "--triton", url])
    assert r.exit_code == 1 and "only talks to loopback servers" in r.output


def test_the_load_tests_comparison_catches_mixed_up_states():
    """The load test's reference check can fail: outputs compared with another sequence's run."""
    from rnnedge.serve import loadtest as client

    manifest = Manifest.load(PER_STEP)
    local = rnnedge.load(PER_STEP, "cpu")
    feeds = client.sequence_inputs(manifest, 6, 12)
    whole = local.run(**feeds)
    expected = [{"events": whole["events"][i:i + 1]} for i in range(6)]
    ok = client._drive("runtime", 3, 6, client._runtime_streams(local), manifest, feeds, expected, 4, 3, 10.0,
                       1e-5, lambda n: None)
    assert ok.ok and ok.sequences == 6 and 1 <= ok.max_open <= 3 and ok.max_abs <= 1e-5
    swapped = expected[1:] + expected[:1]
    bad = client._drive("runtime", 3, 6, client._runtime_streams(local), manifest, feeds, swapped, 4, 3, 10.0,
                        1e-5, lambda n: None)
    assert not bad.ok and bad.mismatched == 6 and bad.max_abs > 1e-3


STREAMING_ZOO = sorted(p.name for p in EXPORTED.iterdir() if (p / "manifest.json").is_file()
                       and Manifest.load(p).streaming)


@pytest.mark.parametrize("name", STREAMING_ZOO)
def test_the_load_tests_inputs_show_a_mixed_up_state_on_every_streaming_export(name):
    """bench --triton's sequences (golden rows first) are ones whose outputs a mixed-up state changes: the
    comparison with whole-sequence runs fails when each sequence is judged against another's."""
    from rnnedge.serve import loadtest

    folder = EXPORTED / name
    manifest, local = Manifest.load(folder), rnnedge.load(folder, "cpu")
    feeds, change = loadtest.sensitive_inputs(local, manifest, folder, 8, 4, 3, 1e-5)
    assert change > 1e-4
    whole = local.run(**feeds)
    expected = [{n: whole[n][i:i + 1] for n in whole.data_names} for i in range(8)]
    # a server that mixed up the states at the middle of every sequence: continue each from the next's state
    mixed = local.stream(8)
    mixed.push(**{n: a[:, :6] for n, a in feeds.items()})
    mixed.load_state({k: np.roll(v, 1, axis=0) for k, v in mixed.state.items()})
    out = dict(mixed.push(**{n: a[:, 6:] for n, a in feeds.items()}))
    first = dict(local.run(**{n: a[:, :6] for n, a in feeds.items()}))
    got = loadtest.merge_chunks(manifest, [first, out])
    assert all(loadtest.max_diff({n: a[i:i + 1] for n, a in got.items()}, expected[i]) > 1e-5 for i in range(8))


def test_the_load_test_refuses_inputs_that_cannot_show_a_mixed_up_state():
    from rnnedge.serve import loadtest

    local = rnnedge.load(SPOTTER, "cpu")  # its outputs forget within a few steps
    with pytest.raises(RnnEdgeError, match="cannot show a mixed-up state on kws-gru with 8 chunk\\(s\\) of 1 "
                                           "step\\(s\\).*use more steps per chunk"):
        loadtest.sensitive_inputs(local, Manifest.load(SPOTTER), SPOTTER, 64, 8, 1, 1e-5)


# --------------------------------------------------------------------------------------------
# ORT format


def test_ort_format_is_written_recorded_loaded_and_checked(tmp_path):
    folder = tmp_path / "airline-gru"
    shutil.copytree(STREAMING, folder)
    r = runner.invoke(app, ["ort", str(folder)])
    assert r.exit_code == 0 and "PASS" in r.output, r.output
    entry = Manifest.load(folder).variants["ort"]
    assert entry["file"] == "model.ort" and (folder / "model.ort").read_bytes()[4:8] == b"ORTM"
    ops = (folder / "required_operators.config").read_text()
    assert "GRU" in ops and "rnnedge-ort" not in ops  # names the file, not the converter's temp folder
    x = np.random.default_rng(0).normal(size=(3, 7, 1)).astype(np.float32)
    fp32, ort_model = rnnedge.load(folder, "cpu"), rnnedge.load(folder, "cpu", variant="ort")
    assert ort_model.path.suffix == ".ort"
    np.testing.assert_allclose(ort_model.run(x)[0], fp32.run(x)[0], atol=1e-5)
    r = runner.invoke(app, ["check", str(folder)])
    assert r.exit_code == 0 and "\nPASS" in r.output and "ort (model.ort): PASS" in r.output, r.output
    r = runner.invoke(app, ["ort", str(folder)])
    assert r.exit_code == 1 and "pass --force" in r.output
    (folder / "model.ort").write_bytes(b"not a model")  # a broken .ort file fails the check
    r = runner.invoke(app, ["check", str(folder)])
    assert r.exit_code == 1 and "model.ort does not match manifest.json" in r.output  # its sha256
    r = runner.invoke(app, ["check", str(folder), "--no-verify"])
    assert r.exit_code == 1 and "could not load" in r.output


# --------------------------------------------------------------------------------------------
# A real server


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from rnnedge.serve.server import local_server

    repo = tmp_path_factory.mktemp("repo")
    tr.write_repository(STREAMING, repo, backend="python", idle_seconds=IDLE_S)
    # requests of several sequences batched into one execute() on any machine, however loaded:
    # the batcher waits 5 ms for others (with no delay, a fast server may take each one alone)
    tr.write_repository(PER_STEP, repo, backend="python", max_batch=16, queue_delay_ms=5)
    tr.write_repository(STATELESS, repo, backend="python")
    tr.write_repository(SPOTTER, repo, backend="python")
    with local_server(repo) as s:
        yield s
    assert not s.alive()


def _client(protocol, server):
    import tritonclient.grpc as g
    import tritonclient.http as h

    return (g, g.InferenceServerClient(server.grpc_url)) if protocol == "grpc" else \
        (h, h.InferenceServerClient(server.http_url))


def _input(module, name, array):
    from tritonclient.utils import np_to_triton_dtype

    i = module.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
    i.set_data_from_numpy(np.ascontiguousarray(array))
    return i


def golden(folder):
    """golden.npz's cases, as a client sends them: (case, data inputs, Keras' data outputs). Every
    case of these exports starts from a zero state, as a new sequence on the server does."""
    manifest = Manifest.load(folder)
    cases = []
    for name, inputs, outputs in read_golden(folder):
        assert not any(inputs[s.name].any() for s in manifest.state_inputs), name
        cases.append((name, {s.name: inputs[s.name] for s in manifest.data_inputs},
                      {s.name: outputs[s.name] for s in manifest.data_outputs}))
    return cases


def rows(arrays, i):
    """Row i of every array: one sequence of a golden batch (Keras' rows are independent)."""
    return {k: v[i:i + 1] for k, v in arrays.items()}


def assert_keras(case, expected, got, folder):
    """The server's outputs equal Keras' within `rnnedge check`'s tolerance (the export's overrides too)."""
    overrides = {k: tuple(v) for k, v in Manifest.load(folder).parity.get("overrides", {}).items()}
    parity = compare(case, expected, got, KERAS, overrides)
    assert parity, ParityReport("triton", (parity,), KERAS).failures()


def streamed(stream, folder, inputs, chunk):
    """A sequence sent `chunk` steps at a time on one TritonStream: per-step outputs joined in time,
    the others from the last chunk (as `rnnedge.check.stream_in_chunks` does in-process)."""
    manifest = Manifest.load(folder)
    steps = next(iter(inputs.values())).shape[1]
    pieces = []
    for a in range(0, steps, chunk):
        part = {k: v[:, a:a + chunk] for k, v in inputs.items()}
        pieces.append(stream.end(part) if a + chunk >= steps else stream.push(part))
    return {s.name: np.concatenate([p[s.name] for p in pieces], axis=1) if is_time_axis(s.shape[1])
            else pieces[-1][s.name] for s in manifest.data_outputs}


@need_server
@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_stateless_requests_equal_keras_at_several_batch_sizes(server, protocol):
    url = f"{protocol}://" + (server.http_url if protocol == "http" else server.grpc_url)
    triton = TritonRunner(url, STATELESS)
    cases = golden(STATELESS)  # batches of 1, 3, 2 and 16 padded token rows
    for case, inputs, expected in cases:
        got = triton.infer(inputs)
        assert got["positive"].shape == expected["positive"].shape
        assert_keras(case, expected, got, STATELESS)
    every = {k: np.concatenate([c[1][k] for c in cases]) for k in cases[0][1]}  # 22 rows in one request
    assert_keras("every case in one batch", {k: np.concatenate([c[2][k] for c in cases]) for k in cases[0][2]},
                 triton.infer(every), STATELESS)
    # different sizes in flight at once (dynamic batching merges them in one execute)
    module, client = _client(protocol, server)
    if protocol == "grpc":
        done = queue.Queue()
        for k, (_, inputs, _) in enumerate(cases):
            client.async_infer("sentiment-bilstm", [_input(module, "tokens", inputs["tokens"])],
                               lambda result, error, k=k: done.put((k, result, error)))
        for _ in cases:
            k, result, error = done.get(timeout=30)
            assert error is None
            assert_keras(cases[k][0] + ", in flight with the others", cases[k][2],
                         {"positive": result.as_numpy("positive")}, STATELESS)


@need_server
@pytest.mark.parametrize("protocol", ["http", "grpc"])
@pytest.mark.parametrize("folder", [STREAMING, PER_STEP, SPOTTER], ids=lambda p: p.name)
def test_golden_rows_streamed_in_chunks_equal_keras(server, protocol, folder):
    """Each row of each golden case is one sequence (Triton's sequence batcher takes one row per
    request), sent in chunks of 1 and 3 steps as `rnnedge check` streams it: the server carries the
    state between requests. events-gru's 64-step test split is streamed by the interleaving test."""
    url = f"{protocol}://" + (server.http_url if protocol == "http" else server.grpc_url)
    triton = TritonRunner(url, folder)
    sent = 0
    for case, inputs, expected in golden(folder):
        batch, steps = next(iter(inputs.values())).shape[:2]
        if steps > 16:
            continue
        for r in range(batch):
            for chunk in Manifest.load(folder).parity.get("stream_chunks", STREAM_CHUNKS):
                got = streamed(triton.stream(), folder, rows(inputs, r), chunk)
                assert_keras(f"{case}, row {r}, chunks of {chunk}", rows(expected, r), got, folder)
                sent += 1
    assert sent >= 12


@need_server
def test_twenty_two_interleaved_sequences_each_equal_keras(server):
    """Every row of events-gru's golden cases is a sequence of its own (64, 16, 7 or 1 steps): chunks
    of different lengths, sequences starting and ending at different times, some over HTTP and most
    over gRPC sent together (so one execute() holds several sequences)."""
    import tritonclient.grpc as g
    import tritonclient.http as h

    rng = np.random.default_rng(7)
    sequences = [(f"{case}, row {r}", rows(inputs, r)["frames"], rows(expected, r)["events"])
                 for case, inputs, expected in golden(PER_STEP) for r in range(len(inputs["frames"]))
                 if inputs["frames"].shape[1] <= 64]  # not the 500-step case: its rounds would be most of this test
    order = rng.permutation(len(sequences))
    names, inputs, wanted = zip(*[sequences[k] for k in order])
    n = len(inputs)
    assert n == 22  # 16 rows of 64 steps, 3 of 16, 1 of 7, 2 of 1
    lengths = [x.shape[1] for x in inputs]
    local = rnnedge.load(PER_STEP, "cpu")  # the data can show a lost state: a tail run from zero differs
    longest = int(np.argmax(lengths))
    assert np.abs(wanted[longest][:, 6:] - local.run(inputs[longest][:, 6:])["events"]).max() > 1e-3
    starts = rng.integers(0, 6, size=n)  # the round each sequence starts in
    grpc_client, http_client = g.InferenceServerClient(server.grpc_url), h.InferenceServerClient(server.http_url)
    stats0 = grpc_client.get_inference_statistics("events-gru").model_stats[0]
    ids = [int(rng.integers(1, 2**40)) for _ in range(n)]
    position = [0] * n
    pieces: list[list[np.ndarray]] = [[] for _ in range(n)]
    done = queue.Queue()
    for round_ in range(200):
        active = [i for i in range(n) if starts[i] <= round_ and position[i] < lengths[i]]
        if not active and all(position[i] >= lengths[i] for i in range(n)):
            break
        sent = 0
        for i in active:
            # Triton batches requests of equal shapes: mostly 3 steps, now and then 1-5 (and the last chunk)
            step = 3 if round_ % 4 else int(rng.integers(1, 6))
            a, b = position[i], min(position[i] + step, int(lengths[i]))
            flags = {"sequence_id": ids[i], "sequence_start": a == 0, "sequence_end": bool(b == lengths[i])}
            position[i] = b
            if i % 4 == 3:  # over HTTP, one at a time
                result = http_client.infer("events-gru", [_input(h, "frames", inputs[i][:, a:b])], **flags)
                pieces[i].append(result.as_numpy("events"))
            else:
                grpc_client.async_infer("events-gru", [_input(g, "frames", inputs[i][:, a:b])],
                                        lambda result, error, i=i: done.put((i, result, error)), **flags)
                sent += 1
        for _ in range(sent):  # every sequence has one request in flight per round: order is kept
            i, result, error = done.get(timeout=30)
            assert error is None, error
            pieces[i].append(result.as_numpy("events"))
    for i in range(n):
        assert_keras(names[i], {"events": wanted[i]}, {"events": np.concatenate(pieces[i], axis=1)}, PER_STEP)
    stats = grpc_client.get_inference_statistics("events-gru").model_stats[0]
    executions, inferences = (stats.execution_count - stats0.execution_count,
                              stats.inference_count - stats0.inference_count)
    assert inferences == sum(len(p) for p in pieces)
    assert executions < inferences  # several sequences' requests were handled in one execute()
    assert "PyCapsule" not in server.log.read_text(errors="replace")  # outputs leave no destructor noise


@need_server
def test_bad_requests_get_tritons_clear_errors_and_the_server_keeps_serving(server):
    import tritonclient.grpc as g
    from tritonclient.utils import InferenceServerException

    client = g.InferenceServerClient(server.grpc_url)
    x = np.ones((1, 4, 1), np.float32)
    cases = [
        ({"sequence_id": 424242}, x, "must specify the START flag"),  # unknown sequence
        ({"sequence_id": 5, "sequence_start": True}, np.ones((1, 4, 2), np.float32),
         "unexpected shape for input 'window'"),
        ({"sequence_id": 5, "sequence_start": True}, x.astype(np.float64), "data-type is 'FP64', but model"),
        ({}, x, "non-zero or non-empty correlation ID"),  # a streaming model without a sequence id
    ]
    for flags, array, message in cases:
        with pytest.raises(InferenceServerException, match=message) as refused:
            client.infer("airline-gru", [_input(g, "window", array)], **flags)
        assert refused.value.status() == "StatusCode.INVALID_ARGUMENT", (message, refused.value.status())
    # a failing chunk inside a sequence (rnnedge's own input check) leaves its state untouched
    case, inputs, expected = golden(STREAMING)[1]
    case, inputs, expected = f"{case}, row 2", rows(inputs, 2), rows(expected, 2)  # one sequence of 12 steps
    seq = inputs["window"]
    stream = TritonRunner("grpc://" + server.grpc_url, STREAMING).stream()
    stream.push({"window": seq[:, :4]})
    bad = seq[:, 4:6].copy()
    bad[0, 1, 0] = np.nan
    with pytest.raises(RnnEdgeError, match="non-finite") as refused:
        stream.push({"window": bad})
    assert "allow_nonfinite" not in str(refused.value) and "send finite values only" in str(refused.value)
    assert_keras(case, expected, stream.end({"window": seq[:, 4:]}), STREAMING)


@need_server
def test_a_sequence_never_ended_is_released_after_the_idle_timeout(server):
    triton = TritonRunner("http://" + server.http_url, STREAMING)
    x = np.ones((1, 3, 1), np.float32)
    stream = triton.stream()
    stream.push({"window": x})
    stream.push({"window": x})
    deadline = time.monotonic() + IDLE_S + 10
    released = f"sequence {stream.sequence_id} released after more than {IDLE_S:g} s idle"
    while released not in server.log.read_text(errors="replace"):
        assert time.monotonic() < deadline, "the idle sequence was not released"
        time.sleep(0.25)
    with pytest.raises(RnnEdgeError, match="must specify the START flag"):
        stream.push({"window": x})
    case, inputs, expected = golden(STREAMING)[0]  # one sequence of 12 steps
    fresh = triton.stream()  # a new sequence, and the server still serves
    assert_keras(case, expected, fresh.end(inputs), STREAMING)


@need_server
def test_load_test_and_bench_triton_rows(server, tmp_path):
    rows, reports = load_test(PER_STEP, "grpc://" + server.grpc_url, concurrency=(1, 8), sequences=16, chunks=4,
                              steps=3, seconds=20)
    assert [r.candidate for r in rows] == ["triton c=1", "runtime c=1", "triton c=8", "runtime c=8"]
    assert all(r.ok and r.sequences == 16 and r.requests == 64 for r in reports), [r.line() for r in reports]
    assert all(r.runs == 64 and r.time == 3 and r.seq_per_s > 0 and r.error <= 1e-5 for r in rows)
    assert "runtime" in rows[0].ratios
    out = tmp_path / "rows.json"
    r = runner.invoke(app, ["bench", str(STREAMING), "--triton", "http://" + server.http_url, "--concurrency", "1,4",
                            "--sequences", "8", "--chunks", "3", "--time", "2", "--json", str(out),
                            "--csv", str(tmp_path / "rows.csv")])
    assert r.exit_code == 0, r.output
    assert r.output.count("ok: ") == 4 and "0 failed, 0 mismatched" in r.output
    assert [d["candidate"] for d in json.loads(out.read_text())] == ["triton c=1", "runtime c=1", "triton c=4",
                                                                    "runtime c=4"]
    assert (tmp_path / "rows.csv").read_text().startswith("candidate,provider,batch,time")
    r = runner.invoke(app, ["bench", str(STREAMING), "--triton", "grpc://" + server.grpc_url, "--triton-model", "nope"])
    assert r.exit_code == 1 and "has no model 'nope'" in r.output


@need_server
def test_server_killed_mid_sequence_then_restarted(tmp_path):
    from rnnedge.serve.server import local_server

    repo = tmp_path / "repo"
    tr.write_repository(STREAMING, repo, backend="python")
    case, inputs, expected = golden(STREAMING)[1]
    case, inputs, expected = f"{case}, row 1", rows(inputs, 1), rows(expected, 1)  # one sequence of 12 steps
    x = inputs["window"]
    with local_server(repo) as first:
        stream = TritonRunner("grpc://" + first.grpc_url, STREAMING, timeout=10).stream()
        stream.push({"window": x[:, :4]})
        first.kill()
        with pytest.raises(RnnEdgeError, match="failed"):
            stream.push({"window": x[:, 4:]})
    assert not first.alive()
    with pytest.raises(ProcessLookupError):
        os.kill(first.pid, 0)
    with local_server(repo, grpc_port=int(first.grpc_url.rsplit(":", 1)[1])) as second:
        again = TritonRunner("grpc://" + second.grpc_url, STREAMING)
        with pytest.raises(RnnEdgeError, match="must specify the START flag"):
            again.infer({"window": x[:, 4:]}, sequence_id=stream.sequence_id)  # the old sequence is gone
        fresh = again.stream()
        fresh.push({"window": x[:, :4]})
        assert_keras(case, expected, fresh.end({"window": x[:, 4:]}), STREAMING)


@need_server
def test_a_model_that_cannot_load_is_one_line_and_no_server_is_left(tmp_path):
    from rnnedge.serve.server import local_server

    repo = tmp_path / "repo"
    target = tr.write_repository(STREAMING, repo, backend="python")
    (target / "1" / "export" / "manifest.json").write_text("{}")
    with pytest.raises(RnnEdgeError, match="tritonserver exited during start-up.*airline-gru") as caught:
        with local_server(repo, timeout=60):
            pass
    assert "\n" not in str(caught.value)


# --------------------------------------------------------------------------------------------
# Exactly once, in order; client errors as client errors; health and logs that tell the truth


def _row_sequence(folder=STREAMING, case=1, row=1):
    """One row of a golden case (airline-gru: 12 steps) and Keras' outputs for it."""
    name, inputs, expected = golden(folder)[case]
    return f"{name}, row {row}", rows(inputs, row), rows(expected, row)


def test_the_runtime_stream_refuses_a_chunk_out_of_turn():
    model = rnnedge.load(STREAMING, "cpu")
    case, inputs, expected = _row_sequence()
    x = inputs["window"]
    stream = model.stream(1)
    stream.push(x[:, :4], chunk_index=0)
    with pytest.raises(RnnEdgeError, match="chunk 0 is not this stream's next chunk \\(1\\): it was already applied"):
        stream.push(x[:, :4], chunk_index=0)
    with pytest.raises(RnnEdgeError, match="chunk 2 is not this stream's next chunk \\(1\\): push a stream's chunks "
                                           "in order"):
        stream.push(x[:, 8:], chunk_index=2)
    stream.push(x[:, 4:8], chunk_index=1)
    assert_keras(case, expected, dict(stream.push(x[:, 8:], chunk_index=2)), STREAMING)
    stream.reset()
    assert stream.chunks == 0
    stream.push(x[:, :4], chunk_index=0)


@need_server
@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_a_retried_chunk_is_answered_again_and_never_applied_twice(server, protocol, monkeypatch):
    url = f"{protocol}://" + (server.http_url if protocol == "http" else server.grpc_url)
    triton = TritonRunner(url, STREAMING)
    case, inputs, expected = _row_sequence()
    x = inputs["window"]
    stream = triton.stream()
    stream.push({"window": x[:, :4]})
    second = stream.push({"window": x[:, 4:8]})
    again = triton.infer({"window": x[:, 4:8]}, sequence_id=stream.sequence_id, chunk=1)  # a client's retry
    np.testing.assert_array_equal(again["next_month"], second["next_month"])
    with pytest.raises(Refused, match="chunk 1 of sequence .* was already applied with other data") as refused:
        triton.infer({"window": x[:, 8:]}, sequence_id=stream.sequence_id, chunk=1)
    assert refused.value.client_error
    with pytest.raises(Refused, match="chunk 0 of sequence .* was already applied \\(the next is 2\\)"):
        triton.infer({"window": x[:, :4]}, sequence_id=stream.sequence_id, chunk=0)
    assert_keras(case, expected, stream.end({"window": x[:, 8:]}), STREAMING)
    # the answer to a chunk is lost on its way back (the server did run it): the stream sends it again
    # with the same number and gets the kept answer
    real, lost = triton.infer, []

    def answer_lost(feeds, **kw):
        out = real(feeds, **kw)
        if kw.get("chunk") in (0, 1) and kw["chunk"] not in lost:
            lost.append(kw["chunk"])
            raise OutcomeUnknown("Deadline Exceeded")
        return out

    monkeypatch.setattr(triton, "infer", answer_lost)
    stream = triton.stream()
    stream.push({"window": x[:, :4]})
    stream.push({"window": x[:, 4:8]})
    assert lost == [0, 1] and stream.next == 2
    assert_keras(case, expected, stream.end({"window": x[:, 8:]}), STREAMING)
    # the answer to the last chunk (END) is lost: Triton forgets a sequence at END, so the retry cannot be
    # answered again; the stream says the outputs are lost rather than run the chunk on a fresh state
    lost.clear()

    def end_lost(feeds, **kw):
        out = real(feeds, **kw)
        if kw.get("end") and not lost:
            lost.append(kw["chunk"])
            raise OutcomeUnknown("Deadline Exceeded")
        return out

    monkeypatch.setattr(triton, "infer", end_lost)
    stream = triton.stream()
    stream.push({"window": x[:, :4]})
    with pytest.raises(RnnEdgeError, match="chunk 1 timed out .* the server no longer has the sequence .* its "
                                           "outputs are lost"):
        stream.end({"window": x[:, 4:]})
    assert stream.ended and lost == [1]


@need_server
def test_an_out_of_order_chunk_is_refused_and_leaves_the_state_alone(server):
    import tritonclient.grpc as g

    triton = TritonRunner("grpc://" + server.grpc_url, STREAMING)
    case, inputs, expected = _row_sequence()
    x = inputs["window"]
    stream = triton.stream()
    stream.push({"window": x[:, :4]})
    with pytest.raises(Refused, match="chunk 2 of sequence .* arrived before chunk 1: send a sequence's chunks in "
                                      "order") as refused:
        triton.infer({"window": x[:, 8:]}, sequence_id=stream.sequence_id, chunk=2)
    assert refused.value.client_error and refused.value.status == "StatusCode.INVALID_ARGUMENT"
    with pytest.raises(Refused, match="has sequence_start set: the first chunk of a sequence is number 0"):
        triton.infer({"window": x[:, :4]}, sequence_id=stream.sequence_id, start=True, chunk=3)
    stream.push({"window": x[:, 4:8]})
    assert_keras(case, expected, stream.end({"window": x[:, 8:]}), STREAMING)
    # several chunks of one sequence in flight at once: each is applied in its turn or refused, never out of turn
    client = g.InferenceServerClient(server.grpc_url)
    done = queue.Queue()
    for k, (a, b) in enumerate([(0, 3), (3, 6), (6, 9), (9, 12)]):
        client.async_infer("airline-gru", [_input(g, "window", x[:, a:b])],
                           lambda result, error, k=k: done.put((k, result, error)), sequence_id=99_001,
                           sequence_start=k == 0, sequence_end=k == 3, parameters={"rnnedge_chunk": k})
    answers = sorted(done.get(timeout=30) for _ in range(4))
    applied = [k for k, _, error in answers if error is None]
    assert applied == list(range(len(applied)))  # a prefix: chunk k only after chunks 0..k-1
    for _, _, error in answers:  # refused here or by Triton (no START yet), or cancelled by Triton (END seen)
        assert error is None or "arrived before chunk" in error.message() or "START flag" in error.message() or \
            error.status() == "StatusCode.CANCELLED", (error.status(), str(error))
    if applied == [0, 1, 2, 3]:
        assert_keras(case, expected, {"next_month": answers[3][1].as_numpy("next_month")}, STREAMING)


@need_server
@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_bad_values_are_client_errors_and_a_refused_start_is_named(server, protocol):
    url = f"{protocol}://" + (server.http_url if protocol == "http" else server.grpc_url)
    triton = TritonRunner(url, STREAMING)
    want = "400" if protocol == "http" else "StatusCode.INVALID_ARGUMENT"
    x = np.ones((1, 4, 1), np.float32)
    for bad, what in ((np.nan, "non-finite"), (np.inf, "non-finite")):
        stream = triton.stream()
        y = x.copy()
        y[0, 2, 0] = bad
        with pytest.raises(Refused, match=what) as refused:
            stream.push({"window": y})
        assert refused.value.status == want and refused.value.client_error, refused.value.status
        with pytest.raises(Refused, match="its first request \\(START\\) was refused \\(.*non-finite.*\\); send the "
                                          "first chunk again with sequence_start") as refused:
            triton.infer({"window": x}, sequence_id=stream.sequence_id, chunk=1)
        assert "must set sequence_start" not in str(refused.value) and refused.value.status == want
        case, inputs, expected = _row_sequence()
        assert_keras(case, expected, stream.end(inputs), STREAMING)  # the same sequence id, started again
    with pytest.raises(Refused, match="time") as refused:  # an empty time axis
        triton.stream().push({"window": np.ones((1, 0, 1), np.float32)})
    assert refused.value.status == want


def _stub_pids(server):
    from rnnedge.serve.server import backend_processes

    return backend_processes(server.pid)


@need_server
def test_a_killed_backend_is_not_left_ready_and_is_loaded_again(tmp_path):
    from rnnedge.serve.server import Watcher, local_server

    repo = tmp_path / "repo"
    target = tr.write_repository(STREAMING, repo, backend="python")
    case, inputs, expected = _row_sequence()
    said = []
    with local_server(repo, log=tmp_path / "server.log") as server:
        watcher = Watcher(server, said.append, kept_log=True)
        (instance, (pid, model)), = _stub_pids(server).items()
        assert model == "airline-gru" and instance.startswith("airline-gru_")
        triton = TritonRunner("http://" + server.http_url, STREAMING, retries=0)
        os.kill(pid, 9)
        deadline = time.monotonic() + 10
        while pid in [p for p, _ in _stub_pids(server).values()]:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        with pytest.raises(Refused, match="not healthy"):  # Triton alone: every request fails ...
            triton.stream().end(inputs)
        assert triton.client.is_model_ready("airline-gru")  # ... and the model says it is ready
        watcher.poll()
        assert any("model 'airline-gru': its backend process" in line and "died" in line for line in said), said
        assert said[-1] == "model 'airline-gru' loaded again: ready"
        assert triton.client.is_model_ready("airline-gru")
        assert_keras(case, expected, triton.stream().end(inputs), STREAMING)
        # a model that cannot come back: the watcher says so and gives up (`rnnedge serve` exits 1)
        (target / "1" / "model.py").write_text("raise RuntimeError('broken on purpose')\n")
        (_, (pid, _)), = _stub_pids(server).items()
        os.kill(pid, 9)
        time.sleep(1)
        with pytest.raises(RnnEdgeError, match="model 'airline-gru' died and could not be loaded again .*broken on "
                                               "purpose.*; see .*server.log"):
            watcher.poll()
        assert not triton.client.is_model_ready("airline-gru")
        server.kill()
        with pytest.raises(RnnEdgeError, match="tritonserver stopped by itself \\(killed by SIGKILL\\)") as stopped:
            watcher.poll()
        assert "started" not in str(stopped.value) and "\n" not in str(stopped.value)


@need_server
def test_an_abandoned_sequence_holding_every_slot_is_reported(tmp_path):
    from rnnedge.serve.server import Watcher, local_server

    repo = tmp_path / "repo"
    tr.write_repository(STREAMING, repo, backend="python", idle_seconds=2, max_sequences=1)
    case, inputs, expected = _row_sequence()
    said = []
    with local_server(repo) as server:
        watcher = Watcher(server, said.append)
        triton = TritonRunner("grpc://" + server.grpc_url, STREAMING, timeout=1, retries=0)
        abandoned = triton.stream()
        abandoned.push({"window": inputs["window"][:, :4]})  # and never ended
        with pytest.raises(OutcomeUnknown, match="Deadline"):  # a new sequence waits for a slot
            triton.stream().push({"window": inputs["window"][:, :4]})
        deadline = time.monotonic() + 20
        released = f"sequence {abandoned.sequence_id} released after more than 2 s idle without END"
        while not any(released in line for line in said):
            assert time.monotonic() < deadline, said
            time.sleep(0.5)
            watcher.poll()
        full = [line for line in said if "all 1 sequence slots are taken" in line]
        assert full and "--max-sequences" in full[0] and said.index(full[0]) < len(said) - 1, said
        assert_keras(case, expected, TritonRunner("grpc://" + server.grpc_url, STREAMING).stream().end(inputs),
                     STREAMING)


def test_cli_serve_keeps_its_log_where_asked(tmp_path):
    r = runner.invoke(app, ["serve", str(tmp_path / "nothing"), "--log", str(tmp_path / "no" / "such" / "x.log")])
    assert r.exit_code == 1 and "does not exist" in r.output
    r = runner.invoke(app, ["serve", "--help"])
    assert "--log" in r.output
