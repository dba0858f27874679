"""Ctrl-C at moments spread over real `rnnedge` commands, each judged on what it left (issue #28).

    .venv/bin/python tools/ctrl_c_trial.py [--tries 24] [--other-tries 8] [--only export,run,...]
                                           [--json FILE] [--keep DIR]

Each command runs as `python -m rnnedge ...` in a new process group, once without a signal to
measure how long it takes, then again and again with SIGINT sent to the whole group (as a terminal's
Ctrl-C is) at moments spread uniformly from 1 s (0.2 s for the commands that load no TensorFlow)
to 98% of the measured duration. A try is correct when:
  - the exit code is 130;
  - stderr holds one line (warnings aside), the line rnnedge prints for an interruption, and no
    "Traceback" and no "Exception ignored";
  - nothing is half-written: the output is absent, or (only where the line says it "was written")
    whole and put in place before Ctrl-C came, not after it (a Ctrl-C that did not stop the work);
    no temporary file or folder is left beside it; a folder changed in place (quantize) is whole.
Each command that writes an output also gets tries (--at-output) with Ctrl-C sent the moment the
output appears: the line must then say it was written, and the output must be whole.
A command that ended before the signal could be sent is not a try (shown as "ended first"). One
that had finished its work and was exiting is (the last second of an export, while TensorFlow shuts
down): Ctrl-C then must still say so, in one line, with exit 130.

Exports: a tiny .keras built here, a zoo model (its cache warmed by the measuring run), and a Keras 2
.h5 built with tf_keras; each plain, with --quantize int8 and with --streaming. The other commands
run on copies of exported/airline-gru: `run -o y.npz`, `check`, `quantize --variants int8,fp16`,
`bench --json b.json`. Prints a table of every try and a summary by command.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)}
CLI = [sys.executable, "-m", "rnnedge"]
SOURCE = REPO / "exported" / "airline-gru"
ZOO = "zoo:airline-gru"

KERAS3 = """
import sys, keras
from keras import layers as L
x = L.Input((None, 3), name="x")
h = L.GRU(16, return_sequences=True, name="gru")(x)
keras.Model(x, L.Dense(2, name="y")(L.LSTM(8, name="lstm")(h)), name="tiny").save(sys.argv[1])
"""
KERAS2 = """
import sys, tf_keras
from tf_keras import layers as L
x = L.Input((None, 3), name="x")
h = L.GRU(16, return_sequences=True, name="gru")(x)
tf_keras.Model(x, L.Dense(2, name="y")(L.LSTM(8, name="lstm")(h)), name="tiny2").save(sys.argv[1])
"""


def holds_ctrl_c(pid: int) -> bool:
    """rnnedge's entry has set its SIGINT handler: it holds descriptor 2 in a file of its own right
    after (before that, Ctrl-C is Python's own start-up, which no program's code reaches)."""
    try:
        return not os.readlink(f"/proc/{pid}/fd/2").startswith("pipe:")
    except OSError:
        return True  # it has exited


def exited(pid: int) -> bool:
    """The process has exited (a zombie not yet reaped, which still takes a signal)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except (OSError, IndexError):
        return True


