"""`rnnedge web DIR --out SITE`: a static site that runs an export in the browser. The model (fp32,
or a variant that passed its gate), manifest.json, onnxruntime-web's files, rnnedge.mjs (load, run,
stream), the golden cases as raw arrays, and a demo page that runs them and shows outputs and timings
(a streaming export also streams hop by hop, with the cost per hop). `serve_site` serves a folder on
127.0.0.1 (any static server does)."""

from __future__ import annotations

import functools
import http.server
import json
import re
import shutil
import subprocess
import threading
from pathlib import Path

import numpy as np

from rnnedge.check import read_golden
from rnnedge.errors import RnnEdgeError
from rnnedge.manifest import MANIFEST, Manifest
from rnnedge.web.assets import BROWSER_PROVIDERS, JS, node, ort_dist

SITE_FILES = ("rnnedge.mjs", "index.html", "demo.mjs")
MISSING_OP = (re.compile(r"([\w.]*:?\w+)\(-?\d+\) is not a registered function/op"),
              re.compile(r"Could not find an implementation for (\w+)\((\d+)\)"))


def pick_variant(manifest: Manifest, variant: str) -> str:
    """The file of `variant`: fp32, or a quantized variant whose gate passed."""
    info = manifest.variants.get(variant)
    if variant == "fp32":
        return (info or {}).get("file", "model.onnx")
    if info is None:
        raise RnnEdgeError(f"this export has no {variant} variant (it has {', '.join(manifest.variants) or 'fp32'}); "
                           f"run `rnnedge quantize` first or pick another")
    if not info.get("gate", {}).get("passed"):
        raise RnnEdgeError(f"the {variant} variant failed its accuracy gate ({info.get('gate', {}).get('rule', '?')}): "
                           "a site ships fp32 or a variant that passed")
    return info["file"]


def check_ops(model: Path) -> None:
    """Load the model in onnxruntime-web's WebAssembly build under Node.js (the same binary the page
    runs): a model with an op that build lacks is refused, naming the op."""
    script = JS / "opcheck.mjs"
    done = subprocess.run([node(), str(script), str(ort_dist() / "ort.wasm.min.mjs"), str(model)],
                          capture_output=True, text=True, timeout=300)
    if done.returncode == 0:
        return
    text = (done.stdout + done.stderr).strip()
    for pattern in MISSING_OP:
        m = pattern.search(text)
        if m:
            raise RnnEdgeError(f"{model.name} uses the op {m.group(1)}, which onnxruntime-web lacks: it cannot run in "
                               "the browser (export without it, or run it natively)")
    raise RnnEdgeError(f"onnxruntime-web cannot load {model.name}: {(text.splitlines() or ['?'])[-1][:200]}")


def write_golden_arrays(folder: Path, out: Path) -> list[dict]:
    """golden.npz as raw little-endian files the page can fetch: golden/<case>/<in|out>/<n>.bin."""
    index = []
    for i, (name, inputs, expected) in enumerate(read_golden(folder)):
        case = {"name": name, "in": {}, "out": {}}
        for kind, arrays in (("in", inputs), ("out", expected)):
            for j, (key, a) in enumerate(arrays.items()):
                a = np.ascontiguousarray(a)
                if a.dtype == np.float64:
                    a = a.astype(np.float32)
                rel = f"golden/{i}/{kind}{j}.bin"
                (out / rel).parent.mkdir(parents=True, exist_ok=True)
                (out / rel).write_bytes(a.astype(a.dtype.newbyteorder("<")).tobytes())
                case[kind][key] = {"file": rel, "dtype": "bool" if a.dtype == bool else str(a.dtype),
                                   "dims": list(a.shape)}
        index.append(case)
    return index


def write_site(folder: str | Path, out: str | Path, *, variant: str = "fp32", providers=("wasm",),
               force: bool = False, extra=(), ops: bool = True) -> Path:
    """Write the site for the export at `folder` into `out`; returns `out`. `providers`: the
    onnxruntime-web builds to ship (wasm; webgpu adds its own). `extra`: more files of js/ to copy
    (the check's driver)."""
    folder, out = Path(folder), Path(out)
    manifest = Manifest.load(folder)
    file = pick_variant(manifest, variant)
    if (folder / file).is_file() is False:
        raise RnnEdgeError(f"{folder / file} is missing: re-export the model")
    if out.exists() and not out.is_dir():
        raise RnnEdgeError(f"{out} is a file: --out takes a folder for the site")
    if out.exists() and any(out.iterdir()):
        if not force:
            raise RnnEdgeError(f"{out} exists and is not empty: pass --force to replace it")
        shutil.rmtree(out)
    if ops:
        check_ops(folder / file)
    out.mkdir(parents=True, exist_ok=True)
    shutil.copy2(folder / file, out / file)
    shutil.copy2(folder / MANIFEST, out / MANIFEST)
    dist = ort_dist()
    (out / "ort").mkdir(exist_ok=True)
    for p in providers:
        spec = BROWSER_PROVIDERS[p]
        for name in (spec["module"], *spec["files"]):
            shutil.copy2(dist / name, out / "ort" / name)
    for name in (*SITE_FILES, *extra):
        shutil.copy2(JS / name, out / name)
    golden = write_golden_arrays(folder, out)
    hop = max(1, manifest.time_stride)
    (out / "site.json").write_text(json.dumps({
        "name": folder.resolve().name, "model": file, "variant": variant, "streaming": manifest.streaming,
        "hop": hop, "providers": list(providers), "golden": golden}, indent=1))
    return out


class _Quiet(http.server.SimpleHTTPRequestHandler):
    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map, ".mjs": "text/javascript",
                      ".js": "text/javascript", ".wasm": "application/wasm", ".json": "application/json"}

    def end_headers(self):
        # cross-origin isolated: the page's clock ticks in microseconds, not 0.1 ms (same-origin files only)
        self.send_header("Cross-Origin-Opener-Policy", "same-origin")
        self.send_header("Cross-Origin-Embedder-Policy", "require-corp")
        super().end_headers()

    def log_message(self, *args):  # no line per request
        pass


def serve_site(site: str | Path, port: int = 0, check: bool = True) -> http.server.ThreadingHTTPServer:
    """Serve `site` on 127.0.0.1 (port 0: any free one) from a background thread; `.shutdown()` stops it.
    `check`: refuse a folder that is not a site written by `rnnedge web`."""
    site = Path(site)
    if check and not (site / "site.json").is_file():
        raise RnnEdgeError(f"{site} is not a site written by `rnnedge web` (no site.json)")
    handler = functools.partial(_Quiet, directory=str(site))
    try:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    except OSError as e:
        raise RnnEdgeError(f"cannot serve on 127.0.0.1:{port} ({e.strerror}): pick another --port") from None
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server
