"""`rnnedge check DIR --provider wasm|webgpu`: the golden cases, whole and streamed in chunks, run in
headless Chromium on onnxruntime-web, compared with Keras as every other provider's are."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from rnnedge.check import STREAM_CHUNKS, CaseParity, ParityReport, Tolerance, compare, read_golden
from rnnedge.check.folder import case_steps, time_axes
from rnnedge.errors import RnnEdgeError
from rnnedge.manifest import GOLDEN, Manifest, is_time_axis
from rnnedge.tables import tolerance_of
from rnnedge.web.assets import BROWSER_PROVIDERS
from rnnedge.web.browser import Browser, Driver, decode, encode
from rnnedge.web.site import write_site

DRIVER_FILES = ("driver.mjs", "blank.html")


def provider_of(name: str) -> dict:
    spec = BROWSER_PROVIDERS.get(name)
    if spec is None:
        raise RnnEdgeError(f"unknown browser provider {name!r}: expected one of {', '.join(BROWSER_PROVIDERS)}")
    return spec


def streamable(manifest: Manifest, inputs: dict, chunk: int) -> bool:
    """As the Python check streams a case: every data input has the one time axis second, and the case
    is longer than a chunk and a multiple of the time stride."""
    data = manifest.data_inputs
    if not manifest.streaming or not data or any(len(s.shape) < 2 or not is_time_axis(s.shape[1]) for s in data):
        return False
    if len({s.shape[1] for s in data}) > 1:
        return False
    steps = inputs[data[0].name].shape[1]
    return steps > chunk and steps % manifest.time_stride == 0


def open_driver(browser: Browser, provider: str, model: str, path: str = "") -> Driver:
    """The driver on a page of the site (at `path` under the server's root) with `provider`."""
    spec = provider_of(provider)
    if provider == "webgpu":
        probe = Driver.__new__(Driver)
        probe.page = browser.open(path + "blank.html")
        adapter = probe.call("webgpuAdapter")
        if adapter is None:
            raise RnnEdgeError("webgpu: this Chromium offers no WebGPU adapter here (headless, no GPU for it); "
                               "use --provider wasm")
    driver = Driver(browser, provider, model, ort_module=f"./ort/{spec['module']}", path=path)
    driver.adapter = adapter if provider == "webgpu" else None
    return driver


def check_browser(folder: str | Path, provider: str = "wasm", *, variant: str = "fp32", atol: float | None = None,
                  rtol: float | None = None, verify: bool = True) -> ParityReport:
    """Replay golden.npz in headless Chromium on onnxruntime-web's `provider` (wasm or webgpu):
    every case whole, and a streaming export's cases fed 1 and 3 steps (times the stride) at a time
    through rnnedge.mjs's stream, the state carried in JavaScript."""
    folder = Path(folder)
    spec = provider_of(provider)
    manifest = Manifest.load(folder)
    if verify:
        manifest.verify(folder, [GOLDEN, manifest.variants.get(variant, {}).get("file", "model.onnx")])
    default_atol, default_rtol = tolerance_of(spec["tolerance_as"])
    tolerance = Tolerance(default_atol if atol is None else atol, default_rtol if rtol is None else rtol)
    own = manifest.variants.get(variant, {}).get("tolerance") if variant != "fp32" else None
    overrides = {k: tuple(v) for k, v in manifest.parity.get("overrides", {}).items()}
    if own and atol is None and rtol is None:  # a quantized variant is judged by its gate's limits
        tolerance, overrides = Tolerance(max(own.values()), 0.0), {k: (float(v), 0.0) for k, v in own.items()}
    providers = ("wasm", "webgpu") if provider == "webgpu" else ("wasm",)
    with tempfile.TemporaryDirectory(prefix="rnnedge-site-") as tmp:
        site = write_site(folder, Path(tmp) / "site", variant=variant, providers=providers, extra=DRIVER_FILES,
                          ops=False)
        with Browser(site, webgpu=provider == "webgpu") as browser:
            driver = open_driver(browser, provider, site_model(site))
            cases = replay(driver, folder, tolerance, overrides)
    adapter = f" on the adapter '{driver.adapter}'" if driver.adapter else ""
    return ParityReport(f"{spec['label']}{adapter}, Chromium", tuple(cases), tolerance, overrides)


def replay(driver: Driver, folder: str | Path, tolerance: Tolerance, overrides: dict) -> list[CaseParity]:
    """Every golden case through `driver`'s model, whole and (a streaming export) streamed in chunks."""
    manifest = Manifest.load(folder)
    where = time_axes(manifest)
    cases = []
    for name, inputs, expected in read_golden(folder):
        actual = decode(driver.call("runCase", encode(inputs)))
        steps = case_steps(manifest, inputs)
        cases.append(compare(name, expected, actual, tolerance, overrides, time_axes=where, steps=steps))
        for chunk in manifest.parity.get("stream_chunks", STREAM_CHUNKS):
            chunk *= manifest.time_stride
            if streamable(manifest, inputs, chunk):
                streamed = decode(driver.call("streamCase", encode(inputs), chunk))
                cases.append(compare(f"{name}, streamed in chunks of {chunk}", expected, streamed, tolerance,
                                     overrides, time_axes=where, steps=steps))
    return cases


def site_model(site: Path) -> str:
    return json.loads((site / "site.json").read_text())["model"]
