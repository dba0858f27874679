"""Where onnxruntime placed each node of a session: its own verdict (the node -> provider assignment
a session records, `session.get_provider_graph_assignment_info`), each node's Keras layer (from its
name and the manifest's fused nodes), and, for a node a provider refused, the reason from that
provider's verbose log, captured while the session starts (never shown on the user's terminal)."""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
from dataclasses import asdict, dataclass

from rnnedge.tables import CPU, PROVIDERS, label

FUSED_OPS = ("LSTM", "GRU", "RNN")
LOG_KEEP = 4_000_000  # bytes of a verbose session log read back (a large graph logs megabytes)
_PREFIX = re.compile(r"^\S*\s*\d{4}-\d\d-\d\d [\d:.]+ \[\w:onnxruntime:[^\]]*\]\s*")
_REFUSAL = re.compile(r"not supported|unsupported|doesn't support|does not support|cannot|fall(s)? ?back|"
                      r"not found in registries|failed", re.IGNORECASE)


@dataclass(frozen=True)
class NodePlacement:
    node: str
    op_type: str
    provider: str  # the provider onnxruntime assigned it to
    layer: str = ""  # the Keras layer it comes from ("" where its name says none)
    reason: str = ""  # why the provider asked for did not take it (its log's words), where it said


@dataclass(frozen=True)
class Placement:
    """The nodes of one session and the provider each runs on; `provider` is the one asked for."""

    provider: str
    nodes: tuple[NodePlacement, ...]

    @property
    def on_provider(self) -> list[NodePlacement]:
        return [n for n in self.nodes if n.provider == self.provider]

    @property
    def elsewhere(self) -> list[NodePlacement]:
        return [n for n in self.nodes if n.provider != self.provider]

    @property
    def fused(self) -> list[NodePlacement]:
        return [n for n in self.nodes if n.op_type in FUSED_OPS]

    @property
    def complete(self) -> bool:
        """Every node runs on the provider asked for."""
        return bool(self.nodes) and not self.elsewhere

    def counts(self) -> dict[str, int]:
        """Provider -> how many nodes it runs."""
        counts: dict[str, int] = {}
        for n in self.nodes:
            counts[n.provider] = counts.get(n.provider, 0) + 1
        return counts

    def summary(self) -> str:
        """'QNN runs 5 of 7 nodes (2 of 2 recurrent); on CPU: 2 (Squeeze, Transpose)'."""
        name = label(self.provider)
        if not self.nodes:
            return f"{name}: onnxruntime recorded no placement (onnxruntime < 1.23?)"
        fused = self.fused
        on = [n for n in fused if n.provider == self.provider]
        line = f"{name} runs {len(self.on_provider)} of {len(self.nodes)} nodes"
        if fused:
            line += f" ({len(on)} of {len(fused)} recurrent)"
        if self.provider == CPU:
            return line
        for other, count in sorted(self.counts().items()):
            if other != self.provider:
                ops = sorted({n.op_type for n in self.nodes if n.provider == other})
                line += f"; on {label(other)}: {count} ({', '.join(ops)})"
        reasons: dict[str, int] = {}
        for n in self.elsewhere:
            if n.reason:
                reasons[n.reason] = reasons.get(n.reason, 0) + 1
        if reasons:
            reason, count = max(reasons.items(), key=lambda rc: rc[1])
            line += f"; {name}'s reason: {reason!r}" + (f" ({count} nodes)" if count > 1 else "")
        return line

    def lines(self) -> list[str]:
        """One line per recurrent node, then per other node left off the provider: node, layer, reason."""
        shown = [n for n in self.nodes if n.op_type in FUSED_OPS or n.provider != self.provider]
        return [f"{'  ' if n.provider == self.provider else '! '}{n.node} ({n.op_type}"
                + (f", layer {n.layer}" if n.layer else "") + f") on {label(n.provider)}"
                + (f": {n.reason}" if n.reason and n.provider != self.provider else "") for n in shown]

    def to_dict(self) -> dict:
        """For the manifest: counts per provider, and every node that left the provider asked for."""
        return {"provider": self.provider, "nodes": len(self.nodes), "counts": self.counts(),
                "recurrent": {n.node: n.provider for n in self.fused},
                "elsewhere": [asdict(n) for n in self.elsewhere]}


def layer_of(node: str, fused_nodes: dict[str, list[str]], layers) -> str:
    """The Keras layer a node comes from: a fused node the manifest lists, else its name's first part
    where that is a layer the manifest knows."""
    for layer, nodes in fused_nodes.items():
        if node in nodes:
            return layer
    head = node.split("/", 1)[0]
    return head if head in layers or head in fused_nodes else ""


def reasons_from_log(log: str, names) -> dict[str, str]:
    """Node -> why a provider refused it, from a verbose session log: a 'REASON' line after the line
    naming the node (QNN's form), else the line naming it where it says it is unsupported (CUDA's)."""
    lines = log.splitlines()
    found: dict[str, str] = {}
    for name in names:
        pattern = re.compile(r"(?<![\w/])" + re.escape(name) + r"(?![\w/])")
        for i, line in enumerate(lines):
            if not pattern.search(line):
                continue
            after = next((t for t in lines[i + 1:i + 4] if "REASON" in t), None)
            if after is not None:
                found[name] = after.split(":", 1)[-1].strip()
                break
            text = _PREFIX.sub("", line).strip()
            if _REFUSAL.search(text) and name not in found:
                found[name] = text
    return found


def placement_of(session, fused_nodes: dict[str, list[str]], layers, log: str = "") -> Placement:
    """A session's placement as onnxruntime recorded it (an empty one where it recorded none)."""
    provider = session.get_providers()[0]
    try:
        subgraphs = session.get_provider_graph_assignment_info()
    except Exception:  # noqa: BLE001 - onnxruntime < 1.23, or a session made without recording
        subgraphs = []
    placed = [(n.name, n.op_type, sg.ep_name) for sg in subgraphs for n in sg.get_nodes()]
    refused = [name for name, _, ep in placed if ep != provider]
    reasons = reasons_from_log(log, refused) if log and refused else {}
    fixes = PROVIDERS[provider].fixes if provider in PROVIDERS else ()
    for name, reason in reasons.items():
        fix = next((f for words, f in fixes if words in reason), None)
        reasons[name] = f"{reason} ({fix})" if fix else reason
    nodes = tuple(NodePlacement(name, op, ep, layer_of(name, fused_nodes, layers), reasons.get(name, ""))
                  for name, op, ep in placed)
    return Placement(provider, nodes)


class native_output:
    """Capture what native code writes on file descriptors 1 and 2 for a block (a provider's verbose
    session log, a plugin's banner) into `text`, so none of it reaches the user's terminal."""

    def __enter__(self):
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        self._file = tempfile.TemporaryFile()
        self._saved = []
        for fd in (1, 2):
            try:
                self._saved.append((fd, os.dup(fd)))
                os.dup2(self._file.fileno(), fd)
            except OSError:
                pass
        self.text = ""
        return self

    def __exit__(self, *exc):
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        for fd, saved in self._saved:
            os.dup2(saved, fd)
            os.close(saved)
        size = self._file.seek(0, os.SEEK_END)
        self._file.seek(max(0, size - LOG_KEEP))
        self.text = self._file.read().decode(errors="replace")
        self._file.close()
        return False
