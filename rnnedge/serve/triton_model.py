"""Triton python-backend model serving an rnnedge export folder with rnnedge's runtime.

`rnnedge triton DIR --backend python` copies this file as REPO/<name>/1/model.py and the export
folder as REPO/<name>/1/export/. Not imported by rnnedge itself: it runs inside Triton's python
backend stub, where `triton_python_backend_utils` exists.

Stateless exports: the requests of one execute() call whose inputs have the same shapes (rows
aside) run as one batch. Streaming exports: the config's sequence batcher sends START / END /
READY / CORRID control inputs with each request; each sequence's state is kept here by
correlation id (zeros at START, dropped at END or after max_sequence_idle_microseconds without
a request), and the requests of different sequences in one call that have the same chunk shape
run as one batch with their states stacked.
"""

import ctypes
import json
import os
import site
import sys
import threading
import time
from pathlib import Path


def _apply_pythonpath():
    """The stub's interpreter does not read PYTHONPATH: add its folders (their .pth files too, for
    editable installs) ahead of the stub's own sys.path, as Python would."""
    before = list(sys.path)
    for entry in os.environ.get("PYTHONPATH", "").split(os.pathsep):
        if entry and entry not in sys.path:
            site.addsitedir(entry)
    added = [p for p in sys.path if p not in before]
    sys.path[:] = added + before


_apply_pythonpath()

try:
    import numpy as np

    from rnnedge.errors import RnnEdgeError
    from rnnedge.runtime import load as runtime_load
except ImportError as e:
    raise ImportError(f"rnnedge's Triton model needs numpy, onnxruntime and rnnedge, but {e.name} cannot be imported "
                      f"by the python backend stub (Python {sys.version.split()[0]} at {sys.prefix}): start the "
                      "server with `rnnedge serve`, or put their site-packages on PYTHONPATH") from None

import triton_python_backend_utils as pb_utils  # noqa: E402 - provided by the stub

CONTROLS = ("START", "END", "READY", "CORRID")


# Tensors cross the stub through DLPack: the stub's `as_numpy()` and `Tensor(name, array)` read
# numpy's array descriptor at its numpy-1 layout, and with numpy 2 give wrong values (every
# element the first one) and empty outputs; DLPack is right with numpy 1.22+ and 2.
# The stub marks a capsule it consumed "used_dlpack", not the protocol's "used_dltensor", so
# numpy's capsule destructor logs a ValueError for every output: give it the standard name.
_GET_NAME = ctypes.pythonapi.PyCapsule_GetName
_GET_NAME.argtypes, _GET_NAME.restype = [ctypes.py_object], ctypes.c_char_p
_SET_NAME = ctypes.pythonapi.PyCapsule_SetName
_SET_NAME.argtypes, _SET_NAME.restype = [ctypes.py_object, ctypes.c_void_p], ctypes.c_int
_USED = ctypes.create_string_buffer(b"used_dltensor")  # lives as long as the module: capsules keep the pointer


def _array(tensor):
    return np.from_dlpack(tensor)


def _tensor(name, array):
    capsule = np.ascontiguousarray(array).__dlpack__()
    tensor = pb_utils.Tensor.from_dlpack(name, capsule)
    if _GET_NAME(capsule) == b"used_dlpack":
        _SET_NAME(capsule, ctypes.addressof(_USED))
    return tensor
