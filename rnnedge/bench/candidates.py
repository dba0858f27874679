"""What bench times, as runners: the export's variants (`OrtRunner`), the baselines (Keras,
tf2onnx, LiteRT: `rnnedge.bench.baselines`), streams of each variant, and the floor (a graph
of Identity nodes with the same inputs, pushed the same way)."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from rnnedge.errors import RnnEdgeError
from rnnedge.manifest import MODEL, Manifest, TensorSpec
from rnnedge.tables import BASELINES, ONNX_TYPES, VARIANTS

FLOOR = "floor"
STREAM_PREFIX = "stream-"


def variant_files(folder: Path, manifest: Manifest, variants: Sequence[str]) -> None:
    have = sorted({"fp32", *manifest.variants})
    unknown = [v for v in variants if v not in VARIANTS and v not in manifest.variants]
    if unknown:  # no command makes these: no suggestion to make them
        raise RnnEdgeError(f"unknown variant(s) {', '.join(repr(v) for v in unknown)}: expected some of "
                           f"{', '.join(have)} (the variants {folder} has)")
    missing = [v for v in variants if v != "fp32" and v not in manifest.variants]
    if missing:
        raise RnnEdgeError(f"{folder} has no {', '.join(repr(v) for v in missing)} variant "
                           f"(it has: {', '.join(have)}); "
                           f"make it with `rnnedge quantize {folder} --variants {','.join(missing)}` or bench those")
    for v in variants:
        entry = manifest.variants.get(v) or {"file": MODEL}
        name = entry.get("file") if isinstance(entry, Mapping) else None
        if not name or not (folder / name).is_file():
            raise RnnEdgeError(f"{folder}: the {v!r} variant's file {name!r} is missing; re-export or re-quantize it")


def load_variant(folder: Path, provider: str, variant: str, threads: int, verify: bool = True,
                 precision: str | None = None, explain: bool = False):
    from rnnedge.runtime import load

    return load(folder, provider, variant=variant, threads=threads, verify=verify, precision=precision,
                explain=explain)


def keras_source(source, manifest: Manifest, baselines: Sequence[str], threads: int):
    """The Keras model the folder was exported from (for the baselines), or RnnEdgeError."""
    need = (f"baselines ({', '.join(baselines)}) need the export extra (pip install 'rnnedge[export]') "
            "and the source model (--source FILE)")
    if source is None:
        name = str(manifest.source.get("name") or "")
        if not name:
            raise RnnEdgeError(f"{need}: the manifest names no source model")
        recorded = str(manifest.source.get("path") or "")  # where it was at export (an absolute path)
        if not name.startswith("zoo:") and not Path(name).exists() and recorded and Path(recorded).exists():
            name = recorded
        if not name.startswith("zoo:") and not Path(name).exists():
            raise RnnEdgeError(f"{need}: the manifest's source {name!r} is not here (a model file or SavedModel "
                               "folder)" + (f" nor at {recorded}" if recorded else "") + ": pass --source FILE")
        source = name
    from rnnedge.logs import quiet_tensorflow

    quiet_tensorflow()
    try:
        import keras  # noqa: F401
        import tensorflow  # noqa: F401
        import tf2onnx  # noqa: F401
    except ImportError as e:
        raise RnnEdgeError(f"{need}: {e.name or e} is not installed") from None
    _tf_threads(threads)
    from rnnedge.exporter import load_keras

    model = load_keras(source, allow_loop=bool(manifest.loop_layers),  # as exported: a plain tf.Module too
                       custom=manifest.source.get("custom"))[0]
    if len(model.inputs) != len(manifest.data_inputs):
        raise RnnEdgeError(f"the source model has {len(model.inputs)} input(s) but the export takes "
                           f"{len(manifest.data_inputs)} ({', '.join(s.name for s in manifest.data_inputs)}): "
                           "pass the model this folder was exported from (--source FILE)")
    return model


def _tf_threads(threads: int) -> None:
    """Limit TensorFlow's thread pools, which can only be set before TensorFlow starts."""
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:  # already started in this process: keeps its pools
        pass




def floor_folder(manifest: Manifest, folder: str | os.PathLike) -> Path:
    """An export folder whose graph computes nothing: one Identity per input (data and state),
    data outputs first, each state output feeding its state input. Same inputs, so
    `stream.push` on it costs what a push costs around the model's own computation."""
    import onnx
    from onnx import helper

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)

    def value(spec: TensorSpec):
        return helper.make_tensor_value_info(spec.name, ONNX_TYPES.get(spec.dtype, 1), list(spec.shape))

    data_out = [dataclasses.replace(s, name=f"{s.name}_floor", pad_value=None, vocab=None)
                for s in manifest.data_inputs]
    state_out = [TensorSpec(f"{s.name}_floor", s.shape, s.dtype, role="state", feeds=s.name, layer=s.layer)
                 for s in manifest.state_inputs]
    inputs = [*manifest.data_inputs, *manifest.state_inputs]
    outputs = [*data_out, *state_out]
    nodes = [helper.make_node("Identity", [i.name], [o.name]) for i, o in zip(inputs, outputs)]
    graph = helper.make_graph(nodes, "floor", [value(s) for s in inputs], [value(s) for s in outputs])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", manifest.opset)])
    model.ir_version = manifest.ir_version
    onnx.save(model, folder / MODEL)
    Manifest(inputs=inputs, outputs=outputs, opset=manifest.opset, ir_version=manifest.ir_version,
             source={"name": "floor"}, streaming=True, variants={"fp32": {"file": MODEL}}).save(folder)
    return folder


def baseline_runners(keras_model, manifest: Manifest, baselines: Sequence[str], like, threads: int) -> dict:
    """The baselines asked for, as runners over the source Keras model."""
    from rnnedge.bench.baselines import KerasRunner, LiteRTRunner, tf2onnx_runner

    names_in = [s.name for s in manifest.data_inputs]
    names_out = [s.name for s in manifest.data_outputs]
    runners = {}
    for b in baselines:
        if b == "tf2onnx":
            runners[b] = tf2onnx_runner(keras_model, like, threads)
        elif b == "keras":
            runners[b] = KerasRunner(keras_model, names_in, names_out)
        else:
            runners[b] = LiteRTRunner(keras_model, names_in, names_out, threads=threads, int8=b == "litert-int8")
    return runners


def whole_sequence_calls(runners: Mapping, manifest: Manifest, feeds: Mapping) -> dict[str, Callable]:
    """One timed call per runner; variants take every input, baselines the data inputs."""
    data = {s.name: feeds[s.name] for s in manifest.data_inputs}
    return {name: r.bind(data if name in BASELINES else feeds) for name, r in runners.items()}


def stream_calls(models, floor, manifest, feeds, batch) -> dict[str, Callable]:
    data = [feeds[s.name] for s in manifest.data_inputs]
    calls = {}
    for name, model in [*((STREAM_PREFIX + v, m) for v, m in models.items()), (FLOOR, floor)]:
        push = model.stream(batch).push
        calls[name] = lambda push=push: push(*data)
    return calls
