// node opcheck.mjs ORT_MODULE MODEL: load MODEL in onnxruntime-web's WebAssembly build (exit 1 with
// its error where it cannot: an op it lacks, a file it cannot read).
import { readFileSync } from 'node:fs';
import { pathToFileURL } from 'node:url';

const ort = await import(pathToFileURL(process.argv[2]).href);
ort.env.wasm.numThreads = 1;
try {
  await ort.InferenceSession.create(readFileSync(process.argv[3]), { executionProviders: ['wasm'] });
} catch (e) {
  console.log(String(e.message || e));
  process.exit(1);
}
