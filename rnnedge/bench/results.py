"""Benchmark results: one row per case (batch x time) and candidate, to JSON and CSV."""

from __future__ import annotations

import csv
import dataclasses
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rnnedge.errors import RnnEdgeError
from rnnedge.files import atomic_path, write_text


@dataclass(frozen=True)
class BenchRow:
    """One case (batch x time) of one candidate.

    time: steps per sequence (per push for "stream-*" and "floor"), None for a model without a
        time axis. seq_per_s: sequences (pushes for streams) of `batch` rows per second at p50,
        times `batch`; steps_per_s: seq_per_s x time. ratios: baseline -> baseline p50 / this
        p50 (above 1: this candidate is faster), for the baselines timed in the same case
        ("floor" for streams: below 1, the share of a push that is overhead). error: the
        variant's max |diff| against Keras on the export's golden outputs (from the manifest);
        a baseline's, measured on the golden cases it can take (None where it takes none).
    """

    candidate: str
    provider: str
    batch: int
    time: int | None
    threads: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    seq_per_s: float
    steps_per_s: float
    ratios: dict[str, float] = field(default_factory=dict)
    runs: int = 0
    error: float | None = None

    def __post_init__(self):
        if not self.candidate or not isinstance(self.candidate, str):
            raise ValueError(f"candidate must be a non-empty name, got {self.candidate!r}")
        if self.batch < 1 or self.threads < 1 or (self.time is not None and self.time < 1):
            raise ValueError(f"batch, threads and time must be >= 1, got {self.batch}, {self.threads}, {self.time}")
        if not 0 <= self.p50_ms <= self.p90_ms <= self.p99_ms:
            raise ValueError(f"percentiles must be ordered 0 <= p50 <= p90 <= p99, got "
                             f"{self.p50_ms}, {self.p90_ms}, {self.p99_ms}")
        object.__setattr__(self, "ratios", {str(k): float(v) for k, v in self.ratios.items()})


def write_json(rows: Sequence[BenchRow], path: str | os.PathLike) -> Path:
    """A JSON list of the rows (`dataclasses.asdict`); `read_json` reads it back."""
    path = Path(path)
    parent_folder(path)
    write_text(path, json.dumps([dataclasses.asdict(r) for r in rows], indent=2) + "\n", result=True)
    return path


def read_json(path: str | os.PathLike) -> list[BenchRow]:
    return [BenchRow(**d) for d in json.loads(Path(path).read_text())]


def ratio_keys(rows: Sequence[BenchRow]) -> list[str]:
    return list(dict.fromkeys(k for r in rows for k in r.ratios))


def write_csv(rows: Sequence[BenchRow], path: str | os.PathLike) -> Path:
    """One line per row; `ratios` spread into columns "vs_<baseline>" (empty where not timed)."""
    path = Path(path)
    parent_folder(path)
    fields = [f.name for f in dataclasses.fields(BenchRow) if f.name != "ratios"]
    keys = ratio_keys(rows)
    with atomic_path(path, result=True) as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(fields + [f"vs_{k}" for k in keys])
        for r in rows:
            d = dataclasses.asdict(r)
            w.writerow([("" if d[k] is None else d[k]) for k in fields] + [r.ratios.get(k, "") for k in keys])
    return path


def parent_folder(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RnnEdgeError(f"cannot write {path} ({e.strerror or e})") from None
