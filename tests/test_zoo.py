"""The reference zoo: every model trains, beats its trivial baseline, survives the disk cache."""

from __future__ import annotations

import math
import shutil

import keras
import numpy as np
import pytest

from rnnedge import zoo
from rnnedge.errors import RnnEdgeError

# Model outputs: the prediction, then the states a seq2seq decoder or the stacked cells return.
OUTPUTS = {"seq2seq-lstm": 3, "seq2seq-gru": 2, "cells-lstm": 5}  # every other model: 1
DYNAMIC_TIME = {"events-simplernn", "events-gru", "events-lstm", "cells-lstm",
                "seq2seq-lstm", "seq2seq-gru", "reviews-lstm", "kws-gru", "kws-crnn", "kws-tcresnet"}
METRICS = {"digits": "accuracy", "airline": "rmse", "events": "f1", "sentiment": "accuracy",
           "seq2seq": "accuracy", "cells": "rmse", "digits-conv": "accuracy", "reviews": "accuracy",
           "kws": "accuracy"}


@pytest.mark.slow
@pytest.mark.parametrize("name", zoo.NAMES)
def test_zoo_model_trains_and_beats_its_baseline(name, zoo_cache):
    entry = zoo.load(name, cache_dir=zoo_cache)
    task = name.rsplit("-", 1)[0]  # the name is task-cell
    assert (entry.name, entry.task, entry.metric) == (name, task, METRICS[task])
    assert math.isfinite(entry.keras_score) and math.isfinite(entry.baseline)
    assert entry.beats_baseline(), (
        f"{name}: {entry.metric} {entry.keras_score:.4f} does not beat the baseline "
        f"{entry.baseline:.4f} ({'higher' if entry.higher_is_better else 'lower'} is better)"
    )
    assert entry.higher_is_better == (entry.metric != "rmse")

    model = entry.model
    assert len(model.outputs) == OUTPUTS.get(name, 1)
    assert len(entry.x_test) == len(model.inputs)
    for x, spec in zip(entry.x_test, model.inputs):
        assert x.dtype == np.dtype(spec.dtype), f"{name}: x_test {x.dtype} for a {spec.dtype} input"
        assert x.shape[0] == entry.y_test.shape[0]
    assert (model.inputs[0].shape[1] is None) == (name in DYNAMIC_TIME)
    assert zoo.load(name, cache_dir=zoo_cache) is entry  # cached in process


@pytest.mark.slow
@pytest.mark.parametrize("name", zoo.NAMES)
def test_zoo_model_reloads_from_disk_with_the_same_score(name, zoo_cache, tmp_path):
    trained = zoo.load(name, cache_dir=zoo_cache)
    files = sorted(p.name for p in zoo_cache.glob(f"{name}.*"))
    assert files == [f"{name}.v{zoo.ZOO_VERSION}.keras", f"{name}.v{zoo.ZOO_VERSION}.npz"]
    for f in files:
        shutil.copy(zoo_cache / f, tmp_path / f)

    reloaded = zoo.load(name, cache_dir=tmp_path)  # another folder: read from disk, not memory
    assert reloaded is not trained
    assert reloaded.keras_score == trained.keras_score and reloaded.baseline == trained.baseline
    for a, b in zip(reloaded.x_test, trained.x_test, strict=True):
        np.testing.assert_array_equal(a, b)
    # Plain numpy arrays, as onnxruntime returns them, states included.
    x = list(reloaded.x_test) if len(reloaded.x_test) > 1 else reloaded.x_test[0]
    arrays = [keras.ops.convert_to_numpy(o) for o in keras.tree.flatten(reloaded.model(x))]
    assert len(arrays) == OUTPUTS.get(name, 1)
    assert reloaded.score(arrays) == pytest.approx(trained.keras_score, abs=1e-6)
    assert reloaded.score(arrays[0]) == reloaded.score(arrays)


@pytest.mark.slow
def test_sentiment_test_split_is_right_padded_with_mixed_lengths(zoo_cache):
    tokens = zoo.load("sentiment-bilstm", cache_dir=zoo_cache).x_test[0]
    lengths = (tokens != 0).sum(axis=1)
    assert len(set(lengths.tolist())) > 5
    assert all((row[n:] == 0).all() and (row[:n] != 0).all() for row, n in zip(tokens, lengths))


@pytest.mark.slow
def test_reviews_test_split_is_front_padded_as_pad_sequences_pads(zoo_cache):
    tokens = zoo.load("reviews-lstm", cache_dir=zoo_cache).x_test[0]
    lengths = (tokens != 0).sum(axis=1)
    assert len(set(lengths.tolist())) > 5 and (lengths < tokens.shape[1]).any()
    assert all((row[: len(row) - n] == 0).all() and (row[len(row) - n:] != 0).all() for row, n in zip(tokens, lengths))


@pytest.mark.slow
def test_score_rejects_outputs_for_another_number_of_samples(zoo_cache):
    entry = zoo.load("airline-gru", cache_dir=zoo_cache)
    with pytest.raises(RnnEdgeError, match="24 test samples"):
        entry.score(np.zeros((3, 1), np.float32))
    with pytest.raises(RnnEdgeError, match="24 test samples"):
        entry.score([np.zeros((24, 2), np.float32)])


def test_unknown_name_lists_the_valid_ones(tmp_path):
    with pytest.raises(RnnEdgeError) as info:
        zoo.load("nope", cache_dir=tmp_path)
    message = str(info.value)
    assert "\n" not in message and "'nope'" in message
    assert all(name in message for name in zoo.NAMES)
    assert not any(tmp_path.iterdir())


def test_names_are_the_documented_eighteen_in_order():
    assert zoo.NAMES == (
        "digits-simplernn", "digits-lstm", "digits-gru",
        "airline-simplernn", "airline-lstm", "airline-gru",
        "events-simplernn", "events-gru", "events-lstm",
        "sentiment-bilstm", "seq2seq-lstm", "seq2seq-gru", "cells-lstm",
        "digits-conv-gru", "reviews-lstm", "kws-gru", "kws-crnn", "kws-tcresnet",
    )
