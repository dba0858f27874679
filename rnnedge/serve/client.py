"""Triton clients for an export folder's model, and a load test beside the in-process runtime.

    from rnnedge.serve.client import TritonRunner, load_test
    runner = TritonRunner("grpc://127.0.0.1:8001", "exported/airline-gru")   # or http://127.0.0.1:8000
    out = runner.infer({"window": x})                                         # stateless, or:
    stream = runner.stream()                                                  # one sequence id
    y = stream.push({"window": chunk}); stream.end({"window": last})
    rows, reports = load_test("exported/airline-gru", "grpc://127.0.0.1:8001", concurrency=(1, 8, 32))

Only loopback servers: a URL naming another host is refused (this is a local benchmark and test
tool, never a load generator pointed at someone's server). Every loop is bounded by a count and
a time budget, every request by a timeout.

The load test, for each concurrency c: c threads, each with its own client, take sequences from
a shared list until it is done or the time budget is spent (a sequence started is always ended).
A sequence is `chunks` requests of `steps` steps each, the first with START and the last with
END; each request is timed (per-chunk latency). At the same concurrency the in-process runtime
runs the same sequences: c threads sharing one `rnnedge.load(DIR)` model, one
`model.stream(1)` per sequence. Every sequence's outputs are compared with running the whole
sequence at once, so a lost or mixed-up state shows as a mismatch, never as a figure.
"""

from __future__ import annotations

import itertools
import os
import random
import threading
import time
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rnnedge.bench import BenchRow, percentiles, random_inputs
from rnnedge.errors import RnnEdgeError
from rnnedge.manifest import Manifest, is_time_axis

LOOPBACK = ("localhost", "127.0.0.1", "::1")
REQUEST_TIMEOUT_S = 30.0
ATOL = 1e-5
TRITON, RUNTIME = "triton", "runtime"
_NEED = "the Triton client needs the serve extra: pip install 'rnnedge[serve]'"
_ids = itertools.count(random.SystemRandom().randrange(1, 2**40))  # sequence ids unique within this process


def parse_url(url: str) -> tuple[str, str]:
    """"grpc://host:port", "http://host:port" or "host:port" (gRPC) -> (protocol, "host:port");
    RnnEdgeError unless the host is loopback."""
    text = str(url).strip()
    parsed = urllib.parse.urlsplit(text if "://" in text else "grpc://" + text)
    if parsed.scheme not in ("grpc", "http"):
        raise RnnEdgeError(f"Triton URL {url!r}: expected grpc://HOST:PORT or http://HOST:PORT")
    host = parsed.hostname or ""
    if not (host in LOOPBACK or host.startswith("127.")):
        raise RnnEdgeError(f"Triton URL {url!r} is not on this machine: rnnedge only talks to loopback servers "
                           "(127.0.0.1, localhost, ::1); start one with `rnnedge serve REPO`")
    try:
        port = parsed.port
    except ValueError:
        port = None
    if port is None:
        raise RnnEdgeError(f"Triton URL {url!r} has no port: expected e.g. grpc://127.0.0.1:8001 or http://127.0.0.1:8000")
    return parsed.scheme, f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _client_module(protocol: str):
    try:
        if protocol == "grpc":
            import tritonclient.grpc as module
        else:
            import tritonclient.http as module
        from tritonclient.utils import InferenceServerException
    except ImportError:
        raise RnnEdgeError(_NEED) from None
    return module, InferenceServerException


def _message(e: Exception) -> str:
    text = (e.message() if callable(getattr(e, "message", None)) else None) or str(e)
    return " ".join(str(text).split())


