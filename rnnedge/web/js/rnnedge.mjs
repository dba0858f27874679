// rnnedge in the browser: load an export written by `rnnedge web`, run it, stream it.
//
//   import { load } from './rnnedge.mjs';
//   const model = await load('.');                        // manifest.json + model.onnx beside this file's page
//   const out = await model.run({ mel: { data: Float32Array, dims: [1, 100, 40] } });
//   const stream = model.stream(1);                        // the recurrent state stays in the stream
//   const hop = await stream.push({ mel: { data, dims: [1, 1, 40] } });
//
// A tensor is an onnxruntime-web Tensor or any { data: TypedArray, dims: number[] }; results are
// onnxruntime-web Tensors (`.data`, `.dims`). The state is carried as rnnedge's Python runtime
// carries it (rnnedge/runtime/stream.py): the manifest says which state output feeds which state
// input; a chunk has any number of steps (a multiple of the model's time stride), and a chunk without
// its time axis is one step, whose outputs come back without theirs.
import * as ortWasm from './ort/ort.wasm.min.mjs';

export class RnnEdgeError extends Error {
  constructor(message) {
    super(message);
    this.name = 'RnnEdgeError';
  }
}

const ARRAYS = {
  float32: Float32Array, float64: Float64Array, int64: BigInt64Array, int32: Int32Array,
  int8: Int8Array, uint8: Uint8Array, bool: Uint8Array, float16: Uint16Array,
};
const isTimeAxis = (axis) => typeof axis === 'string' && (axis === 'time' || axis.endsWith('_time'));
const fmt = (shape) => `[${shape.join(', ')}]`;
const size = (dims) => dims.reduce((a, b) => a * b, 1);

function kindOf(data) {
  if (data == null || !ArrayBuffer.isView(data)) return Array.isArray(data) ? 'a plain Array' : typeof data;
  for (const [name, C] of Object.entries(ARRAYS)) if (data.constructor === C) return name;
  return data.constructor.name;
}

// The typed array an input takes, converted from a near kind as the Python runtime casts (float64 ->
// float32, int32 -> int64); null where the kind is wrong.
function asKind(dtype, data) {
  const C = ARRAYS[dtype];
  if (data.constructor === C) return data;
  if (dtype === 'float32' && data instanceof Float64Array) return Float32Array.from(data);
  if (dtype === 'int64' && (data instanceof Int32Array || data instanceof Uint8Array || data instanceof Int8Array)) {
    return BigInt64Array.from(data, (v) => BigInt(v));
  }
  if (dtype === 'int32' && data instanceof BigInt64Array) return Int32Array.from(data, (v) => Number(v));
  return null;
}

class Model {
  constructor(ort, session, manifest, provider, file) {
    this.ort = ort;
    this.session = session;
    this.manifest = manifest;
    this.provider = provider;
    this.file = file;
    this.inputs = manifest.inputs;
    this.outputs = manifest.outputs;
    this.dataInputs = manifest.inputs.filter((s) => s.role !== 'state');
    this.stateInputs = manifest.inputs.filter((s) => s.role === 'state');
    this.dataOutputs = manifest.outputs.filter((s) => s.role !== 'state');
    this.stateOutputs = manifest.outputs.filter((s) => s.role === 'state');
    this.timeStride = manifest.time_stride || 1;
    this.bySpec = Object.fromEntries(manifest.inputs.map((s) => [s.name, s]));
    const fixed = (manifest.static || {}).time;
    // outputs with a time axis second: a one-step chunk gives them back without it
    this.timeOutputs = new Set(this.dataOutputs.filter((s) => s.shape.length > 1 && (isTimeAxis(s.shape[1])
      || (fixed && s.shape.length >= 3 && s.shape[1] === fixed))).map((s) => s.name));
  }

