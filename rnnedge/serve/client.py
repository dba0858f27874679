"""Triton clients for an export folder's model: `TritonRunner` (stateless requests, and
`stream()` for one sequence whose state the server keeps). `rnnedge.serve.loadtest` times them.

    from rnnedge.serve.client import TritonRunner
    runner = TritonRunner("grpc://127.0.0.1:8001", "exported/airline-gru")   # or http://127.0.0.1:8000
    out = runner.infer({"window": x})                                         # stateless, or:
    stream = runner.stream()                                                  # one sequence id
    y = stream.push({"window": chunk}); stream.end({"window": last})          # one row (batch 1) per chunk

A stream numbers its chunks (the request parameter `rnnedge_chunk`: 0, 1, 2, ...); the server
applies each number once, in order, and answers a chunk sent again with the outputs it already
computed. A request whose outcome is unknown (a timeout, a dropped connection) is sent again with
the same number, so it is never applied twice.

Only loopback servers: a URL naming another host is refused (this is a local benchmark and test
tool, never a load generator pointed at someone's server). Every loop is bounded by a count and
a time budget, every request by a timeout.
"""

from __future__ import annotations

import itertools
import os
import random
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from rnnedge.errors import RnnEdgeError
from rnnedge.manifest import Manifest

LOOPBACK = ("localhost", "127.0.0.1", "::1")
REQUEST_TIMEOUT_S = 30.0
RETRIES = 2  # a request whose outcome is unknown is sent again (same chunk number) at most this many times
CHUNK = "rnnedge_chunk"  # the request parameter the python backend's model.py checks (triton_model.CHUNK)
# Triton statuses after which a request may or may not have run (gRPC codes; HTTP 408, 503, 504)
UNKNOWN_OUTCOME = {"StatusCode.DEADLINE_EXCEEDED", "StatusCode.UNAVAILABLE", "StatusCode.CANCELLED",
                   "StatusCode.ABORTED", "StatusCode.UNKNOWN", "408", "503", "504", None}
TRITON, RUNTIME = "triton", "runtime"
_NEED = "the Triton client needs the serve extra: pip install 'rnnedge[serve]'"
_ids = itertools.count(random.SystemRandom().randrange(1, 2**40))  # sequence ids unique within this process


def parse_url(url: str) -> tuple[str, str]:
    """"grpc://host:port", "http://host:port" or "host:port" (gRPC) -> (protocol, "host:port");
    RnnEdgeError unless the host is loopback."""
    text = str(url).strip()
    parsed = urllib.parse.urlsplit(text if "://" in text else "grpc://" + text)
    if parsed.scheme not in ("grpc", "http"):
        raise RnnEdgeError(f"Triton URL {url!r}: expected grpc://HOST:PORT or http://HOST:PORT")
    host = parsed.hostname or ""
    if not (host in LOOPBACK or host.startswith("127.")):
        raise RnnEdgeError(f"Triton URL {url!r} is not on this machine: rnnedge only talks to loopback servers "
                           "(127.0.0.1, localhost, ::1); start one with `rnnedge serve REPO`")
    try:
        port = parsed.port
    except ValueError:
        port = None
    if port is None:
        raise RnnEdgeError(f"Triton URL {url!r} has no port: expected e.g. grpc://127.0.0.1:8001 or http://127.0.0.1:8000")
    return parsed.scheme, f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _client_module(protocol: str):
    try:
        if protocol == "grpc":
            import tritonclient.grpc as module
        else:
            import tritonclient.http as module
        from tritonclient.utils import InferenceServerException
    except ImportError:
        raise RnnEdgeError(_NEED) from None
    return module, InferenceServerException


def _message(e: Exception) -> str:
    text = (e.message() if callable(getattr(e, "message", None)) else None) or str(e)
    return " ".join(str(text).split())


class OutcomeUnknown(RnnEdgeError):
    """A request failed so that it may or may not have run on the server (a timeout, a lost connection)."""


