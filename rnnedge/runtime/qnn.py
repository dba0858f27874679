"""A session on Qualcomm's QNN provider (the `onnxruntime-qnn` plugin wheel; on x86-64 Linux its HTP
backend is Qualcomm's Hexagon NPU simulator), fp16 on HTP, with or without CPU fallback: what
`export --target qnn` needs to check its result. Registration, options and the precision pin come
from the provider table (tables.PROVIDERS, runtime/providers).
"""

from __future__ import annotations

import onnxruntime as ort

from rnnedge.runtime.placement import native_output
from rnnedge.runtime.providers import plugin_devices, plugin_module, precision_options, register_plugin, table_options
from rnnedge.tables import PROVIDERS, QNN

QNN_PIP = PROVIDERS[QNN].install


def qnn_installed() -> bool:
    return plugin_module(QNN) is not None


def qnn_session(model: bytes | str, *, all_on_qnn: bool = True) -> ort.InferenceSession:
    """A session on QNN's HTP backend in fp16. With `all_on_qnn`, onnxruntime refuses to start it
    when any node would be placed on the CPU provider (its own placement verdict)."""
    register_plugin(QNN)
    so = ort.SessionOptions()
    so.log_severity_level = 3
    if all_on_qnn:
        so.add_session_config_entry("session.disable_cpu_ep_fallback", "1")
    so.add_provider_for_devices(plugin_devices(QNN), {**table_options(QNN), **precision_options(QNN, None)[1]})
    with native_output():  # QNN prints a "LIBNATIVE" notice on descriptor 1 as a session starts
        return ort.InferenceSession(model, so)
