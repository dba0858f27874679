"""The export pipeline, above the stages it runs: source -> convert -> reference (Keras' truth) ->
golden -> check -> quantize -> write. `exporter` converts Keras to ONNX and nothing else; `run`
(`export`) drives it, `check` and `quantize` and moves the folder into place; `target` shapes an
export for an accelerator and checks it there.

    from rnnedge.pipeline import export
    result = export("model.keras", "exported/model")
"""

from rnnedge.pipeline.run import ExportResult, export, task_metrics
from rnnedge.pipeline.target import check_on_target, shaped_for, static_for, target_checked, target_line

__all__ = ["ExportResult", "check_on_target", "export", "shaped_for", "static_for", "target_checked", "target_line",
           "task_metrics"]