class Refused(RnnEdgeError):
    """The server answered the request with an error: it did not run. `status`: Triton's code ("400",
    "StatusCode.INVALID_ARGUMENT", ...)."""

    def __init__(self, message: str, status: str | None):
        super().__init__(message)
        self.status = status

    @property
    def client_error(self) -> bool:
        """The request was at fault (HTTP 4xx, gRPC INVALID_ARGUMENT...), not the server."""
        return bool(self.status) and (self.status.startswith("4") or self.status in (
            "StatusCode.INVALID_ARGUMENT", "StatusCode.NOT_FOUND", "StatusCode.FAILED_PRECONDITION",
            "StatusCode.OUT_OF_RANGE", "StatusCode.ALREADY_EXISTS"))


class TritonRunner:
    """One client of one model on a loopback Triton server; `infer(feeds)` like the in-process runtime.

    folder: the export folder the model was written from (its manifest names the inputs and
    outputs). model: the model's name on the server (default: the folder's name; where the server
    has no such model but serves exactly one, that one). timeout: seconds per request; retries: how
    often a stream's chunk whose outcome is unknown is sent again. One runner per thread.
    """

    def __init__(self, url: str, folder: str | os.PathLike, model: str | None = None, *,
                 timeout: float = REQUEST_TIMEOUT_S, retries: int = RETRIES):
        self.protocol, self.address = parse_url(url)
        self.retries = int(retries)
        self.folder = Path(folder)
        self.manifest = Manifest.load(self.folder)
        self.timeout = float(timeout)
        module, self._error = _client_module(self.protocol)
        self._module = module
        if self.protocol == "grpc":
            # a channel of its own (local subchannel pool): a runner made after a server restart does
            # not inherit the connection backoff of one that failed against the old server
            size = 2**31 - 1
            self.client = module.InferenceServerClient(self.address, channel_args=[
                ("grpc.max_send_message_length", size), ("grpc.max_receive_message_length", size),
                ("grpc.use_local_subchannel_pool", 1)])
        else:
            self.client = module.InferenceServerClient(self.address, connection_timeout=min(self.timeout, 10.0),
                                                       network_timeout=self.timeout)
        self.model = self._model_name(model)
        self.inputs = [s for s in self.manifest.data_inputs]
        self.outputs = [s.name for s in self.manifest.data_outputs]
        self._check_metadata()

    def _call(self, what: str, fn, *args, **kwargs):
        """fn(...); Refused if Triton answered with an error, OutcomeUnknown if the request may or may not
        have run (a timeout, a transport error)."""
        try:
            return fn(*args, **kwargs)
        except self._error as e:
            status = e.status() if callable(getattr(e, "status", None)) else None
            text = f"Triton at {self.protocol}://{self.address}: {what} failed: {_message(e)}"
            raise (OutcomeUnknown(text) if status in UNKNOWN_OUTCOME else Refused(text, status)) from None
        except Exception as e:  # noqa: BLE001 - transport errors (connection refused, reset) of either client
            raise OutcomeUnknown(f"Triton at {self.protocol}://{self.address}: {what} failed "
                                 f"({type(e).__name__}: {_message(e)}); is the server running?") from None

    def _model_name(self, asked: str | None) -> str:
        index = self._call("listing the models", self.client.get_model_repository_index)
        if self.protocol == "grpc":
            names = [m.name for m in index.models]
        else:
            names = [m["name"] for m in index]
        wanted = asked or self.folder.resolve().name
        if wanted in names:
            return wanted
        if asked is None and len(names) == 1:
            return names[0]
        raise RnnEdgeError(f"the server at {self.address} has no model {wanted!r} (it serves: "
                           f"{', '.join(names) or 'nothing'}): pass the model's name (--triton-model NAME)")

    def _check_metadata(self) -> None:
        meta = self._call(f"reading model '{self.model}'", self.client.get_model_metadata, self.model)
        inputs = [i.name for i in meta.inputs] if self.protocol == "grpc" else [i["name"] for i in meta["inputs"]]
        want = [s.name for s in self.inputs]
        if sorted(inputs) != sorted(want):
            raise RnnEdgeError(f"model '{self.model}' on the server takes {inputs} but {self.folder} takes {want}: "
                               "serve a repository written from this export folder (`rnnedge triton`)")

    def infer(self, feeds: Mapping[str, np.ndarray], *, sequence_id: int = 0, start: bool = False,
              end: bool = False, chunk: int | None = None) -> dict[str, np.ndarray]:
        """One request: data inputs by name -> data outputs by name. `chunk`: the chunk's number in sequence
        `sequence_id` (the server applies each once, in order). Refused (Triton's message and status) or
        OutcomeUnknown (timeouts, transport errors), both RnnEdgeError, on failure."""
        from tritonclient.utils import np_to_triton_dtype

        inputs = []
        for spec in self.inputs:
            a = np.ascontiguousarray(feeds[spec.name])
            i = self._module.InferInput(spec.name, list(a.shape), np_to_triton_dtype(a.dtype))
            i.set_data_from_numpy(a)
            inputs.append(i)
        outputs = [self._module.InferRequestedOutput(n) for n in self.outputs]
        kwargs: dict[str, Any] = {}
        if sequence_id:
            kwargs = {"sequence_id": sequence_id, "sequence_start": start, "sequence_end": end}
            if chunk is not None:
                kwargs["parameters"] = {CHUNK: int(chunk)}
        if self.protocol == "grpc":
            kwargs["client_timeout"] = self.timeout
        result = self._call(f"inference on '{self.model}'", self.client.infer, self.model, inputs,
                            outputs=outputs, **kwargs)
        return {n: result.as_numpy(n) for n in self.outputs}

    def stream(self, sequence_id: int | None = None) -> TritonStream:
        """A sequence on the server: `push` chunks (the first one STARTs it), `end` with the last."""
        return TritonStream(self, sequence_id or next(_ids))

    def close(self) -> None:
        self.client.close()