  // Check every given tensor (names, kinds, shapes; every problem collected) and make the feeds.
  // `axes` starts with what the caller fixed (a stream's batch). Throws one RnnEdgeError.
  prepare(given, axes = {}, oneStep = new Set(), allowState = true, requireData = true) {
    const problems = [];
    const feeds = {};
    for (const name of Object.keys(given)) {
      const spec = this.bySpec[name];
      if (!spec || (!allowState && spec.role === 'state')) {
        const names = (allowState ? this.inputs : this.dataInputs).map((s) => `'${s.name}'`).join(', ');
        problems.push(`unknown input '${name}' (this model takes ${names})`);
      }
    }
    for (const spec of this.inputs) {
      const value = given[spec.name];
      if (value === undefined) {
        if (spec.role !== 'state' && requireData) problems.push(`input '${spec.name}' is missing: expected ${spec.dtype} ${fmt(spec.shape)}`);
        continue;
      }
      const data = value && value.data;
      const dims = value && (value.dims || value.shape);
      const said = (d) => (oneStep.has(spec.name) ? `${fmt(d.slice(0, 1).concat(d.slice(2)))}, one step` : fmt(d));
      if (!ArrayBuffer.isView(data) || !Array.isArray(dims) && !ArrayBuffer.isView(dims)) {
        problems.push(`input '${spec.name}': expected a tensor { data: ${ARRAYS[spec.dtype].name}, dims: `
          + `${fmt(spec.shape)} }, got ${data === undefined ? typeof value : kindOf(data)}`);
        continue;
      }
      const typed = asKind(spec.dtype, data);
      const shape = Array.from(dims, Number);
      if (typed === null) {
        problems.push(`input '${spec.name}': expected ${spec.dtype} (${ARRAYS[spec.dtype].name}) ${fmt(spec.shape)}, `
          + `got ${kindOf(data)} ${said(shape)}`);
        continue;
      }
      if (shape.length !== spec.shape.length) {
        problems.push(`input '${spec.name}': expected ${spec.shape.length} dimensions ${fmt(spec.shape)}, got `
          + `${shape.length} (${said(shape)})`);
        continue;
      }
      let ok = true;
      spec.shape.forEach((want, i) => {
        const n = shape[i];
        if (typeof want === 'number') {
          if (n !== want) {
            problems.push(`input '${spec.name}': dimension ${i} must be ${want} (${fmt(spec.shape)}), got ${n} `
              + `(${said(shape)})`);
            ok = false;
          }
          return;
        }
        if (n === 0 && (want === 'batch' || isTimeAxis(want))) {
          problems.push(`input '${spec.name}': the '${want}' axis (dimension ${i}) is empty`);
          ok = false;
          return;
        }
        const seen = axes[want];
        if (seen === undefined) axes[want] = [n, spec.name];
        else if (seen[0] !== n) {
          problems.push(seen[1] === null
            ? `input '${spec.name}': batch is ${n} (${said(shape)}) but this stream was opened with batch=${seen[0]}`
            : `input '${spec.name}': '${want}' is ${n} but input '${seen[1]}' has '${want}' ${seen[0]}; the `
              + `'${want}' axis must agree across inputs`);
          ok = false;
        }
      });
      if (typed.length !== size(shape)) {
        problems.push(`input '${spec.name}': ${typed.length} values do not fill dims ${fmt(shape)} (${size(shape)})`);
        ok = false;
      }
      if (ok) feeds[spec.name] = new this.ort.Tensor(spec.dtype, typed, shape);
    }
    if (problems.length) throw new RnnEdgeError(problems.join('; '));
    return feeds;
  }

  zeroState(batch) {
    return Object.fromEntries(this.stateInputs.map((s) => {
      const shape = s.shape.map((d) => (d === 'batch' ? batch : d));
      return [s.name, new this.ort.Tensor(s.dtype, new ARRAYS[s.dtype](size(shape)), shape)];
    }));
  }

  // Every output (data, then states) for whole sequences; state inputs not given start at zero.
  async run(given) {
    const axes = {};
    const feeds = this.prepare(given, axes);
    const batch = axes.batch ? axes.batch[0] : 1;
    const zeros = this.zeroState(batch);
    for (const s of this.stateInputs) if (!(s.name in feeds)) feeds[s.name] = zeros[s.name];
    return this.session.run(feeds);
  }

  stream(batch = 1) {
    return new Stream(this, batch);
  }
}

