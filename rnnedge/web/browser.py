"""A page in headless Chromium (the system's package, driven by playwright) on a site served from
127.0.0.1: `Page.call(function, *args)` calls a function the site's driver.mjs exports."""

from __future__ import annotations

import base64
import shutil
import tempfile
from pathlib import Path

import numpy as np

from rnnedge.errors import RnnEdgeError, first_line
from rnnedge.web.assets import CHROMIUM_FLAGS, chromium
from rnnedge.web.site import serve_site


def encode(arrays: dict) -> dict:
    """name -> array, as the driver takes them: base64 of the little-endian bytes, dtype, dims."""
    out = {}
    for name, a in arrays.items():
        a = np.ascontiguousarray(a)
        dtype = "bool" if a.dtype == bool else str(a.dtype)
        out[name] = {"b64": base64.b64encode(a.astype(a.dtype.newbyteorder("<")).tobytes()).decode(), "dtype": dtype,
                     "dims": list(a.shape)}
    return out


def decode(arrays: dict) -> dict[str, np.ndarray]:
    types = {"float32": np.float32, "float64": np.float64, "int64": np.int64, "int32": np.int32, "bool": np.bool_,
             "uint8": np.uint8, "int8": np.int8, "float16": np.float16}
    return {name: np.frombuffer(base64.b64decode(a["b64"]), types[a["dtype"]]).reshape(a["dims"])
            for name, a in arrays.items()}


class Browser:
    """Headless Chromium on `site` (one launch; pages opened with `open`). A context manager. `site`
    may also be a folder of sites (one per subfolder), whose pages are opened as "NAME/index.html"."""

    def __init__(self, site: str | Path, webgpu: bool = False):
        self.site = Path(site)
        self.webgpu = webgpu
        self._server = self._pw = self._browser = None
        self._profile = None

    def __enter__(self) -> Browser:
        executable = chromium()
        try:
            from playwright.sync_api import sync_playwright
        except ImportError:
            raise RnnEdgeError("the Python package playwright is not installed: `pip install 'rnnedge[web]'` "
                               "(`make install` does it); it drives the system's Chromium") from None
        self._server = serve_site(self.site, check=False)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/"
        self._profile = tempfile.mkdtemp(prefix="rnnedge-chromium-")
        flags = [*CHROMIUM_FLAGS, *(["--enable-unsafe-webgpu"] if self.webgpu else ["--disable-gpu"])]
        try:
            self._pw = sync_playwright().start()
            self._browser = self._pw.chromium.launch_persistent_context(
                self._profile, executable_path=executable, headless=True, args=flags)
        except Exception as e:  # playwright's own errors: the browser did not start
            self.__exit__(None, None, None)
            raise RnnEdgeError(f"Chromium ({executable}) did not start: {first_line(e)}") from None
        return self

    def open(self, path: str = "index.html", wait_for: str | None = None, timeout_s: float = 120):
        """A new page at `path` of the site; `wait_for`: a selector to wait for."""
        page = self._browser.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(self.url + path)
        if wait_for:
            page.wait_for_selector(wait_for, state="attached", timeout=timeout_s * 1000)
        page.errors = errors
        return page

    def __exit__(self, *exc):
        for close in (self._browser and self._browser.close, self._pw and self._pw.stop,
                      self._server and self._server.shutdown):
            if close:
                try:
                    close()
                except Exception:  # noqa: BLE001 (closing what already went away)
                    pass
        if self._profile:
            shutil.rmtree(self._profile, ignore_errors=True)


class Driver:
    """The site's driver.mjs in a page: open(options), runCase(arrays), streamCase(arrays, chunk), time(...)."""

    def __init__(self, browser: Browser, provider: str, model: str, ort_module: str | None = None, threads: int = 1,
                 path: str = ""):
        self.page = browser.open(path + "blank.html")
        info = self.call("open", {"provider": provider, "model": model, "ortModule": ort_module, "threads": threads})
        self.provider = info["provider"]

    def call(self, function: str, *args):
        script = ("async ([f, args]) => { const d = await import(new URL('driver.mjs', location.href).href); "
                  "try { return {ok: await d[f](...args)}; } catch (e) { return {error: String(e.message || e)}; } }")
        reply = self.page.evaluate(script, [function, list(args)])
        if "error" in reply:
            raise RnnEdgeError(f"in the browser: {reply['error']}")
        return reply["ok"]
