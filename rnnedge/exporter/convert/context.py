"""State shared by the layer converters while one Keras model is converted."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction

from rnnedge.errors import RnnEdgeError
from rnnedge.exporter.convert.graph import GraphBuilder, Sym


class UnsupportedLayerError(RnnEdgeError):
    """A layer (or one of its options) that rnnedge cannot convert faithfully."""

    def __init__(self, layer, reason: str,
                 advice: str = "remove or replace it, or pass --allow-loop to fall back to the plain tf2onnx graph"):
        self.streaming = False  # refused for --streaming only (Context.fail_stream): no tf2onnx fallback
        self.layer_name = getattr(layer, "name", str(layer))
        self.layer_type = type(layer).__name__
        self.reason = reason
        super().__init__(f"layer '{self.layer_name}' ({self.layer_type}): {reason}; {advice}")


@dataclass
class StateIO:
    """A recurrent state carried across calls: graph input `input` feeds the layer, `output` returns it."""

    input: str
    output: str
    layer: str
    shape: tuple


@dataclass
class StreamBook:
    """The streaming bookkeeping of one conversion, apart from the graph building: the recurrent
    states carried across calls, and how each value relates to the input's time axis."""

    states: list[StateIO] = field(default_factory=list)
    state_outputs: dict[str, str] = field(default_factory=dict)  # state output name -> value
    # streaming layers over time (temporal.py): values holding a ZeroPadding1D's kept frames before
    # the chunk (-> how many); each value's rate, input steps per step of the value (2 after a
    # stride of 2, Fraction(1, 2) after an UpSampling1D(2); absent: 1); the total stride
    overlaps: dict[str, int] = field(default_factory=dict)
    rates: dict[str, int | Fraction] = field(default_factory=dict)
    time_stride: int = 1
    # value -> input steps lost before it ('valid' windows, cropping)
    shortened: dict[str, int | Fraction] = field(default_factory=dict)
    min_steps: int = 0  # the most input steps any value loses: sample cases must be longer
    # value -> the axis holding the input's time where a layer moved it off axis 1 (a Permute), or
    # None where there is none (a TimeDistributed's frames folded into the batch); absent: 1
    time_axis: dict[str, int | None] = field(default_factory=dict)


@dataclass
class Context:
    g: GraphBuilder
    streaming: bool = False
    graph_inputs: dict[str, int] = field(default_factory=dict)  # input name -> position
    annotations: dict[str, dict] = field(default_factory=dict)  # input name -> {"vocab": .., "pad_value": ..}
    fused: dict[str, list[str]] = field(default_factory=dict)  # Keras layer -> fused ONNX node names
    scans: dict[str, list[str]] = field(default_factory=dict)  # Keras layer -> Scan node names (convert/scan.py)
    routes: dict[str, str] = field(default_factory=dict)  # layer (or op) -> "fused" | "scan" | "native" | "tf2onnx"
    notes: dict[str, str] = field(default_factory=dict)  # layer -> why it took its route, where that needs saying
    scope: str = ""  # "outer/" while the layers of a nested model are converted
    book: StreamBook = field(default_factory=StreamBook)  # the state carried and the time bookkeeping
    # core.convert_layer, for converters that convert an inner layer (TimeDistributed): set by core
    convert_layer: Callable | None = None

    def route(self, layer, how: str, note: str | None = None):
        self.routes[self.scope + layer.name] = how
        if note:
            self.notes[self.scope + layer.name] = note

    def fail(self, layer, reason: str):
        raise UnsupportedLayerError(layer, reason)

    def fail_stream(self, layer, reason: str):
        """Refuse `layer` under --streaming: it cannot run chunk by chunk, and `reason` says why."""
        error = UnsupportedLayerError(layer, f"{reason}, so it cannot run chunk by chunk",
                                      advice="export without --streaming")
        error.streaming = True
        raise error

    def note(self, layer, text: str):
        """Why `layer` took its route, for the manifest's `notes`."""
        self.notes[self.scope + layer.name] = text

    def annotate(self, x: Sym, **facts):
        """Record facts about a graph input (vocabulary size, padding value) for the runtime's checks."""
        if x.name in self.graph_inputs:
            self.annotations.setdefault(x.name, {}).update(facts)
