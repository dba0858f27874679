"""Small Keras models built in code for the converter matrix (no training: random weights)."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import layers as L  # noqa: E402

CELLS = {"LSTM": (L.LSTM, L.LSTMCell), "GRU": (L.GRU, L.GRUCell), "SimpleRNN": (L.SimpleRNN, L.SimpleRNNCell)}
ONNX_OP = {"LSTM": "LSTM", "GRU": "GRU", "SimpleRNN": "RNN"}


def randomize(model: keras.Model, seed: int = 0, scale: float = 0.4) -> keras.Model:
    """Random weights everywhere (biases and normalisation statistics included), so every
    weight mapping is exercised; variances stay positive."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        weights = []
        for w in layer.weights:
            v = rng.normal(0, scale, size=w.shape).astype("float32")
            if "variance" in w.path:
                v = np.abs(v) + 0.5
            weights.append(v)
        if weights and not isinstance(layer, keras.Model):
            layer.set_weights(weights)
        elif isinstance(layer, keras.Model):
            randomize(layer, seed + 1, scale)
    return model


def seq_input(features=5, time=None, name="x", batch=None):
    if batch is not None:
        return keras.Input(batch_shape=(batch, time, features), name=name)
    return keras.Input((time, features), name=name)


def tokens_input(time=None, name="tokens"):
    return keras.Input((time,), dtype="int32", name=name)


def functional(inputs, outputs, name, scale: float = 0.4):
    return randomize(keras.Model(inputs, outputs, name=name), scale=scale)


def sequential(layers, name):
    return randomize(keras.Sequential(layers, name=name))
