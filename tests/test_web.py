"""The browser: rnnedge's exports in headless Chromium on onnxruntime-web (rnnedge.mjs's run and
stream against Keras' golden outputs), the demo page, and the JavaScript errors for bad input.
One browser for the module, on a folder of sites written by `write_site`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from rnnedge.check import Tolerance
from rnnedge.check.golden import read_golden
from rnnedge.errors import RnnEdgeError
from rnnedge.tables import tolerance_of
from rnnedge.web import assets
from rnnedge.web.check import DRIVER_FILES, open_driver, replay
from rnnedge.web.site import write_site

REPO = Path(__file__).resolve().parent.parent
EXPORTED = REPO / "exported"
MODELS = ("kws-gru", "reviews-lstm", "seq2seq-lstm")  # conv frame state + GRU; int ids, masks; two time axes


def _missing() -> str | None:
    try:
        assets.chromium(), assets.ort_dist(), assets.node()
        import playwright  # noqa: F401
    except (RnnEdgeError, ImportError) as e:
        return str(e)
    return None


pytestmark = pytest.mark.skipif(_missing() is not None, reason=f"no browser set-up: {_missing()}")


@pytest.fixture(scope="module")
def sites(tmp_path_factory):
    root = tmp_path_factory.mktemp("sites")
    for name in MODELS:
        write_site(EXPORTED / name, root / name, extra=DRIVER_FILES, ops=False)
    return root


@pytest.fixture(scope="module")
def browser(sites):
    from rnnedge.web.browser import Browser

    with Browser(sites) as b:
        yield b


@pytest.mark.parametrize("name", MODELS)
def test_golden_cases_whole_and_streamed_match_keras_in_chromium(browser, name):
    driver = open_driver(browser, "wasm", "model.onnx", path=f"{name}/")
    cases = replay(driver, EXPORTED / name, Tolerance(*tolerance_of(assets.CPU)), {})
    streamed = [c for c in cases if "streamed" in c.case]
    manifest = json.loads((EXPORTED / name / "manifest.json").read_text())
    assert len(cases) >= len(read_golden(EXPORTED / name))
    assert bool(streamed) == manifest["streaming"]  # every streaming export is streamed, in chunks of 1 and 3
    failed = [f"{c.case}: {o.name} {o.max_abs:.2e}" for c in cases for o in c.outputs if not o]
    assert not failed, failed
    if streamed:  # the states a stream ends with are those of the whole sequence (golden.npz keeps no states)
        from rnnedge.web.browser import decode, encode

        _, inputs, _ = read_golden(EXPORTED / name)[1]
        whole = decode(driver.call("runCase", encode(inputs)))
        chunked = decode(driver.call("streamCase", encode(inputs), 3))
        states = [o["name"] for o in manifest["outputs"] if o["role"] == "state"]
        assert states and all(n in chunked for n in states)
        for n in states:
            np.testing.assert_allclose(chunked[n], whole[n], atol=1e-5, err_msg=n)


def _evaluate(page, body: str):
    """Run `body` (an async function of the module `m` and the loaded model) in the page."""
    return page.evaluate("async (body) => { const m = await import(new URL('rnnedge.mjs', location.href).href); "
                         "const model = await m.load('.'); "
                         "try { return {ok: await (new Function('m', 'model', `return (async () => { ${body} })()`))"
                         "(m, model)}; } catch (e) { return {name: e.name, error: e.message}; } }", body)


def test_one_step_chunks_stream_like_the_whole_sequence_and_drop_the_time_axis(browser):
    page = browser.open("kws-gru/blank.html")
    got = _evaluate(page, """
        const x = new Float32Array(5 * 40).map((_, i) => Math.sin(i));
        const whole = await model.run({ mel: { data: x, dims: [1, 5, 40] } });
        const s = model.stream(1);
        const hops = [];
        for (let t = 0; t < 5; t++) {
          hops.push(await s.push({ mel: { data: x.subarray(t * 40, (t + 1) * 40), dims: [1, 40] } }));
        }
        return { whole: Array.from(whole.keyword.data), dims: hops.map((h) => h.keyword.dims),
                 hops: hops.flatMap((h) => Array.from(h.keyword.data)) };""")
    assert "ok" in got, got
    assert got["ok"]["dims"] == [[1, 4]] * 5
    np.testing.assert_allclose(got["ok"]["hops"], got["ok"]["whole"], atol=1e-6)


@pytest.mark.parametrize("feed, words", [
    ("{ mel: { data: new Float32Array(7 * 41), dims: [1, 7, 41] } }", ["'mel'", "dimension 2 must be 40", "got 41"]),
    ("{ mel: { data: new Int32Array(7 * 40), dims: [1, 7, 40] } }", ["'mel'", "expected float32", "got int32"]),
    ("{ mel: { data: [1, 2], dims: [1, 7, 40] } }", ["'mel'", "Float32Array", "plain Array"]),
    ("{ mel: { data: new Float32Array(40), dims: [40] } }", ["'mel'", "expected 3 dimensions", "got 1"]),
    ("{ frames: { data: new Float32Array(40), dims: [1, 1, 40] } }", ["unknown input 'frames'", "'mel' is missing"]),
])
def test_bad_input_in_javascript_names_the_input_what_was_expected_and_what_came(browser, feed, words):
    got = _evaluate(browser.open("kws-gru/blank.html"), f"return await model.run({feed});")
    assert got.get("name") == "RnnEdgeError", got
    for word in words:
        assert word in got["error"], (word, got["error"])


def test_a_stream_refuses_a_chunk_out_of_step_with_the_models_stride(browser, sites, tmp_path):
    site = sites / "kws-gru-strided"
    if not site.exists():
        shutil.copytree(sites / "kws-gru", site)
        manifest = json.loads((site / "manifest.json").read_text())
        (site / "manifest.json").write_text(json.dumps({**manifest, "time_stride": 2}))
    got = _evaluate(browser.open("kws-gru-strided/blank.html"), """
        const s = model.stream(1);
        await s.push({ mel: { data: new Float32Array(4 * 40), dims: [1, 4, 40] } });
        return await s.push({ mel: { data: new Float32Array(3 * 40), dims: [1, 3, 40] } });""")
    assert got.get("name") == "RnnEdgeError" and "strides over time by 2" in got["error"], got
    batch = _evaluate(browser.open("kws-gru/blank.html"), """
        return await model.stream(2).push({ mel: { data: new Float32Array(40), dims: [1, 1, 40] } });""")
    assert "opened with batch=2" in batch.get("error", ""), batch


def test_the_demo_page_runs_the_golden_cases_and_streams_hop_by_hop(browser):
    page = browser.open("kws-gru/index.html", wait_for="body[data-done]")
    assert page.evaluate("document.body.dataset.done") == "ok", page.inner_text("#status")
    summary = json.loads(page.inner_text("#summary"))
    golden = read_golden(EXPORTED / "kws-gru")
    assert [c["case"] for c in summary["cases"]] == [name for name, _, _ in golden]
    assert all(d <= 1e-5 for c in summary["cases"] for d in c["outputs"].values()), summary
    longest = max(x["mel"].shape[1] for _, x, _ in golden if x["mel"].shape[0] == 1)
    assert summary["stream"]["hops"] == longest and summary["stream"]["mean_ms"] > 0
    assert "ms per hop" in page.inner_text("#hops")


def test_the_readmes_javascript_runs_as_written_in_chromium(browser):
    text = (REPO / "docs" / "browser.md").read_text()  # the JavaScript example of the docs
    blocks = [b for b in text.split("```js\n")[1:]]
    assert len(blocks) == 1
    body = blocks[0].split("```")[0].replace("import { load } from './rnnedge.mjs';", "")
    got = browser.open("kws-gru/blank.html").evaluate(
        "async (body) => { const m = await import(new URL('rnnedge.mjs', location.href).href); "
        "try { return {ok: await (new Function('load', `return (async () => { ${body} })()`))(m.load)}; } "
        "catch (e) { return {error: e.message}; } }", body + "\nreturn [Array.from(keyword.dims), stream.batch];")
    assert got == {"ok": [[1, 100, 4], 1]}, got
