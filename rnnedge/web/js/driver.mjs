// What `rnnedge check/bench --provider wasm|webgpu` call in the page (through the browser driver):
// golden cases in, outputs out, as base64 of the raw little-endian bytes.
import { load } from './rnnedge.mjs';

const ARRAYS = { float32: Float32Array, float64: Float64Array, int64: BigInt64Array, int32: Int32Array,
  int8: Int8Array, uint8: Uint8Array, bool: Uint8Array };

function fromB64(b64, dtype) {
  const bin = atob(b64);
  const bytes = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
  return new ARRAYS[dtype](bytes.buffer);
}

function toB64(data) {
  const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  let s = '';
  for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  return btoa(s);
}

export const decode = (arrays) => Object.fromEntries(Object.entries(arrays).map(
  ([name, a]) => [name, { data: fromB64(a.b64, a.dtype), dims: a.dims }]));
const encode = (tensors) => Object.fromEntries(Object.entries(tensors).map(
  ([name, t]) => [name, { b64: toB64(t.data), dtype: t.type, dims: Array.from(t.dims) }]));

let model = null;
export async function open(options) {
  const ort = options.ortModule ? await import(options.ortModule) : undefined;
  model = await load('.', { ...options, ort });
  return { provider: model.provider, inputs: model.session.inputNames };
}

export async function runCase(arrays) {
  return encode(await model.run(decode(arrays)));
}

// Slice [batch, time, ...] along time.
function steps(t, start, stop) {
  const [b, n] = t.dims;
  const row = t.data.length / (b * n);
  const m = Math.min(stop, n) - start;
  const out = new t.data.constructor(b * m * row);
  for (let i = 0; i < b; i++) out.set(t.data.subarray((i * n + start) * row, (i * n + start + m) * row), i * m * row);
  return { data: out, dims: [b, m, ...t.dims.slice(2)] };
}

function concatTime(parts) {
  const [b] = parts[0].dims;
  const total = parts.reduce((a, p) => a + p.dims[1], 0);
  const row = parts[0].data.length / (b * parts[0].dims[1]);
  const out = new parts[0].data.constructor(b * total * row);
  let at = 0;
  for (const p of parts) {
    const n = p.dims[1];
    for (let i = 0; i < b; i++) out.set(p.data.subarray(i * n * row, (i + 1) * n * row), (i * total + at) * row);
    at += n;
  }
  return { data: out, dims: [b, total, ...parts[0].dims.slice(2)], type: parts[0].type };
}

// Stream a golden case `chunk` steps at a time from the state it gives; the data outputs (those with a
// time axis concatenated) and the final states, by state output name, as rnnedge's Python check does.
export async function streamCase(arrays, chunk) {
  const given = decode(arrays);
  const timed = model.dataInputs.filter((s) => s.shape.length > 1 && typeof s.shape[1] === 'string');
  const first = given[timed[0].name];
  const stream = model.stream(first.dims[0]);
  const state = Object.fromEntries(model.stateInputs.filter((s) => s.name in given).map((s) => [s.name, given[s.name]]));
  if (Object.keys(state).length) stream.loadState(state);
  const pieces = {};
  for (let start = 0; start < Math.max(first.dims[1], 1); start += chunk) {
    const part = {};
    for (const s of model.dataInputs) part[s.name] = timed.includes(s) ? steps(given[s.name], start, start + chunk) : given[s.name];
    const out = await stream.push(part);
    for (const [name, t] of Object.entries(out)) (pieces[name] = pieces[name] || []).push(t);
  }
  const merged = {};
  for (const [name, list] of Object.entries(pieces)) {
    merged[name] = model.timeOutputs.has(name) ? concatTime(list) : list[list.length - 1];
  }
  for (const o of model.stateOutputs) merged[o.name] = stream.state[o.feeds];
  return encode(merged);
}

