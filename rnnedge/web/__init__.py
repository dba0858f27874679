"""The browser: takes an export folder, gives a static site (the model, onnxruntime-web, an ES module
with load/run/stream, a demo page), parity in headless Chromium, and timings against TensorFlow.js.

Steps: `assets` (where Chromium, Node and the npm packages are), `site` (`write_site`), `browser`
(a page in headless Chromium), `check` (`check_browser`), `tfjs` (the TensorFlow.js baseline).
"""

from rnnedge.web.assets import BROWSER_PROVIDERS
from rnnedge.web.check import check_browser
from rnnedge.web.site import serve_site, write_site

__all__ = ["BROWSER_PROVIDERS", "check_browser", "serve_site", "write_site"]
