"""Where the browser's pieces are: Chromium (the system's package), Node.js, and the npm packages
`make install` puts in web/node_modules (onnxruntime-web, TensorFlow.js); nothing is fetched at run
time. A missing piece is one line naming the package and how to install it."""

from __future__ import annotations

import shutil
from pathlib import Path

from rnnedge.errors import RnnEdgeError
from rnnedge.tables import CPU, CUDA

JS = Path(__file__).with_name("js")  # rnnedge.mjs, the demo page, the drivers (package data)
NPM = Path(__file__).resolve().parents[2] / "web"  # package.json, package-lock.json, node_modules (make install)
ORT_DIST = NPM / "node_modules" / "onnxruntime-web" / "dist"
TFJS_DIST = NPM / "node_modules" / "@tensorflow" / "tfjs" / "dist"
TFJS_WASM_DIST = NPM / "node_modules" / "@tensorflow" / "tfjs-backend-wasm" / "dist"

# The execution providers of onnxruntime-web that rnnedge drives in Chromium, with the files of
# its build each needs, and the native provider whose tolerance they share (WebAssembly computes in
# float32 on the CPU as onnxruntime's CPU provider does; WebGPU on a GPU, as CUDA does).
BROWSER_PROVIDERS = {
    "wasm": {"module": "ort.wasm.min.mjs", "files": ("ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm"),
             "tolerance_as": CPU, "label": "onnxruntime-web (wasm)"},
    "webgpu": {"module": "ort.webgpu.min.mjs",
               "files": ("ort-wasm-simd-threaded.asyncify.mjs", "ort-wasm-simd-threaded.asyncify.wasm"),
               "tolerance_as": CUDA, "label": "onnxruntime-web (webgpu)"},
}
CHROMIUM_FLAGS = ("--no-sandbox", "--disable-quic", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync")
NPM_HINT = "run `make install` (it runs `npm ci` in web/)"


def _need(path: Path, package: str) -> Path:
    if not path.exists():
        raise RnnEdgeError(f"the npm package {package} is not installed ({path} is missing): {NPM_HINT}")
    return path


def ort_dist() -> Path:
    return _need(ORT_DIST / "ort.wasm.min.mjs", "onnxruntime-web").parent


def tfjs_files() -> list[Path]:
    return [_need(TFJS_DIST / "tf.min.js", "@tensorflow/tfjs"),
            _need(TFJS_WASM_DIST / "tf-backend-wasm.min.js", "@tensorflow/tfjs-backend-wasm"),
            *sorted(TFJS_WASM_DIST.glob("*.wasm"))]


def chromium() -> str:
    """The system's Chromium (Debian's `chromium` package)."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        raise RnnEdgeError("no browser: install Chromium from the system's packages (`apt-get install chromium`; "
                           "`make install` does it where it can)")
    return found


def node() -> str:
    found = shutil.which("node")
    if found is None:
        raise RnnEdgeError("Node.js is not installed: install the system's `nodejs` package (it checks the model's "
                           "ops against onnxruntime-web, and `make install` needs its npm)")
    return found
