"""A load test of a Triton server beside the in-process runtime, on the same sequences.

    from rnnedge.serve.loadtest import load_test
    rows, reports = load_test("exported/airline-gru", "grpc://127.0.0.1:8001", concurrency=(1, 8, 32))

The load test, for each concurrency c: c threads, each with its own client, take sequences from
a shared list until it is done or the time budget is spent (a sequence started is always ended).
A sequence is `chunks` requests of `steps` steps each, the first with START and the last with
END; each request is timed (per-chunk latency). At the same concurrency the in-process runtime
runs the same sequences: c threads sharing one `rnnedge.load(DIR)` model, one
`model.stream(1)` per sequence. Every sequence's outputs are compared with running the whole
sequence at once, so a lost or mixed-up state shows as a mismatch, never as a figure.

The sequences are the export's golden inputs (its test split's real rows where it has one), so
that outputs depend on earlier chunks as they do in use; random inputs can leave a model's
outputs nearly independent of its state, and a mixed-up state unseen. `sensitive_inputs` checks
it: of a pool of golden (then random) sequences it keeps those whose outputs change by more than
10 x the tolerance when they continue from another sequence's state, and refuses to run where
too few do.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rnnedge.bench import BenchRow, percentiles, random_inputs
from rnnedge.check import read_golden
from rnnedge.errors import RnnEdgeError
from rnnedge.manifest import Manifest, is_time_axis
from rnnedge.serve.client import REQUEST_TIMEOUT_S, RUNTIME, TRITON, TritonRunner
from rnnedge.tables import ATOL

MAX_CONCURRENCY = 4096  # client threads (one connection each) in one load test

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


def _golden_rows(folder: Path, manifest: Manifest) -> list[dict[str, np.ndarray]]:
    """golden.npz's rows (each [time, ...] per data input), the last case (the test split) first."""
    names = [s.name for s in manifest.data_inputs]
    found = []
    for _, inputs, _ in reversed(read_golden(folder)):
        for r in range(len(inputs[names[0]])):
            found.append({n: inputs[n][r] for n in names})
    return found


def sequence_inputs(manifest: Manifest, count: int, steps: int, seed: int = 0,
                    folder: str | os.PathLike | None = None) -> dict[str, np.ndarray]:
    """Data inputs of `count` sequences of `steps` steps, batch-major. With `folder`: its golden.npz's
    rows, two joined in time and cycled from an offset, so that no two sequences are the same where
    rows x rows x length allows it (`seed` shifts the choice); without: bench's random inputs."""
    if folder is None:
        feeds = random_inputs(manifest, count, steps, seed)
        return {s.name: feeds[s.name] for s in manifest.data_inputs}
    golden = _golden_rows(Path(folder), manifest)
    n = len(golden)
    timed = {s.name for s in manifest.data_inputs if len(s.shape) > 1 and is_time_axis(s.shape[1])}
    out: dict[str, list[np.ndarray]] = {s.name: [] for s in manifest.data_inputs}
    for i in range(count):
        k = i + seed * 7919
        a, b = golden[k % n], golden[(k // n + k) % n]
        offset = (k // (n * n)) * 5
        for name in out:
            if name in timed:
                joined = np.concatenate([a[name], b[name]], axis=0)
                out[name].append(np.take(joined, np.arange(offset, offset + steps), axis=0, mode="wrap"))
            else:
                out[name].append(a[name])
    return {name: np.stack(arrays) for name, arrays in out.items()}


def state_changes(model, manifest: Manifest, feeds: Mapping[str, np.ndarray], chunks: int,
                  steps: int) -> list[float]:
    """Per sequence: how much its outputs after the middle chunk boundary change (time outputs joined
    over the later chunks, the others from the last chunk) when the state there is the next
    sequence's instead of its own: what a mixed-up state would show in the load test."""
    count = len(next(iter(feeds.values())))
    cut = max(chunks // 2, 1) * steps
    total = chunks * steps

    def part(start, stop):
        return {n: _chunk_all(a, start, stop, manifest, n) for n, a in feeds.items()}

    def rest(stream):
        pieces = [dict(stream.push(**part(a, min(a + steps, total)))) for a in range(cut, total, steps)]
        return merge_chunks(manifest, pieces)

    stream = model.stream(count)
    stream.push(**part(0, cut))
    own = stream.state
    mine = rest(stream)
    stream.load_state({k: np.roll(v, 1, axis=0) for k, v in own.items()})
    other = rest(stream)
    return [max_diff({n: a[i:i + 1] for n, a in other.items()}, {n: a[i:i + 1] for n, a in mine.items()})
            for i in range(count)]


def sensitive_inputs(model, manifest: Manifest, folder: Path, count: int, chunks: int, steps: int, atol: float,
                     seed: int = 0) -> tuple[dict[str, np.ndarray], float]:
    """`count` sequences under which a mixed-up state shows (see the module doc) and the smallest change a
    mix-up makes among them; RnnEdgeError if the golden and random pools hold too few."""
    need = 10 * atol
    pool = [sequence_inputs(manifest, 3 * count + 1, chunks * steps, seed, folder=folder),
            sequence_inputs(manifest, count + 1, chunks * steps, seed)]
    chosen: dict[str, list[np.ndarray]] = {n: [] for n in pool[0]}
    for feeds in pool:
        changes = state_changes(model, manifest, feeds, chunks, steps)
        for i in (i for i, c in enumerate(changes) if c > need):
            for n in chosen:
                chosen[n].append(feeds[n][i])
    have = len(next(iter(chosen.values())))
    for _ in range(4):  # neighbours change with the choice: check again, drop the weak, refill
        if len(next(iter(chosen.values()))) < count:
            break
        feeds = {n: np.stack(a[:count]) for n, a in chosen.items()}
        changes = state_changes(model, manifest, feeds, chunks, steps)
        weak = {i for i, c in enumerate(changes) if not c > need}
        if not weak:
            return feeds, float(min(changes))
        chosen = {n: [x for i, x in enumerate(a) if i not in weak] for n, a in chosen.items()}
    raise RnnEdgeError(f"the load test cannot show a mixed-up state on {folder.name} with {chunks} chunk(s) of "
                       f"{steps} step(s): only {have} of {4 * count + 2} golden and random sequences change their "
                       f"outputs by more than {need:g} when continued from another's state (it needs {count}); "
                       "use more steps per chunk (--time) or more chunks")


def _chunk_all(a: np.ndarray, start: int, stop: int, manifest: Manifest, name: str) -> np.ndarray:
    spec = next(s for s in manifest.data_inputs if s.name == name)
    return a[:, start:stop] if len(spec.shape) > 1 and is_time_axis(spec.shape[1]) else a


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
    if not levels or min(levels) < 1 or max(levels) > MAX_CONCURRENCY:
        raise RnnEdgeError(f"concurrency {list(concurrency)}: expected whole numbers in [1, {MAX_CONCURRENCY}], "
                           "e.g. 1,8,32")
    if not seconds > 0:
        raise RnnEdgeError(f"the time budget must be > 0 seconds, got {seconds!r}")
    TritonRunner(url, folder, model).close()  # fails fast, in one line, if the server or model is wrong
    local = runtime_load(folder, "cpu", threads=threads)
    feeds, _ = sensitive_inputs(local, manifest, folder, sequences, chunks, steps, atol, seed)
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