class TritonStream:
    """One sequence on a Triton server, fed chunk by chunk like `rnnedge`'s `Stream`, one row (batch 1)
    per chunk: Triton's sequence batcher takes one row per request.

    Chunks are numbered (0 with START); `next` is the number of the next one. A chunk whose request
    timed out or lost its connection is sent again with the same number (at most `runner.retries`
    times): the server answers it from the outputs it computed if the first request did run, so a
    chunk is never applied twice. If its outcome stays unknown, push() raises OutcomeUnknown and
    the same chunk may be pushed again later (it keeps its number); a different one is refused by
    the server if the first did run.
    """

    def __init__(self, runner: TritonRunner, sequence_id: int):
        self.runner = runner
        self.sequence_id = int(sequence_id)
        self.next = 0
        self.ended = False

    @property
    def started(self) -> bool:
        return self.next > 0

    def push(self, feeds: Mapping[str, np.ndarray], *, end: bool = False) -> dict[str, np.ndarray]:
        if self.ended:
            raise RnnEdgeError(f"sequence {self.sequence_id} has ended: open another with runner.stream()")
        number = self.next
        unknown = None
        for _ in range(1 + self.runner.retries):
            try:
                out = self.runner.infer(feeds, sequence_id=self.sequence_id, start=number == 0, end=bool(end),
                                        chunk=number)
            except OutcomeUnknown as e:
                unknown = e
                continue
            except Refused as e:
                if unknown is not None and "START flag" in str(e):
                    # the first attempt ended the sequence (or the server lost it): its answer is gone
                    self.ended = True
                    raise RnnEdgeError(f"sequence {self.sequence_id}: chunk {number} timed out ({unknown}) and, "
                                       f"sent again, the server no longer has the sequence (the first attempt "
                                       f"ended it, or it was released or the server restarted): its outputs are "
                                       "lost; run the sequence again in a new stream") from None
                raise
            self.next = number + 1
            self.ended = bool(end)
            return out
        raise OutcomeUnknown(f"sequence {self.sequence_id}: chunk {number}'s outcome is unknown after "
                             f"{1 + self.runner.retries} attempts ({unknown}): push the same chunk again (the "
                             "server applies it once) or run the sequence again in a new stream")

    def end(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.push(feeds, end=True)
