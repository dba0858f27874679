"""`rnnedge web`: a static site that runs an export in the browser (and serves it on 127.0.0.1)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from rnnedge.cli.common import Force, NoVerify, Variant, app, user_errors


@app.command()
def web(
    folder: Annotated[Optional[Path], typer.Argument(metavar="DIR", help="A folder written by `rnnedge export`.")
                      ] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", metavar="SITE", help="Where to write the site.")
                   ] = None,
    variant: Variant = "fp32",
    webgpu: Annotated[bool, typer.Option("--webgpu", help="Ship onnxruntime-web's WebGPU build too.")] = False,
    serve: Annotated[bool, typer.Option("--serve", help="Serve the site on 127.0.0.1 until Ctrl-C.")] = False,
    port: Annotated[int, typer.Option(metavar="N", min=0, max=65535, help="Port for --serve (0: any free one); 8000 "
                                                 "by default, view's 8080 left free so both can run.")
                    ] = 8000,
    no_verify: NoVerify = False,
    force: Force = False,
):
    """Write a static site: the model, onnxruntime-web, rnnedge.mjs (load, run, stream) and a demo page."""
    with user_errors():
        from rnnedge.errors import RnnEdgeError
        from rnnedge.manifest import Manifest
        from rnnedge.web import serve_site, write_site

        if folder is None and out is None:
            raise RnnEdgeError("give an export folder (rnnedge web DIR --out SITE), or --out SITE --serve to serve a "
                               "site written before")
        if folder is not None:
            if out is None:
                raise RnnEdgeError("where should the site go? pass --out SITE")
            if not no_verify:
                m = Manifest.load(folder)
                m.verify(folder, [m.variants.get(variant, {}).get("file", "model.onnx")])
            site = write_site(folder, out, variant=variant, providers=("wasm", "webgpu") if webgpu else ("wasm",),
                              force=force)
            typer.echo(f"wrote {site} ({sum(p.stat().st_size for p in site.rglob('*') if p.is_file()) / 1e6:.1f} MB): "
                       f"serve it from any static server, or `rnnedge web --out {site} --serve`")
        if serve:
            server = serve_site(out, port)
            typer.echo(f"serving {out} on http://127.0.0.1:{server.server_address[1]}/ (Ctrl-C stops)")
            try:
                while True:
                    time.sleep(3600)
            finally:
                server.shutdown()
