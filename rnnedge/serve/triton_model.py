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

Exactly once, in order: a request may carry its chunk number as the request parameter
`rnnedge_chunk` (0 with START, then 1, 2, ...; rnnedge's client always sends it). The next chunk
is applied; the chunk just applied, sent again with the same data (a client retrying after a
timeout), is answered from the outputs kept for it without touching the state; anything else
(an older chunk, other data under the same number, a chunk ahead of the next) is refused in one
line. Bad requests (values, shapes, numbers, sequences not open) are INVALID_ARG (gRPC
INVALID_ARGUMENT, HTTP 400); the server's own failures stay INTERNAL (500).
"""

import ctypes
import hashlib
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
CHUNK = "rnnedge_chunk"  # the request parameter carrying the chunk's number in its sequence


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


class BadRequest(Exception):
    """A request this model refuses (answered INVALID_ARG), before anything is run or kept."""


class Sequence:
    """One open sequence: its state, when it was last used, the number of the next chunk, and the
    last chunk applied (number, digest of its data, its outputs) to answer a retry of it."""

    __slots__ = ("state", "last", "next", "done")

    def __init__(self, state, last):
        self.state, self.last, self.next, self.done = state, last, 0, None


def _digest(data):
    h = hashlib.blake2b(digest_size=16)
    for name, a in data.items():
        h.update(f"{name}{a.dtype.str}{a.shape}".encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.digest()


def _chunk_number(request):
    """The request's `rnnedge_chunk` parameter (None if absent); BadRequest if it is not a whole number >= 0."""
    try:
        text = request.parameters()
    except AttributeError:  # a python backend without request parameters
        return None
    value = json.loads(text).get(CHUNK) if text else None
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise BadRequest(f"request parameter {CHUNK}={value!r}: expected the chunk's number in its sequence "
                         "(0 with START, then 1, 2, ...)")
    return value


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
        self.slots = int((seq or {}).get("oldest", {}).get("max_candidate_sequences") or 0)
        self.full = False  # all slots taken (said once in the log until one frees)
        self.refused = {}  # correlation id -> (why its START request was refused, when): the next request says so
        self.sweeper = None
        if self.streaming and self.idle > 0:
            self.sweeper = threading.Thread(target=self._sweep, name="rnnedge-idle", daemon=True)
            self.sweeper.start()

    # -- idle sequences -------------------------------------------------------------------------

    def _expire(self, now):
        limit = self.idle + IDLE_MARGIN_S
        with self.lock:
            gone = [k for k, held in self.sequences.items() if now - held.last > limit]
            for k in gone:
                del self.sequences[k]
            for k in [k for k, (_, when) in self.refused.items() if now - when > limit]:
                del self.refused[k]
        for k in gone:
            pb_utils.Logger.log_warn(f"rnnedge: model '{self.name}': sequence {k} released after more than "
                                     f"{self.idle:g} s idle without END")
        self._say_slots()

    def _say_slots(self):
        """One log line when every sequence slot of this instance is taken (new sequences then wait for one
        to end or be released, and their clients see only timeouts), and one when a slot frees again."""
        if not self.slots:
            return
        with self.lock:
            open_now = len(self.sequences)
            full = open_now >= self.slots
            changed, self.full = full != self.full, full
        if changed and full:
            pb_utils.Logger.log_warn(
                f"rnnedge: model '{self.name}': all {self.slots} sequence slots are taken: new sequences wait until "
                f"one ends or is released after {self.idle:g} s idle (raise `rnnedge triton --max-sequences`, "
                "or have clients send END)")
        elif changed:
            pb_utils.Logger.log_info(f"rnnedge: model '{self.name}': a sequence slot is free again "
                                     f"({open_now} of {self.slots} open)")

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
    def _error(message, code=None):
        """An error response: INVALID_ARG (the client's request) unless `code` says otherwise."""
        code = pb_utils.TritonError.INVALID_ARG if code is None else code
        return pb_utils.InferenceResponse(error=pb_utils.TritonError(message, code))

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

    def _run_groups(self, items, responses, after, failed=None):
        """Run items (index, data, state or None) in batches of equal shapes; `after(index, outputs, rows)`
        takes each item's rows of the outputs (streaming) before its response is made, `failed(index,
        message)` hears of each item refused."""
        def refuse(index, e):
            responses[index] = self._error(str(e))
            if failed is not None:
                failed(index, str(e))

        groups = {}
        for item in items:
            key = tuple((a.shape[1:], a.dtype.str) for a in item[1].values())
            groups.setdefault(key, []).append(item)
        for group in groups.values():
            try:
                self._run_batch(group, responses, after)
            except RnnEdgeError as e:
                if len(group) == 1:
                    refuse(group[0][0], e)
                    continue
                for item in group:  # whose input was wrong: each on its own
                    try:
                        self._run_batch([item], responses, after)
                    except RnnEdgeError as e1:
                        refuse(item[0], e1)

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
            try:
                chunk = _chunk_number(request)
            except BadRequest as e:
                responses[i] = self._error(str(e))
                continue
            pending.append((i, control, self._data(request), chunk))
        while pending:  # one request per sequence per round, in arrival order
            seen, now_round, later = set(), [], []
            for entry in pending:
                (later if entry[1]["CORRID"] in seen else now_round).append(entry)
                seen.add(entry[1]["CORRID"])
            self._round(now_round, responses, now)
            pending = later
        self._say_slots()

    def _not_open(self, corrid):
        with self.lock:
            refused = self.refused.get(corrid)
        if refused is not None:
            return (f"sequence {corrid} is not open on model '{self.name}': its first request (START) was refused "
                    f"({refused[0]}); send the first chunk again with sequence_start")
        return (f"sequence {corrid} is not open on model '{self.name}': its first request must set sequence_start "
                f"(START), and a sequence is released at its end or after {self.idle:g} s idle")

    def _place(self, corrid, start, chunk, digest, rows):
        """Where a request goes: ("run", Sequence or None for a new one), ("again", outputs kept for it),
        or BadRequest saying why it is refused."""
        with self.lock:
            held = self.sequences.get(corrid)
        done = held.done if held is not None else None
        if chunk is not None and done is not None and done[0] == chunk and (chunk == 0) == bool(start):
            if done[1] != digest:
                raise BadRequest(f"chunk {chunk} of sequence {corrid} was already applied with other data: "
                                 "a chunk sent again must be the same; send the next chunk as "
                                 f"{held.next}")
            return "again", done[2]
        if start:
            if chunk not in (None, 0):
                raise BadRequest(f"chunk {chunk} of sequence {corrid} has sequence_start set: the first chunk of a "
                                 "sequence is number 0")
            return "run", None
        if held is None:
            raise BadRequest(self._not_open(corrid))
        if chunk is not None and chunk != held.next:
            if chunk < held.next:
                raise BadRequest(f"chunk {chunk} of sequence {corrid} was already applied (the next is {held.next}): "
                                 "each chunk is applied once")
            raise BadRequest(f"chunk {chunk} of sequence {corrid} arrived before chunk {held.next}: send a "
                             "sequence's chunks in order, each after the previous one is answered")
        held_rows = len(next(iter(held.state.values())))
        if held_rows != rows:
            raise BadRequest(f"sequence {corrid} was started with {held_rows} row(s) but this request has {rows}: "
                             "every request of a sequence must have the same batch size")
        return "run", held

    def _round(self, entries, responses, now):
        items, plan = [], {}
        for index, control, data, chunk in entries:
            corrid = control["CORRID"]
            rows = len(next(iter(data.values())))
            digest = _digest(data) if chunk is not None else None
            try:
                what, held = self._place(corrid, control["START"], chunk, digest, rows)
            except BadRequest as e:
                responses[index] = self._error(str(e))
                continue
            if what == "again":  # a retry of the chunk just applied: its kept outputs, the state untouched
                responses[index] = self._response(held)
                with self.lock:
                    if corrid in self.sequences:
                        self.sequences[corrid].last = now
                continue
            if held is None:
                state = {s.name: np.zeros((rows, *s.shape[1:]), s.dtype) for s in self.state_in}
            else:
                state = held.state
            items.append((index, data, state))
            plan[index] = (corrid, bool(control["START"]), bool(control["END"]), chunk, digest)

        def keep(index, outputs, rows):
            corrid, start, end, chunk, digest = plan[index]
            with self.lock:
                self.refused.pop(corrid, None)
                if end:
                    self.sequences.pop(corrid, None)
                    return
                held = self.sequences.get(corrid) if not start else None
                if held is None:
                    held = self.sequences[corrid] = Sequence(None, now)
                number = held.next if chunk is None else chunk
                held.state = {feeds: np.array(outputs[name][rows]) for name, feeds in self.state_out.items()}
                held.last, held.next = now, number + 1
                held.done = (number, digest, {n: np.array(outputs[n][rows]) for n in self.data_out})

        def failed(index, message):
            corrid, start = plan[index][:2]
            if start:  # Triton holds the sequence open: its next request is told why it is not open here
                with self.lock:
                    self.sequences.pop(corrid, None)
                    self.refused[corrid] = (message, now)

        self._run_groups(items, responses, keep, failed)