IDLE_MARGIN_S = 1.0  # expire a little after Triton does, so no state is dropped that Triton still serves


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
        threads = int(params.get("intra_op_thread_count") or 1)
        folder = Path(__file__).resolve().parent / params.get("rnnedge_export", "export")
        # the provider by name (`rnnedge triton --backend python --provider P`), registered by the runtime
        provider = params.get("rnnedge_provider") or ("cuda" if args["model_instance_kind"] == "GPU" else "cpu")
        precision = params.get("rnnedge_precision") or None
        if args["model_instance_kind"] == "GPU":
            self.model = runtime_load(folder, provider, threads=threads, precision=precision,
                                      provider_options={"device_id": int(args["model_instance_device_id"])})
        else:
            self.model = runtime_load(folder, provider, threads=threads, precision=precision)
        self.model.nonfinite_advice = "send finite values only (the server refuses NaN and infinity)"
        manifest = self.model.manifest
        self.data_in = [s.name for s in manifest.data_inputs]
        self.data_out = [s.name for s in manifest.data_outputs]
        self.state_in = [s for s in manifest.state_inputs]
        self.state_out = {o.name: o.feeds for o in manifest.state_outputs}  # output -> the input it feeds
        self.name = args["model_name"]
        seq = config.get("sequence_batching")
        self.streaming = seq is not None
        self.sequences = {}  # correlation id -> [state input name -> array [rows, ...], last used (monotonic)]
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.idle = int(seq.get("max_sequence_idle_microseconds") or 0) / 1e6 if seq else 0.0
        self.sweeper = None
        if self.streaming and self.idle > 0:
            self.sweeper = threading.Thread(target=self._sweep, name="rnnedge-idle", daemon=True)
            self.sweeper.start()

    # -- idle sequences -------------------------------------------------------------------------

    def _expire(self, now):
        limit = self.idle + IDLE_MARGIN_S
        with self.lock:
            gone = [k for k, (_, last) in self.sequences.items() if now - last > limit]
            for k in gone:
                del self.sequences[k]
        for k in gone:
            pb_utils.Logger.log_info(f"rnnedge: model '{self.name}': sequence {k} released after more than "
                                     f"{self.idle:g} s idle without END")

    def _sweep(self):
        interval = min(max(self.idle / 4, 0.05), 5.0)
        while not self.stop.wait(interval):
            self._expire(time.monotonic())

    def finalize(self):
        self.stop.set()
        if self.sweeper is not None:
            self.sweeper.join(timeout=10)
        with self.lock:
            self.sequences.clear()

    # -- requests -------------------------------------------------------------------------------

    def _data(self, request):
        return {n: _array(pb_utils.get_input_tensor_by_name(request, n)) for n in self.data_in}

    def _response(self, outputs, rows=slice(None)):
        return pb_utils.InferenceResponse([_tensor(n, outputs[n][rows]) for n in self.data_out])

    @staticmethod
    def _error(message):
        return pb_utils.InferenceResponse(error=pb_utils.TritonError(message))

    def execute(self, requests):
        responses = [None] * len(requests)
        if self.streaming:
            self._execute_sequences(requests, responses)
        else:
            items = []
            for i, request in enumerate(requests):
                items.append((i, self._data(request), None))
            self._run_groups(items, responses, None)
        return responses

    def _run_groups(self, items, responses, after):
        """Run items (index, data, state or None) in batches of equal shapes; `after(index, outputs, rows)`
        takes each item's rows of the outputs (streaming) before its response is made."""
        groups = {}
        for item in items:
            key = tuple((a.shape[1:], a.dtype.str) for a in item[1].values())
            groups.setdefault(key, []).append(item)
        for group in groups.values():
            try:
                self._run_batch(group, responses, after)
            except RnnEdgeError as e:
                if len(group) == 1:
                    responses[group[0][0]] = self._error(str(e))
                    continue
                for item in group:  # whose input was wrong: each on its own
                    try:
                        self._run_batch([item], responses, after)
                    except RnnEdgeError as e1:
                        responses[item[0]] = self._error(str(e1))

    def _run_batch(self, group, responses, after):
        sizes = [len(next(iter(data.values()))) for _, data, _ in group]
        feeds = {n: np.concatenate([data[n] for _, data, _ in group]) if len(group) > 1 else group[0][1][n]
                 for n in self.data_in}
        if group[0][2] is not None:
            for s in self.state_in:
                feeds[s.name] = np.concatenate([state[s.name] for _, _, state in group])
        outputs = self.model.run(**feeds)
        start = 0
        for (index, _, _), rows in zip(group, sizes):
            part = slice(start, start + rows)
            start += rows
            if after is not None:
                after(index, outputs, part)
            responses[index] = self._response(outputs, part)

    def _execute_sequences(self, requests, responses):
        now = time.monotonic()
        self._expire(now)
        pending = []
        for i, request in enumerate(requests):
            control = {}
            for name in CONTROLS:
                tensor = pb_utils.get_input_tensor_by_name(request, name)
                control[name] = int(_array(tensor).reshape(-1)[0]) if tensor is not None else 0
            if not control["READY"]:
                responses[i] = pb_utils.InferenceResponse([])  # a slot without a request: Triton drops it
                continue
            pending.append((i, control, self._data(request)))
        while pending:  # one request per sequence per round, in arrival order
            seen, now_round, later = set(), [], []
            for entry in pending:
                (later if entry[1]["CORRID"] in seen else now_round).append(entry)
                seen.add(entry[1]["CORRID"])
            self._round(now_round, responses, now)
            pending = later

    def _round(self, entries, responses, now):
        items, ends = [], {}
        for index, control, data in entries:
            corrid = control["CORRID"]
            rows = len(next(iter(data.values())))
            if control["START"]:
                state = {s.name: np.zeros((rows, *s.shape[1:]), s.dtype) for s in self.state_in}
            else:
                with self.lock:
                    held = self.sequences.get(corrid)
                if held is None:
                    responses[index] = self._error(
                        f"sequence {corrid} is not open on model '{self.name}': its first request must set "
                        f"sequence_start (START), and a sequence is released at its end or after {self.idle:g} s idle")
                    continue
                state = held[0]
                held_rows = len(next(iter(state.values())))
                if held_rows != rows:
                    responses[index] = self._error(
                        f"sequence {corrid} was started with {held_rows} row(s) but this request has {rows}: "
                        "every request of a sequence must have the same batch size")
                    continue
            items.append((index, data, state))
            ends[index] = (corrid, bool(control["END"]))

        def keep(index, outputs, rows):
            corrid, end = ends[index]
            with self.lock:
                if end:
                    self.sequences.pop(corrid, None)
                else:
                    state = {feeds: np.array(outputs[name][rows]) for name, feeds in self.state_out.items()}
                    self.sequences[corrid] = [state, now]

        self._run_groups(items, responses, keep)
