"""`rnnedge triton`, `serve`, `ort` and `view`: an export served, converted for minimal builds, or viewed."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from rnnedge import preflight
from rnnedge.cli.common import (
    Backend,
    CoreThreads,
    Folder,
    Force,
    NoVerify,
    Precision,
    Threads,
    Variant,
    app,
    positive,
    user_errors,
)


@app.command()
def triton(
    folder: Folder,
    out: Annotated[Path, typer.Option("--out", "-o", metavar="REPO", help="The repository to write REPO/<name> in.")],
    name: Annotated[Optional[str], typer.Option(metavar="NAME", help="The model's name (the folder's).")] = None,
    max_batch: Annotated[int, typer.Option(metavar="N", min=0, help="Triton's max_batch_size.")] = 32,
    instances: Annotated[int, typer.Option(metavar="N", min=1, help="Model instances.")] = 1,
    backend: Annotated[Backend, typer.Option(metavar="BACKEND", help="onnxruntime or python (rnnedge's runtime).")
                       ] = Backend.onnxruntime,
    gpu: Annotated[bool, typer.Option("--gpu", help="GPU instances (KIND_GPU).")] = False,
    tensorrt: Annotated[bool, typer.Option("--tensorrt", help="With --gpu: TensorRT.")] = False,
    idle_seconds: Annotated[float, typer.Option(metavar="SECONDS", callback=positive, help="Release an idle "
                                                "sequence after this long.")] = 60.0,
    max_sequences: Annotated[int, typer.Option(metavar="N", min=1, help="Python: open sequences per instance.")] = 1024,
    threads: Threads = 1,
    queue_delay_ms: Annotated[float, typer.Option(metavar="MS", min=0, help="Wait this long to batch sequences.")
                              ] = 0.0,
    force: Force = False,
    no_verify: NoVerify = False,
    provider: Annotated[str, typer.Option(metavar="NAME", help="Python backend: the execution provider (cpu, "
                                          "openvino, qnn, ...); default: cpu, or cuda with --gpu.")] = "",
    precision: Precision = None,
):
    """Write a Triton model repository entry (config.pbtxt checked against Triton's schema)."""
    with user_errors():
        preflight.require("serve", "`rnnedge triton` (its configs are checked against Triton's schema)")
        from rnnedge.serve.triton import write_repository

        target = write_repository(folder, out, name=name, backend=backend.value, max_batch=max_batch,
                                  instances=instances, gpu=gpu, tensorrt=tensorrt, idle_seconds=idle_seconds,
                                  max_sequences=max_sequences, threads=threads, queue_delay_ms=queue_delay_ms,
                                  force=force, verify=not no_verify, provider=provider, precision=precision or "")
        if backend.value == "python":
            typer.echo(f"wrote {target} (python backend); serve it with `rnnedge serve {out}`")
        else:  # the tritonserver `rnnedge serve` runs (pip's) has only the python backend
            typer.echo(f"wrote {target} (onnxruntime backend); serve it with a Triton server that has the "
                       "onnxruntime backend (NVIDIA's tritonserver container); for `rnnedge serve`, write it with "
                       "--backend python")


@app.command()
def serve(
    repo: Annotated[Path, typer.Argument(metavar="REPO", help="A model repository written by `rnnedge triton`.")],
    http_port: Annotated[int, typer.Option(metavar="N", min=1, max=65535, help="HTTP port on 127.0.0.1.")] = 8000,
    grpc_port: Annotated[int, typer.Option(metavar="N", min=1, max=65535, help="gRPC port on 127.0.0.1.")] = 8001,
    timeout: Annotated[float, typer.Option(metavar="SECONDS", callback=positive, help="Wait this long for models.")
                       ] = 60.0,
    log: Annotated[Optional[Path], typer.Option(metavar="FILE", dir_okay=False, help="Keep the server's log in "
                                                "FILE (else a temporary file, deleted at exit).")] = None,
):
    """Run the nvidia-pytriton wheel's tritonserver on REPO in the foreground (127.0.0.1 only; Ctrl-C stops it).

    It watches the models: one whose backend process dies is loaded again, or the command exits 1; sequences
    released idle and full sequence slots are printed."""
    with user_errors():
        from rnnedge.serve.server import serve_forever

        serve_forever(repo, http_port=http_port, grpc_port=grpc_port, timeout=timeout, say=typer.echo, log=log)


@app.command()
def ort(
    folder: Folder,
    force: Annotated[bool, typer.Option("--force", help="Convert again if model.ort exists.")] = False,
    no_verify: NoVerify = False,
    threads: CoreThreads = None,
):
    """Write model.ort (onnxruntime's ORT format) and required_operators.config for minimal/mobile builds."""
    with user_errors():
        from rnnedge.serve.ort import write_ort

        entry = write_ort(folder, force=force, verify=not no_verify, threads=threads)
        worst = max(entry["max_abs_error"].values(), default=0.0)
        status = "PASS" if entry["gate"]["passed"] else "FAIL"
        typer.echo(f"wrote {folder / entry['file']} ({entry['size']:,} bytes) and "
                   f"{folder / entry['required_operators']}")
        typer.echo(f"{status}: golden.npz on the .ort file, worst |diff| {worst:.2e}; run it with "
                   f"rnnedge.load(DIR, variant=\"ort\")")
        if not entry["gate"]["passed"]:
            raise typer.Exit(1)


@app.command()
def view(
    folder: Folder,
    variant: Variant = "fp32",
    port: Annotated[int, typer.Option(metavar="N", help="Port on 127.0.0.1.")] = 8080,
    browse: Annotated[bool, typer.Option("--browse/--no-browse", help="Open the page in a web browser.")] = True,
    no_verify: NoVerify = False,
):
    """Open the exported graph in Netron, served on 127.0.0.1 (Ctrl-C stops)."""
    with user_errors():
        from rnnedge.manifest import Manifest

        Manifest.load(folder)  # a folder that is not an export says so before the extra is asked for
        preflight.require("view", "`rnnedge view`")
        from rnnedge.serve.netron import view as netron_view

        netron_view(folder, variant, port=port, browse=browse, say=typer.echo, verify=not no_verify)