class Stream {
  constructor(model, batch) {
    if (!Number.isInteger(batch) || batch < 1) throw new RnnEdgeError(`batch must be a whole number >= 1, got ${batch}`);
    if (!model.stateInputs.length) {
      throw new RnnEdgeError('this export has no state inputs, so it cannot stream; re-export it with '
        + '`rnnedge export --streaming`');
    }
    this.model = model;
    this.batch = batch;
    this.feedsFrom = {}; // state input -> the state output that feeds it
    for (const out of model.stateOutputs) this.feedsFrom[out.feeds] = out.name;
    const unfed = model.stateInputs.filter((s) => !(s.name in this.feedsFrom)).map((s) => s.name);
    if (unfed.length) throw new RnnEdgeError(`manifest.json: no state output feeds ${unfed.join(', ')}; re-export`);
    this.timed = model.dataInputs.filter((s) => s.shape.length > 1 && isTimeAxis(s.shape[1]));
    this.state = model.zeroState(batch);
  }

  // Feed the next chunk of every row; returns the data outputs for this chunk.
  async push(given) {
    const model = this.model;
    const oneStep = new Set();
    const chunk = { ...given };
    for (const spec of this.timed) {
      const t = chunk[spec.name];
      const dims = t && (t.dims || t.shape);
      if (dims && dims.length === spec.shape.length - 1) { // no time axis: one step
        chunk[spec.name] = { data: t.data, dims: [dims[0], 1, ...Array.from(dims).slice(1)] };
        oneStep.add(spec.name);
      }
    }
    const axes = { batch: [this.batch, null] };
    const feeds = model.prepare(chunk, axes, oneStep, false);
    const steps = axes.time ? axes.time[0] : null;
    if (model.timeStride > 1 && steps !== null && steps % model.timeStride) {
      throw new RnnEdgeError(`a chunk of ${steps} step(s): this model strides over time by ${model.timeStride} `
        + `(its convolutions or pooling), so each chunk must be a multiple of ${model.timeStride} steps; hold the `
        + 'rest back for the next chunk');
    }
    const results = await model.session.run({ ...feeds, ...this.state });
    const next = {};
    for (const s of model.stateInputs) next[s.name] = results[this.feedsFrom[s.name]];
    this.state = next; // only once the run succeeded: a failed push leaves the state as it was
    const single = this.timed.length > 0 && oneStep.size === this.timed.length;
    const out = {};
    for (const spec of model.dataOutputs) {
      const t = results[spec.name];
      out[spec.name] = single && model.timeOutputs.has(spec.name)
        ? new model.ort.Tensor(t.type, t.data, [t.dims[0], ...t.dims.slice(2)]) : t;
    }
    return out;
  }

  // Zero the state of every row, or of row `index` only.
  reset(index = null) {
    if (index === null) {
      this.state = this.model.zeroState(this.batch);
      return;
    }
    for (const t of Object.values(this.state)) {
      const row = t.data.length / this.batch;
      t.data.fill(0, index * row, (index + 1) * row);
    }
  }

  // Set the state (state input name -> tensor of [batch, ...]), as saved from `stream.state`.
  loadState(given) {
    const axes = { batch: [this.batch, null] };
    const problems = Object.keys(given).filter((n) => !this.model.stateInputs.some((s) => s.name === n));
    if (problems.length) throw new RnnEdgeError(`not state inputs: ${problems.join(', ')}`);
    const feeds = this.model.prepare(given, axes, new Set(), true, false);
    this.state = { ...this.state, ...feeds };
  }
}

// Load the export at `base` (a URL or path to the site's folder): manifest.json and the model file.
// options: ort (an onnxruntime-web module; the wasm build beside this file by default), provider
// ('wasm' or 'webgpu'), model (file name, 'model.onnx' by default), threads (WebAssembly threads, 1).
export async function load(base = '.', options = {}) {
  const ort = options.ort || ortWasm;
  const provider = options.provider || 'wasm';
  const root = new URL(base.endsWith('/') ? base : `${base}/`, globalThis.location ? globalThis.location.href : undefined);
  const reply = await fetch(new URL('manifest.json', root));
  if (!reply.ok) throw new RnnEdgeError(`${root}manifest.json: HTTP ${reply.status}; expected a site written by rnnedge web`);
  const manifest = await reply.json();
  const file = options.model || 'model.onnx';
  ort.env.wasm.numThreads = options.threads || 1;
  let session;
  try {
    session = await ort.InferenceSession.create(new URL(file, root).href, {
      executionProviders: [provider], graphOptimizationLevel: 'all',
    });
  } catch (e) {
    throw new RnnEdgeError(`onnxruntime-web could not load ${file} on ${provider}: ${String(e.message || e).split('\n')[0]}`);
  }
  return new Model(ort, session, manifest, provider, file);
}
