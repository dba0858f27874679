"""A runner over an onnxruntime session: `run(feeds)` gives outputs by name, `bind(feeds)` a call
for timing (`session.run` on prepared numpy feeds on CPU; inputs bound once on the device with
IOBinding and outputs synchronised on CUDA/TensorRT). Check and bench take every runner alike:
this one, and the baselines' (`rnnedge.bench.baselines`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import onnxruntime as ort

from rnnedge.tables import GPU_PROVIDERS, ORT_DTYPES


class OrtRunner:
    def __init__(self, session: ort.InferenceSession, name: str = "onnxruntime"):
        self.session = session
        self.name = name
        self.provider = session.get_providers()[0]
        self.output_names = [o.name for o in session.get_outputs()]

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(self.output_names, self.session.run(self.output_names, self._prepared(feeds))))

    def _prepared(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        graph_inputs = self.session.get_inputs()
        names = [i.name for i in graph_inputs]
        if not all(n in feeds for n in names):  # positional, for a graph named otherwise
            feeds = dict(zip(names, feeds.values()))
        prepared = {}
        for i in graph_inputs:
            a = np.asarray(feeds[i.name])
            want = ORT_DTYPES.get(i.type)
            prepared[i.name] = np.ascontiguousarray(a if want is None or a.dtype == want else a.astype(want))
        return prepared

    def bind(self, feeds: Mapping[str, np.ndarray]) -> Callable[[], Any]:
        """One timed call with `feeds` prepared (and on a GPU, resident) beforehand."""
        session, outputs, prepared = self.session, self.output_names, self._prepared(feeds)
        if self.provider not in GPU_PROVIDERS:
            return lambda: session.run(outputs, prepared)
        device = int(session.get_provider_options().get(self.provider, {}).get("device_id", 0) or 0)
        io = session.io_binding()
        values = {n: ort.OrtValue.ortvalue_from_numpy(a, "cuda", device) for n, a in prepared.items()}
        for n, v in values.items():
            io.bind_ortvalue_input(n, v)
        for n in outputs:
            io.bind_output(n, "cuda", device)

        def call():
            session.run_with_iobinding(io)
            io.synchronize_outputs()

        call.values = values  # keep the device buffers alive with the closure
        return call