// Median and p90 milliseconds of `runs` calls of model.run (after `warmup`), and of stream pushes of
// `hop` steps against one bare session.run of the same feeds.
export async function time(arrays, runs, warmup) {
  const feeds = decode(arrays);
  const times = [];
  for (let i = 0; i < warmup + runs; i++) {
    const t0 = performance.now();
    await model.run(feeds);
    if (i >= warmup) times.push(performance.now() - t0);
  }
  times.sort((a, b) => a - b);
  return { p50: times[Math.floor(runs / 2)], p90: times[Math.floor(runs * 0.9)] };
}

// Whether this browser offers WebGPU here (an adapter), and which.
export async function webgpuAdapter() {
  if (!navigator.gpu) return null;
  const adapter = await navigator.gpu.requestAdapter();
  if (!adapter) return null;
  const info = adapter.info || {};
  return `${info.vendor || '?'} ${info.architecture || ''} ${info.description || ''}`.trim();
}

// -- timing (rnnedge bench --provider wasm): one block of `n` calls of a candidate, milliseconds each --

let tfModel = null;
const tfBackends = [];

// TensorFlow.js (tf.min.js and its wasm backend, beside the page in tfjs/) and the converted model.
export async function tfjsOpen(backends) {
  await import('./tfjs/tf.min.js');
  await import('./tfjs/tf-backend-wasm.min.js');
  const tf = globalThis.tf;
  tf.wasm.setWasmPaths(new URL('tfjs/', location.href).href);
  if (tf.wasm.setThreadsCount) tf.wasm.setThreadsCount(1);
  const ready = {};
  for (const b of backends) {
    try {
      if (!(await tf.setBackend(b))) throw new Error(`backend ${b} did not start`);
      await tf.ready();
      tfModel = tfModel || await tf.loadLayersModel('tfjs/model.json');
      tfBackends.push(b);
      ready[b] = null;
    } catch (e) {
      ready[b] = String(e.message || e).split('\n')[0];
    }
  }
  return ready;
}

async function tfPredict(x) {
  const y = tfModel.predict(x);
  const data = await y.data();
  const dims = y.shape;
  y.dispose();
  return { data, dims, type: 'float32' };
}

// Call `candidate` (rnnedge, or tfjs-<backend>) n times on the data inputs; the times and the last output.
export async function timeBlock(candidate, arrays, n) {
  const feeds = decode(arrays);
  const times = [];
  let out;
  if (candidate === 'rnnedge') {
    for (let i = 0; i < n; i++) {
      const t0 = performance.now();
      const r = await model.run(feeds);
      times.push(performance.now() - t0);
      out = r[model.dataOutputs[0].name];
    }
  } else {
    const tf = globalThis.tf;
    const backend = candidate.replace('tfjs-', '');
    if (tf.getBackend() !== backend) await tf.setBackend(backend);
    const first = Object.values(feeds)[0];
    const x = tf.tensor(first.data, first.dims, 'float32');
    for (let i = 0; i < n; i++) {
      const t0 = performance.now();
      out = await tfPredict(x);
      times.push(performance.now() - t0);
    }
    x.dispose();
  }
  return { times, output: encode({ y: out }).y };
}

// Streaming: n pushes of a hop, against n bare session.run calls of the same graph and feeds (the
// state tensors fed back by hand): what rnnedge.mjs's stream adds to a run.
let pushStream = null;
export async function timeHops(arrays, n) {
  const feeds = decode(arrays);
  pushStream = pushStream || model.stream(1);
  const push = [];
  const bare = [];
  const prepared = model.prepare(feeds, {});
  let state = model.zeroState(1);
  for (let i = 0; i < n; i++) {
    let t0 = performance.now();
    await pushStream.push(feeds);
    push.push(performance.now() - t0);
    t0 = performance.now();
    const r = await model.session.run({ ...prepared, ...state });
    bare.push(performance.now() - t0);
    state = Object.fromEntries(model.stateOutputs.map((o) => [o.feeds, r[o.name]]));
  }
  return { push, bare, isolated: globalThis.crossOriginIsolated === true };
}