def sigint_ignored(pid: int) -> bool:
    """The process ignores SIGINT: rnnedge's entry does so once the command has ended (a Ctrl-C
    then cannot turn a finished run into a traceback from the interpreter's shutdown)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("SigIgn:"):
                return bool(int(line.split()[1], 16) & (1 << (signal.SIGINT - 1)))
    except (OSError, ValueError):
        pass
    return False


def hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".")) if folder.is_dir() else []


def whole_export(folder: Path) -> str:
    """'' when the folder is a whole export (its manifest reads and every file it names matches),
    else what is wrong."""
    from rnnedge.errors import RnnEdgeError
    from rnnedge.manifest import Manifest

    try:
        m = Manifest.load(folder)
        if not m.files:
            return "its manifest records no checksums"
        m.verify(folder, list(m.files))
        missing = [v["file"] for v in m.variants.values() if v["file"] not in m.files]
        extra = sorted(p.name for p in folder.iterdir() if p.name not in m.files and p.name != "manifest.json")
        if missing or extra:
            return f"files not in the manifest: {extra}; variants without a checksum: {missing}"
    except (RnnEdgeError, OSError, KeyError, ValueError) as e:
        return str(e)
    return ""


class Case:
    """A command to interrupt: `args(i, root)` its arguments for try i in its own folder `root`
    (prepared by `prepare`), `out(root)` what it writes (None: nothing), `in_place`: it changes a
    folder in place (judged whole afterwards)."""

    def __init__(self, name, args, out=None, prepare=None, in_place=None, start=1.0):
        self.name, self.args, self.out, self.prepare, self.in_place, self.start = \
            name, args, out, prepare, in_place, start


def export_case(name: str, model, extra=()) -> Case:
    return Case(name, lambda root: ["export", model(), "--out", root / "out", *extra], out=lambda root: root / "out")


def cases(models: dict, x: Path) -> list[Case]:
    def copy(root: Path) -> None:
        shutil.copytree(SOURCE, root / "exp")

    exports = []
    for label, model in (("keras", lambda: models["keras"]), ("zoo", lambda: ZOO), ("h5", lambda: models["h5"])):
        exports += [export_case(f"export {label}", model),
                    export_case(f"export {label} --quantize int8", model, ("--quantize", "int8")),
                    export_case(f"export {label} --streaming", model, ("--streaming",))]
    others = [
        Case("run -o", lambda root: ["run", root / "exp", "-i", x, "-o", root / "y.npz"], out=lambda r: r / "y.npz",
             prepare=copy, start=0.2),
        Case("check", lambda root: ["check", root / "exp"], prepare=copy, start=0.2),
        Case("quantize", lambda root: ["quantize", root / "exp", "--variants", "int8,fp16"],
             prepare=copy, in_place=lambda root: root / "exp", start=0.2),
        Case("bench --json", lambda root: ["bench", root / "exp", "--runs", "300", "--json", root / "b.json"],
             out=lambda r: r / "b.json", prepare=copy, start=0.2),
    ]
    return exports + others


def launch(case: Case, root: Path) -> tuple[subprocess.Popen, float]:
    root.mkdir(parents=True)
    (root / "tmp").mkdir()
    if case.prepare:
        case.prepare(root)
    began = time.monotonic()
    proc = subprocess.Popen([*CLI, *map(str, case.args(root))], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**ENV, "TMPDIR": str(root / "tmp")}, cwd=root,
                            start_new_session=True)
    return proc, began


def measure(case: Case, root: Path) -> float:
    proc, began = launch(case, root)
    out, err = proc.communicate(timeout=600)
    if proc.returncode != 0:
        raise SystemExit(f"{case.name}: the run without Ctrl-C failed (exit {proc.returncode}):\n{err[-2000:]}")
    return time.monotonic() - began


def one_try(case: Case, root: Path, at: float | None) -> dict:
    """Run `case`, send SIGINT to its process group `at` seconds after the start (once rnnedge holds
    Ctrl-C; None: as soon as its output is in place), and judge what it left."""
    proc, began = launch(case, root)
    sent, ignored = None, False
    target = case.out(root) if case.out else None
    while proc.poll() is None:
        now = time.monotonic() - began
        due = target.exists() if at is None else now >= at
        if due and holds_ctrl_c(proc.pid):
            if exited(proc.pid):
                break  # it ended first
            ignored = sigint_ignored(proc.pid)
            sent_wall = time.time()
            try:
                os.killpg(proc.pid, signal.SIGINT)
                sent = now
            except ProcessLookupError:
                pass
            break
        time.sleep(0.005)
    out, err = proc.communicate(timeout=600)
    ended = time.monotonic() - began
    row = {"case": case.name, "at": "output" if at is None else round(at, 2),
           "sent": None if sent is None else round(sent, 2), "ended": round(ended, 2), "rc": proc.returncode,
           "sigint_ignored": ignored}
    lines = [ln for ln in err.strip().splitlines() if ln.strip() and not ln.startswith("warning:")]
    row["last"] = lines[-1] if lines else ""
    if sent is None:
        row["verdict"] = "ended first"
        return row
    why = []
    if proc.returncode != 130:
        why.append(f"exit {proc.returncode}" + (" (SIGINT was ignored when sent)" if ignored else ""))
    if "Traceback" in err or "Exception ignored" in err:
        why.append("a traceback" if "Traceback" in err else "'Exception ignored'")
    if len(lines) != 1 or not lines[0].startswith("interrupted"):
        why.append(f"{len(lines)} lines on stderr")
    written = "was written" in row["last"]
    if target is not None:
        if target.exists() and not written:
            why.append(f"{target.name} exists, yet the line says nothing was written")
        elif written and not target.exists():
            why.append(f"the line says {target.name} was written; it is not there")
        elif written:
            late = target.stat().st_ctime - sent_wall
            row["written_after_s"] = round(late, 2)
            if late > 0.5:
                why.append(f"{target.name} put in place {late:.1f} s after Ctrl-C")
            if target.is_dir() and (bad := whole_export(target)):
                why.append(f"{target.name}: {bad}")
        left = [n for n in hidden(target.parent) if n.startswith(f".{target.name}.")]
        if left:
            why.append(f"left beside it: {left}")
    if case.in_place:
        folder = case.in_place(root)
        if bad := whole_export(folder):
            why.append(f"{folder.name}: {bad}")
        if hidden(folder):
            why.append(f"left in {folder.name}: {hidden(folder)}")
    scratch = [n for n in os.listdir(root / "tmp") if not n.startswith("onnxruntime")]
    if scratch:
        row["tmpdir_left"] = scratch  # TMPDIR: shown, not judged (not beside the output)
    row["verdict"] = "correct" if not why else "; ".join(why)
    row["stderr_tail"] = err[-1500:] if why else ""
    return row


def build_models(root: Path) -> dict:
    models = {"keras": root / "tiny.keras", "h5": root / "tiny2.h5"}
    for code, path in ((KERAS3, models["keras"]), (KERAS2, models["h5"])):
        done = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, env=ENV)
        if done.returncode:
            raise SystemExit(f"building {path.name} failed:\n{done.stderr[-2000:]}")
    return models


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tries", type=int, default=24, help="export tries in all, spread over the export cases")
    ap.add_argument("--other-tries", type=int, default=8, help="tries per other command")
    ap.add_argument("--at-output", type=int, default=2,
                    help="more tries per command that writes an output: Ctrl-C as soon as it is in place")
    ap.add_argument("--only", default="", help="comma-separated prefixes of case names, e.g. export,run")
    ap.add_argument("--json", type=Path, help="write every try as JSON")
    ap.add_argument("--keep", type=Path, help="work in this folder and keep it (default: a temporary one)")
    args = ap.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="ctrl-c-"))
    work.mkdir(parents=True, exist_ok=True)
    import numpy as np

    x = work / "x.npz"
    np.savez(x, window=np.random.default_rng(0).normal(size=(512, 12, 1)).astype(np.float32))
    chosen = [c for c in cases(build_models(work), x)
              if not args.only or any(c.name.startswith(p) for p in args.only.split(","))]
    exports = [c for c in chosen if c.name.startswith("export")]
    per = {c.name: args.other_tries for c in chosen if c not in exports}
    for i in range(args.tries if exports else 0):
        per[exports[i % len(exports)].name] = per.get(exports[i % len(exports)].name, 0) + 1
    rows = []
    for n, case in enumerate(chosen):
        if not per.get(case.name):
            continue
        whole = measure(case, work / f"c{n}" / "measure")
        moments = np.linspace(case.start, max(case.start, 0.98 * whole), per[case.name])
        print(f"{case.name}: {whole:.1f} s without Ctrl-C; Ctrl-C at {', '.join(f'{t:.1f}' for t in moments)} s",
              flush=True)
        if case.out:
            moments = [*moments, *[None] * args.at_output]
        for i, at in enumerate(moments):
            row = one_try(case, work / f"c{n}" / f"t{i}", None if at is None else float(at))
            row["duration"] = round(whole, 2)
            rows.append(row)
            print(f"  {row['at']:>6} s  exit {row['rc']!s:>4}  {row['verdict']:<14.60}  {row['last'][:90]}",
                  flush=True)
            if row["verdict"] not in ("correct", "ended first"):
                print("    " + row["stderr_tail"].replace("\n", "\n    ")[-1200:], flush=True)
    print(f"\nsummary (CPU: {cpu_name()})")
    print(f"{'command':34} {'tries':>5} {'correct':>7} {'written':>7} {'ended 1st':>9}  {'duration':>8}")
    for name in dict.fromkeys(r["case"] for r in rows):
        mine = [r for r in rows if r["case"] == name]
        tries = [r for r in mine if r["verdict"] != "ended first"]
        print(f"{name:34} {len(tries):5} {sum(r['verdict'] == 'correct' for r in tries):7} "
              f"{sum('written_after_s' in r for r in tries):7} {len(mine) - len(tries):9}  {mine[0]['duration']:7.1f}s")
    for kind in ("export", ""):
        group = [r for r in rows if r["verdict"] != "ended first" and r["case"].startswith("export") == bool(kind)]
        if group:
            print(f"{'exports' if kind else 'other commands'}: {len(group)} tries, "
                  f"{sum(r['verdict'] == 'correct' for r in group)} correct")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    bad = [r for r in rows if r["verdict"] not in ("correct", "ended first")]
    sys.exit(1 if bad else 0)


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()}, {os.cpu_count()} cores"
    except OSError:
        pass
    return "unknown"


if __name__ == "__main__":
    main()
