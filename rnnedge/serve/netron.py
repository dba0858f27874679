"""`rnnedge view`: an export's graph in Netron (the `view` extra), served on 127.0.0.1."""

from __future__ import annotations

from pathlib import Path

from rnnedge.errors import RnnEdgeError
from rnnedge.interrupts import handled
from rnnedge.manifest import MODEL, Manifest


def view(folder: Path, variant: str, *, port: int, browse: bool, say, verify: bool = True) -> None:
    """Serve the variant's model file in Netron until Ctrl-C (`say` prints each line); `verify`: refuse a
    file whose sha256 differs from the manifest's, as every command that reads the export does."""
    manifest = Manifest.load(folder)
    variants = {"fp32": {"file": MODEL}, **manifest.variants}
    if variant not in variants:
        raise RnnEdgeError(f"{folder} has no {variant} variant (it has {', '.join(variants)}): pass --variant "
                           "one of those, or add it with `rnnedge quantize`")
    path = folder / variants[variant]["file"]
    if not path.is_file():
        raise RnnEdgeError(f"{path} is missing: the export folder is incomplete; re-export the model")
    if verify:
        manifest.verify(folder, [variants[variant]["file"]])
    import netron

    host, bound = netron.start(str(path), address=("127.0.0.1", port), browse=browse)
    say(f"serving {path} in Netron at http://{host}:{bound} (Ctrl-C stops)")
    try:
        netron.wait()
    except KeyboardInterrupt:
        handled()  # Ctrl-C is how it ends: exit 0
        netron.stop()
        say("stopped")
