"""docs/layers.md lists exactly the Keras layer types the converter registry handles, each with its kind
(recurrent or not): a converter added or removed without the page, or a page row without a converter,
fails here."""

from __future__ import annotations

import re
from pathlib import Path

import keras

import rnnedge.exporter.convert.core  # noqa: F401  (imports every converter module, which registers them)
from rnnedge.exporter.convert.registry import CONVERTERS

PAGE = Path(__file__).resolve().parent.parent / "docs" / "layers.md"


def test_the_supported_layers_page_is_the_registry():
    """docs/layers.md's table lists exactly the Keras layer types CONVERTERS handles, each with its kind."""
    text = PAGE.read_text()
    table = text.split("## Every Keras layer type with a converter", 1)[1]
    rows = dict(re.findall(r"^\| `(\w+)` \| (.+?) \|$", table, re.M))
    registry = {t.__name__: c for t, c in CONVERTERS.items() if issubclass(t, keras.layers.Layer)}
    assert sorted(rows) == sorted(registry), (sorted(set(rows) ^ set(registry)))
    wrong = [name for name, kind in rows.items() if kind.startswith("recurrent") != registry[name].recurrent]
    assert not wrong, f"docs/layers.md gives these the wrong kind: {wrong}"