class TritonRunner:
    """One client of one model on a loopback Triton server; `infer(feeds)` like the in-process runtime.

    folder: the export folder the model was written from (its manifest names the inputs and
    outputs). model: the model's name on the server (default: the folder's name; where the server
    has no such model but serves exactly one, that one). One runner per thread.
    """

    def __init__(self, url: str, folder: str | os.PathLike, model: str | None = None, *,
                 timeout: float = REQUEST_TIMEOUT_S):
        self.protocol, self.address = parse_url(url)
        self.folder = Path(folder)
        self.manifest = Manifest.load(self.folder)
        self.timeout = float(timeout)
        module, self._error = _client_module(self.protocol)
        self._module = module
        if self.protocol == "grpc":
            # a channel of its own (local subchannel pool): a runner made after a server restart does
            # not inherit the connection backoff of one that failed against the old server
            size = 2**31 - 1
            self.client = module.InferenceServerClient(self.address, channel_args=[
                ("grpc.max_send_message_length", size), ("grpc.max_receive_message_length", size),
                ("grpc.use_local_subchannel_pool", 1)])
        else:
            self.client = module.InferenceServerClient(self.address, connection_timeout=min(self.timeout, 10.0),
                                                       network_timeout=self.timeout)
        self.model = self._model_name(model)
        self.inputs = [s for s in self.manifest.data_inputs]
        self.outputs = [s.name for s in self.manifest.data_outputs]
        self._check_metadata()

    def _call(self, what: str, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except self._error as e:
            raise RnnEdgeError(f"Triton at {self.protocol}://{self.address}: {what} failed: {_message(e)}") from None
        except Exception as e:  # noqa: BLE001 - transport errors (connection refused, reset) of either client
            raise RnnEdgeError(f"Triton at {self.protocol}://{self.address}: {what} failed "
                               f"({type(e).__name__}: {_message(e)}); is the server running?") from None

    def _model_name(self, asked: str | None) -> str:
        index = self._call("listing the models", self.client.get_model_repository_index)
        if self.protocol == "grpc":
            names = [m.name for m in index.models]
        else:
            names = [m["name"] for m in index]
        wanted = asked or self.folder.resolve().name
        if wanted in names:
            return wanted
        if asked is None and len(names) == 1:
            return names[0]
        raise RnnEdgeError(f"the server at {self.address} has no model {wanted!r} (it serves: "
                           f"{', '.join(names) or 'nothing'}): pass the model's name (--triton-model NAME)")

    def _check_metadata(self) -> None:
        meta = self._call(f"reading model '{self.model}'", self.client.get_model_metadata, self.model)
        inputs = [i.name for i in meta.inputs] if self.protocol == "grpc" else [i["name"] for i in meta["inputs"]]
        want = [s.name for s in self.inputs]
        if sorted(inputs) != sorted(want):
            raise RnnEdgeError(f"model '{self.model}' on the server takes {inputs} but {self.folder} takes {want}: "
                               "serve a repository written from this export folder (`rnnedge triton`)")

    def infer(self, feeds: Mapping[str, np.ndarray], *, sequence_id: int = 0, start: bool = False,
              end: bool = False) -> dict[str, np.ndarray]:
        """One request: data inputs by name -> data outputs by name. RnnEdgeError with Triton's message on failure."""
        from tritonclient.utils import np_to_triton_dtype

        inputs = []
        for spec in self.inputs:
            a = np.ascontiguousarray(feeds[spec.name])
            i = self._module.InferInput(spec.name, list(a.shape), np_to_triton_dtype(a.dtype))
            i.set_data_from_numpy(a)
            inputs.append(i)
        outputs = [self._module.InferRequestedOutput(n) for n in self.outputs]
        kwargs: dict[str, Any] = {}
        if sequence_id:
            kwargs = {"sequence_id": sequence_id, "sequence_start": start, "sequence_end": end}
        if self.protocol == "grpc":
            kwargs["client_timeout"] = self.timeout
        result = self._call(f"inference on '{self.model}'", self.client.infer, self.model, inputs,
                            outputs=outputs, **kwargs)
        return {n: result.as_numpy(n) for n in self.outputs}

    def stream(self, sequence_id: int | None = None) -> TritonStream:
        """A sequence on the server: `push` chunks (the first one STARTs it), `end` with the last."""
        return TritonStream(self, sequence_id or next(_ids))

    def close(self) -> None:
        self.client.close()


class TritonStream:
    """One sequence on a Triton server, fed chunk by chunk like `rnnedge`'s `Stream` (batch rows per chunk)."""

    def __init__(self, runner: TritonRunner, sequence_id: int):
        self.runner = runner
        self.sequence_id = int(sequence_id)
        self.started = False
        self.ended = False

    def push(self, feeds: Mapping[str, np.ndarray], *, end: bool = False) -> dict[str, np.ndarray]:
        if self.ended:
            raise RnnEdgeError(f"sequence {self.sequence_id} has ended: open another with runner.stream()")
        start = not self.started
        self.started = True
        if end:
            self.ended = True
        return self.runner.infer(feeds, sequence_id=self.sequence_id, start=bool(start), end=bool(end))

    def end(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.push(feeds, end=True)


# --------------------------------------------------------------------------------------------
# Whole sequences as the reference


def time_outputs(manifest: Manifest) -> set[str]:
    """Data outputs with a time axis (concatenated over chunks); the others are the last chunk's."""
    return {t.name for t in manifest.data_outputs if len(t.shape) > 1 and is_time_axis(t.shape[1])}


def merge_chunks(manifest: Manifest, pieces: Sequence[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    timed = time_outputs(manifest)
    return {t.name: (np.concatenate([p[t.name] for p in pieces], axis=1) if t.name in timed else pieces[-1][t.name])
            for t in manifest.data_outputs}


def max_diff(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray]) -> float:
    """Largest |a - b| over the outputs of `b`; inf where a shape differs or an output is missing."""
    worst = 0.0
    for name, want in b.items():
        got = a.get(name)
        if got is None or np.shape(got) != np.shape(want):
            return float("inf")
        worst = max(worst, float(np.max(np.abs(np.asarray(got, np.float64) - np.asarray(want, np.float64)),
                                        initial=0.0)))
    return worst


# --------------------------------------------------------------------------------------------
# Load test


@dataclass
class LoadReport:
    """One candidate at one concurrency: what ran, what failed, how far from whole-sequence runs."""

    candidate: str
    concurrency: int
    sequences: int = 0  # completed and compared
    requests: int = 0
    failed: int = 0  # requests that raised
    mismatched: int = 0  # sequences whose outputs differ from the whole-sequence run by more than atol
    max_abs: float = 0.0
    seconds: float = 0.0
    max_open: int = 0  # most sequences open (started, not ended) at the same time
    first_error: str = ""
    latencies_ms: list[float] = field(default_factory=list, repr=False)

    @property
    def ok(self) -> bool:
        return self.sequences > 0 and self.failed == 0 and self.mismatched == 0

    def line(self) -> str:
        status = "ok" if self.ok else "FAIL"
        text = (f"{status}: {self.candidate} at concurrency {self.concurrency}: {self.sequences} sequences, "
                f"at most {self.max_open} open at once, {self.requests} requests, {self.failed} failed, "
                f"{self.mismatched} mismatched, "
                f"max |diff| {self.max_abs:.1e} against whole-sequence runs, {self.seconds:.1f} s")
        return text + (f"; first error: {self.first_error}" if self.first_error else "")


def sequence_inputs(manifest: Manifest, count: int, steps: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Data inputs of `count` sequences of `steps` steps (bench's random inputs), batch-major."""
    feeds = random_inputs(manifest, count, steps, seed)
    return {s.name: feeds[s.name] for s in manifest.data_inputs}


def _chunk(feeds: Mapping[str, np.ndarray], row: int, start: int, stop: int, manifest: Manifest) -> dict:
    timed = {s.name for s in manifest.data_inputs if len(s.shape) > 1 and is_time_axis(s.shape[1])}
    return {n: (a[row:row + 1, start:stop] if n in timed else a[row:row + 1]) for n, a in feeds.items()}


def _drive(candidate: str, concurrency: int, total: int, open_stream, manifest: Manifest,
           feeds: Mapping[str, np.ndarray], expected: Sequence[Mapping[str, np.ndarray]], chunks: int, steps: int,
           seconds: float, atol: float, advance) -> LoadReport:
    """`concurrency` threads run sequences 0..total-1 (until the time budget is spent); see the module doc."""
    report = LoadReport(candidate, concurrency)
    lock = threading.Lock()
    open_now = [0]

    def go():  # the time budget and the clock start when every client is connected
        deadline[0] = time.monotonic() + seconds
        started[0] = time.perf_counter()

    ready = threading.Barrier(concurrency, action=go)  # no sequence starts before every client is connected

    def wait_for_all():
        try:
            ready.wait(timeout=REQUEST_TIMEOUT_S)
        except threading.BrokenBarrierError:
            pass  # a thread that could not connect, or a slow start: run with those that are there

    queue = iter(range(total))
    deadline = [time.monotonic() + REQUEST_TIMEOUT_S + seconds]  # until every client is connected
    started = [None]

    def worker():
        try:
            handle = open_stream()
        except RnnEdgeError as e:
            with lock:
                report.failed += 1
                report.first_error = report.first_error or str(e)
            ready.abort()
            return
        wait_for_all()
        clock = time.perf_counter
        while time.monotonic() < deadline[0]:
            with lock:
                row = next(queue, None)
            if row is None:
                return
            push = handle()
            pieces, times, failed = [], [], None
            with lock:
                open_now[0] += 1
                report.max_open = max(report.max_open, open_now[0])
            for k in range(chunks):
                part = _chunk(feeds, row, k * steps, (k + 1) * steps, manifest)
                t0 = clock()
                try:
                    pieces.append(push(part, k == chunks - 1))
                except RnnEdgeError as e:
                    failed = str(e)
                    break
                times.append((clock() - t0) * 1e3)
            diff = max_diff(merge_chunks(manifest, pieces), expected[row]) if failed is None else None
            with lock:
                open_now[0] -= 1
                report.requests += len(times) + (failed is not None)
                report.latencies_ms += times
                if failed is not None:
                    report.failed += 1
                    report.first_error = report.first_error or failed
                else:
                    report.sequences += 1
                    report.max_abs = max(report.max_abs, diff)
                    report.mismatched += diff > atol
            if failed is not None:
                return  # a failed server is not hammered further by this thread
            advance(1)

    threads = [threading.Thread(target=worker, name=f"rnnedge-load-{i}", daemon=True) for i in range(concurrency)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:  # each thread stops taking sequences at the deadline; the wait is bounded too
        t.join(timeout=max(deadline[0] - time.monotonic(), 0) + chunks * REQUEST_TIMEOUT_S + 5)
    report.seconds = time.perf_counter() - (started[0] or t0)
    if any(t.is_alive() for t in threads):
        report.failed += 1
        report.first_error = report.first_error or "a client thread did not finish within its time limit"
    return report


def _triton_streams(url: str, folder: Path, model: str | None):
    """A per-thread factory: one client per thread, one sequence id per sequence."""

    def open_stream():
        runner = TritonRunner(url, folder, model)

        def handle():
            stream = runner.stream()
            return lambda part, end: stream.push(part, end=end)

        return handle

    return open_stream


def _runtime_streams(model):
    def open_stream():
        def handle():
            stream = model.stream(1)
            return lambda part, end: dict(stream.push(**part))

        return handle

    return open_stream


def _row(report: LoadReport, provider: str, steps: int, chunks: int, threads: int,
         reference: LoadReport | None) -> BenchRow:
    ms = np.asarray(report.latencies_ms or [0.0])
    p50, p90, p99 = percentiles(ms)
    per_s = report.sequences / report.seconds if report.seconds > 0 else 0.0
    ratios = {}
    if reference is not None and reference.latencies_ms and p50 > 0:
        ratios[RUNTIME] = percentiles(np.asarray(reference.latencies_ms))[0] / p50
    return BenchRow(candidate=f"{report.candidate} c={report.concurrency}", provider=provider, batch=1, time=steps,
                    threads=threads, p50_ms=p50, p90_ms=p90, p99_ms=p99, seq_per_s=per_s,
                    steps_per_s=per_s * steps * chunks, ratios=ratios, runs=len(report.latencies_ms),
                    error=report.max_abs)


def load_test(folder: str | os.PathLike, url: str, *, model: str | None = None,
              concurrency: Sequence[int] = (1, 8, 32), sequences: int = 64, chunks: int = 8, steps: int = 1,
              seconds: float = 20.0, threads: int = 1, runtime: bool = True, atol: float = ATOL,
              progress=None, seed: int = 0) -> tuple[list[BenchRow], list[LoadReport]]:
    """Per concurrency: Triton (and, with `runtime`, the in-process runtime) on the same sequences.

    Rows (bench's BenchRow, one per candidate and concurrency): candidate "triton c=N" /
    "runtime c=N"; batch 1 (one row per request); time = steps per chunk; p50/p90/p99 per chunk
    (request) in ms; seq_per_s = whole sequences completed per second of wall time; steps_per_s
    = that x steps per sequence; ratios {"runtime": runtime p50 / Triton p50} on Triton rows;
    error = max |diff| against whole-sequence runs. `sequences` per concurrency level, `seconds`
    the time budget of each level and candidate; progress: a rich Progress (one task per level)
    or None.
    """
    from rnnedge.runtime import load as runtime_load

    folder = Path(folder)
    manifest = Manifest.load(folder)
    if not manifest.streaming or not manifest.state_inputs:
        raise RnnEdgeError(f"{folder} is not a streaming export: the load test streams sequences chunk by chunk; "
                           "re-export with `rnnedge export --streaming`")
    for what, value in (("sequences", sequences), ("chunks", chunks), ("steps", steps), ("threads", threads)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise RnnEdgeError(f"{what} must be a whole number >= 1, got {value!r}")
    levels = list(dict.fromkeys(int(c) for c in concurrency))
    if not levels or min(levels) < 1 or max(levels) > 256:
        raise RnnEdgeError(f"concurrency {list(concurrency)}: expected whole numbers in [1, 256], e.g. 1,8,32")
    if not seconds > 0:
        raise RnnEdgeError(f"the time budget must be > 0 seconds, got {seconds!r}")
    TritonRunner(url, folder, model).close()  # fails fast, in one line, if the server or model is wrong
    local = runtime_load(folder, "cpu", threads=threads)
    feeds = sequence_inputs(manifest, sequences, chunks * steps, seed)
    whole = local.run(**feeds)
    expected = [{n: whole[n][i:i + 1] for n in whole.data_names} for i in range(sequences)]
    warm = _chunk(feeds, 0, 0, steps, manifest)
    runner = TritonRunner(url, folder, model)
    for _ in range(3):  # warm-up, not timed: first requests pay for connections and allocations
        s = runner.stream()
        s.push(warm)
        s.end(warm)
        local.stream(1).push(**warm)
    runner.close()
    rows: list[BenchRow] = []
    reports: list[LoadReport] = []
    for c in levels:
        task = progress.add_task(f"concurrency {c}", total=sequences * (2 if runtime else 1)) if progress else None

        def advance(n, task=task):
            if task is not None:
                progress.advance(task, n)

        tri = _drive(TRITON, c, sequences, _triton_streams(url, folder, model), manifest, feeds, expected,
                     chunks, steps, seconds, atol, advance)
        reports.append(tri)
        ref = None
        if runtime:
            ref = _drive(RUNTIME, c, sequences, _runtime_streams(local), manifest, feeds, expected, chunks, steps,
                         seconds, atol, advance)
            reports.append(ref)
        rows.append(_row(tri, "Triton (" + runner.protocol + ")", steps, chunks, threads, ref))
        if ref is not None:
            rows.append(_row(ref, local.provider, steps, chunks, threads, None))
    return rows, reports
