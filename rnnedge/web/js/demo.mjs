// The demo page: runs the golden cases (inputs and Keras' outputs that `rnnedge web` wrote under
// golden/), shows the outputs, their largest difference from Keras and the time each took; a
// streaming export also streams its first case hop by hop, with the cost per hop.
import { load } from './rnnedge.mjs';

const ARRAYS = { float32: Float32Array, float64: Float64Array, int64: BigInt64Array, int32: Int32Array,
  int8: Int8Array, uint8: Uint8Array, bool: Uint8Array };
const $ = (id) => document.getElementById(id);

async function array(entry) {
  const bytes = await (await fetch(entry.file)).arrayBuffer();
  return { data: new ARRAYS[entry.dtype](bytes), dims: entry.dims };
}

function maxDiff(got, want) {
  let worst = 0;
  for (let i = 0; i < want.data.length; i++) worst = Math.max(worst, Math.abs(Number(got.data[i]) - Number(want.data[i])));
  return got.data.length === want.data.length ? worst : Infinity;
}

function row(table, cells, cls = '') {
  const tr = document.createElement('tr');
  if (cls) tr.className = cls;
  for (const c of cells) {
    const td = document.createElement('td');
    td.textContent = c;
    tr.appendChild(td);
  }
  $(table).querySelector('tbody').appendChild(tr);
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

async function main() {
  const site = await (await fetch('site.json')).json();
  $('title').textContent = `${site.name} in the browser (${site.variant})`;
  const t0 = performance.now();
  const model = await load('.', { model: site.model });
  const summary = { name: site.name, variant: site.variant, load_ms: performance.now() - t0, cases: [] };
  $('status').textContent = `loaded ${site.model} on onnxruntime-web (${model.provider}) in ${summary.load_ms.toFixed(1)} ms`;
  for (const c of site.golden) {
    const inputs = {};
    for (const [name, e] of Object.entries(c.in)) inputs[name] = await array(e);
    let out = await model.run(inputs); // warm-up
    let n = 0;
    const s = performance.now(); // the page's clock ticks in 0.1 ms: time runs over at least 50 ms
    while (performance.now() - s < 50 || n < 3) {
      out = await model.run(inputs);
      n += 1;
    }
    const ms = (performance.now() - s) / n;
    const result = { case: c.name, ms, outputs: {} };
    for (const [name, e] of Object.entries(c.out)) {
      const diff = maxDiff(out[name], await array(e));
      result.outputs[name] = diff;
      const first = Array.from(out[name].data.slice(0, 4), (v) => Number(v).toFixed(4)).join(', ');
      row('cases', [c.name, name, `[${out[name].dims.join(', ')}]`, first, diff.toExponential(2), ms.toFixed(2)],
        diff <= 1e-4 ? 'ok' : 'fail');
    }
    summary.cases.push(result);
  }
  if (site.streaming) {
    $('streaming').hidden = false;
    const first = (g) => g.in[model.dataInputs[0].name].dims;
    const ones = site.golden.filter((g) => first(g)[0] === 1); // the longest case of one row
    const c = ones.length ? ones.reduce((a, g) => (first(g)[1] > first(a)[1] ? g : a)) : site.golden[0];
    const x = await array(c.in[model.dataInputs[0].name]);
    const [batch, steps] = x.dims;
    const row1 = x.data.length / (batch * steps);
    const stream = model.stream(batch);
    const hops = [];
    let last;
    for (let t = 0; t + site.hop <= steps; t += site.hop) {
      const chunk = new x.data.constructor(batch * site.hop * row1);
      for (let b = 0; b < batch; b++) {
        chunk.set(x.data.subarray((b * steps + t) * row1, (b * steps + t + site.hop) * row1), b * site.hop * row1);
      }
      const s = performance.now();
      last = await stream.push({ [model.dataInputs[0].name]: { data: chunk, dims: [batch, site.hop, ...x.dims.slice(2)] } });
      hops.push(performance.now() - s);
      if (hops.length <= 5 || t + 2 * site.hop > steps) {
        const [name, t1] = Object.entries(last)[0];
        row('hop-table', [hops.length, `${name}: ${Array.from(t1.data.slice(0, 4), (v) => Number(v).toFixed(3)).join(', ')}`,
          hops[hops.length - 1].toFixed(3)]);
      }
    }
    const mean = hops.reduce((a, b) => a + b, 0) / hops.length;
    summary.stream = { case: c.name, hop: site.hop, hops: hops.length, median_ms: median(hops), mean_ms: mean };
    $('hops').textContent = `${c.name}: ${hops.length} hops of ${site.hop} step(s), ${mean.toFixed(3)} ms per hop `
      + `(mean; median ${median(hops).toFixed(1)} ms on the page's 0.1 ms clock)`;
  }
  $('summary').textContent = JSON.stringify(summary, null, 1);
  document.body.dataset.done = 'ok';
}

main().catch((e) => {
  $('status').textContent = `error: ${e.message}`;
  $('status').className = 'fail';
  document.body.dataset.done = 'error';
});
