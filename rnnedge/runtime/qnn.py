"""A session on Qualcomm's QNN provider (the `onnxruntime-qnn` plugin wheel; on x86-64 Linux its HTP
backend is Qualcomm's Hexagon NPU simulator), fp16 on HTP, with or without CPU fallback.

Kept small on purpose: the provider table (runtime/providers, tables.PROVIDERS) registers plugin
providers for every command; this is what `export --target qnn` needs to check its result.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import sys

import onnxruntime as ort

QNN = "QNNExecutionProvider"
QNN_PIP = "pip install 'rnnedge[qnn]' (onnxruntime-qnn)"
# fp16 on HTP needs a SoC and an HTP architecture, or the session fails to start (FACTS.md)
HTP_FP16 = {"enable_htp_fp16_precision": "1", "soc_model": "60", "htp_arch": "73"}


def qnn_installed() -> bool:
    try:
        return importlib.util.find_spec("onnxruntime_qnn") is not None
    except (ImportError, ValueError):
        return False


def _devices():
    import onnxruntime_qnn

    devices = [d for d in ort.get_ep_devices() if d.ep_name == QNN]
    if not devices:
        ort.register_execution_provider_library(QNN, onnxruntime_qnn.get_library_path())
        devices = [d for d in ort.get_ep_devices() if d.ep_name == QNN]
    return devices, onnxruntime_qnn.get_qnn_htp_path()


def qnn_session(model: bytes | str, *, all_on_qnn: bool = True) -> ort.InferenceSession:
    """A session on QNN's HTP backend in fp16. With `all_on_qnn`, onnxruntime refuses to start it
    when any node would be placed on the CPU provider (its own placement verdict)."""
    devices, htp = _devices()
    so = ort.SessionOptions()
    so.log_severity_level = 3
    if all_on_qnn:
        so.add_session_config_entry("session.disable_cpu_ep_fallback", "1")
    so.add_provider_for_devices(devices, {"backend_path": htp, **HTP_FP16})
    with _native_stdout_off():
        return ort.InferenceSession(model, so)


@contextlib.contextmanager
def _native_stdout_off():
    """QNN's libraries print a "LIBNATIVE: No alternate configuration" notice on descriptor 1 when a
    session starts: kept out of the command's output (a JSON pipe, a table)."""
    sys.stdout.flush()
    saved, null = os.dup(1), os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    try:
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(null)
