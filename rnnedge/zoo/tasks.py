"""How each zoo model is trained, on data that ships with the project or its dependencies:
sklearn's digits, the airline passengers series (package data), and synthetic tasks. Fixed
seeds; a few seconds each on a CPU."""

from __future__ import annotations

import csv
import importlib.resources
from dataclasses import dataclass

import keras
import numpy as np

from rnnedge import metrics

_RNN_LAYERS = {
    "SimpleRNN": keras.layers.SimpleRNN,
    "LSTM": keras.layers.LSTM,
    "GRU": keras.layers.GRU,
}

SEED = 1234


@dataclass(frozen=True)
class _Trained:
    model: keras.Model
    x_test: tuple[np.ndarray, ...]
    y_test: np.ndarray
    baseline: float


def _fit(model, x, y, *, epochs: int, batch_size: int, lr: float, loss: str) -> None:
    """Adam with a cosine-decayed learning rate (a stable end point in few steps), no XLA."""
    n = len(x[0] if isinstance(x, list) else x)
    steps = epochs * -(-n // batch_size)
    optimizer = keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(lr, steps))
    # XLA compiling costs more than it saves for a few hundred steps of a tiny model.
    model.compile(optimizer=optimizer, loss=loss, jit_compile=False)
    model.fit(x, y, epochs=epochs, batch_size=batch_size, shuffle=True, verbose=0)


def _digits_split():
    """sklearn's digits (1797 images, 8 rows of 8 pixels in [0, 1]), split 1408 / 389. 1408 = 22
    batches of 64: a last, smaller batch would make Keras trace the step again."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)
    return train_test_split(x, digits.target.astype(np.int32), train_size=1408, stratify=digits.target,
                            random_state=0)


def _train_digits(cell: str) -> _Trained:
    x_train, x_test, y_train, y_test = _digits_split()
    rnn = _RNN_LAYERS[cell]
    model = keras.Sequential(
        [
            keras.Input(shape=(8, 8), name="rows"),
            rnn(32, return_sequences=True, name="rnn_1"),
            keras.layers.Dropout(0.1, name="dropout_1"),
            rnn(32, name="rnn_2"),
            keras.layers.Dropout(0.1, name="dropout_2"),
            keras.layers.Dense(10, activation="softmax", name="digit"),
        ],
        name=f"digits_{cell.lower()}",
    )
    _fit(model, x_train, y_train, epochs=8, batch_size=64, lr=0.02,
         loss="sparse_categorical_crossentropy")
    return _Trained(model, (x_test,), y_test, metrics.majority_accuracy(y_test))


_LOOK_BACK = 12
_AIRLINE_TEST_WINDOWS = 24


def _airline_series() -> np.ndarray:
    text = importlib.resources.files("rnnedge").joinpath("data/airline-passengers.csv").read_text()
    rows = list(csv.DictReader(text.splitlines()))
    return np.array([float(r["Passengers"]) for r in rows])


# Airline passengers grow multiplicatively (season x level), and the test years lie above every
# training value. Training windows are therefore shown again rescaled by a random factor (in
# passengers, before min-max scaling), which teaches the model levels it has not seen.
_AIRLINE_COPIES = 8
_AIRLINE_LR = {"SimpleRNN": 0.01, "LSTM": 0.04, "GRU": 0.04}


def _train_airline(cell: str) -> _Trained:
    series = _airline_series()  # 144 months, 1949-01 .. 1960-12
    n_windows = len(series) - _LOOK_BACK
    n_train = n_windows - _AIRLINE_TEST_WINDOWS
    low, high = series[: n_train + _LOOK_BACK].min(), series[: n_train + _LOOK_BACK].max()
    windows = np.stack([series[i : i + _LOOK_BACK + 1] for i in range(n_windows)])  # + target
    train, test = windows[:n_train], windows[n_train:]
    rng = np.random.default_rng(SEED)
    factors = rng.uniform(0.75, 1.5, n_train * (_AIRLINE_COPIES - 1))
    train = np.concatenate([train] * _AIRLINE_COPIES) * np.r_[np.ones(n_train), factors][:, None]
    train = ((train - low) / (high - low)).astype(np.float32)
    test = ((test - low) / (high - low)).astype(np.float32)
    x_train, y_train = train[:, :_LOOK_BACK, None], train[:, _LOOK_BACK]
    x_test, y_test = test[:, :_LOOK_BACK, None], test[:, _LOOK_BACK]

    inputs = keras.Input(shape=(_LOOK_BACK, 1), name="window")
    hidden = _RNN_LAYERS[cell](32, name="rnn")(inputs)
    outputs = keras.layers.Dense(1, name="next_month")(hidden)
    model = keras.Model(inputs, outputs, name=f"airline_{cell.lower()}")
    _fit(model, x_train, y_train, epochs=15, batch_size=32, lr=_AIRLINE_LR[cell], loss="mse")
    naive = metrics.rmse(x_test[:, -1, 0], y_test)  # next month = this month
    return _Trained(model, (x_test,), y_test, naive)


_EVENT_BINS = 40
_EVENT_CENTERS = (7.0, 15.0, 23.0, 31.0)


def _events_data(rng: np.random.Generator, n: int, frames: int) -> tuple[np.ndarray, np.ndarray]:
    """Noisy spectrogram-like frames with bursts of energy in overlapping class bands."""
    bins = np.arange(_EVENT_BINS)
    bands = np.stack([np.exp(-0.5 * ((bins - c) / 3.0) ** 2) for c in _EVENT_CENTERS])
    x = np.abs(rng.normal(0.0, 0.3, size=(n, frames, _EVENT_BINS)))
    y = np.zeros((n, frames, len(_EVENT_CENTERS)), dtype=np.float32)
    for i in range(n):
        for c in range(len(_EVENT_CENTERS)):
            for _ in range(rng.poisson(frames / 48)):  # ~1.3 events per class in 64 frames
                length = int(rng.integers(4, 17))
                start = int(rng.integers(0, frames - length + 1))
                y[i, start : start + length, c] = 1.0
                x[i, start : start + length] += rng.uniform(0.4, 1.0) * bands[c]
    return x.astype(np.float32), y


def _train_events(cell: str) -> _Trained:
    rng = np.random.default_rng(SEED)
    # Short clips train faster; the test clips are longer (the time axis is dynamic).
    x_train, y_train = _events_data(rng, 512, 16)
    x_test, y_test = _events_data(rng, 96, 64)
    rnn = _RNN_LAYERS[cell]
    inputs = keras.Input(shape=(None, _EVENT_BINS), name="frames")
    hidden = rnn(24, return_sequences=True, name="rnn_1")(inputs)
    hidden = rnn(24, return_sequences=True, name="rnn_2")(hidden)
    outputs = keras.layers.TimeDistributed(
        keras.layers.Dense(len(_EVENT_CENTERS), activation="sigmoid"), name="events"
    )(hidden)
    model = keras.Model(inputs, outputs, name=f"events_{cell.lower()}")
    _fit(model, x_train, y_train, epochs=6, batch_size=32, lr=0.02, loss="binary_crossentropy")
    all_negative, all_positive = np.zeros_like(y_test), np.ones_like(y_test)
    baseline = max(metrics.f1(all_negative, y_test), metrics.f1(all_positive, y_test))
    return _Trained(model, (x_test,), y_test, baseline)


# Keyword spotting: 40 log-mel-like bins per 10 ms frame; three keywords are the same three bands
# in different orders (3 frames each), so telling them apart takes the order, not the energy.
_KWS_BINS = 40
_KWS_WORDS = ((6, 20, 34), (34, 20, 6), (20, 6, 34))
_KWS_HOLD = 10  # frames after a keyword's end labelled with it (a detector answers once it has heard it)


def _kws_data(rng: np.random.Generator, n: int, frames: int) -> tuple[np.ndarray, np.ndarray]:
    """Noisy log-mel-like frames with keywords spoken at random times; y: per-frame class, 0 = none."""
    bins = np.arange(_KWS_BINS)
    band = lambda c: np.exp(-0.5 * ((bins - c) / 2.5) ** 2)  # noqa: E731
    x = rng.normal(0.0, 0.35, size=(n, frames, _KWS_BINS))
    y = np.zeros((n, frames), dtype=np.int32)
    for i in range(n):
        t = int(rng.integers(0, 12))
        while t + 9 + _KWS_HOLD <= frames:
            word = int(rng.integers(len(_KWS_WORDS)))
            gain = rng.uniform(0.8, 1.4)
            for j, centre in enumerate(_KWS_WORDS[word]):
                x[i, t + 3 * j: t + 3 * j + 3] += gain * band(centre)
            y[i, t + 9: t + 9 + _KWS_HOLD] = word + 1
            t += 9 + _KWS_HOLD + int(rng.integers(4, 24))
    return x.astype(np.float32), y


def _kws_crnn(inputs):
    """kws_streaming's CRNN in small: Conv2D over (time, frequency) with causal time padding
    (ZeroPadding2D on the past, then 'valid'), Reshape((-1, f * c)) keeping time, a GRU."""
    L = keras.layers
    hidden = L.Reshape((-1, _KWS_BINS, 1), name="frames")(inputs)
    for i in (1, 2):
        hidden = L.ZeroPadding2D(((2, 0), (1, 1)), name=f"past_{i}")(hidden)
        hidden = L.Conv2D(16, (3, 3), strides=(1, 2), activation="relu", name=f"conv_{i}")(hidden)
    hidden = L.Reshape((-1, 10 * 16), name="per_frame")(hidden)
    return L.GRU(128, return_sequences=True, name="rnn")(hidden)


def _kws_tcresnet(inputs):
    """A TC-ResNet with no recurrent layer: the mel bins as channels, causal Conv1D residual blocks
    (ZeroPadding1D on the past, then 'valid') dilated 1, 2, 4, 8 (31 frames of context)."""
    L = keras.layers
    hidden = L.Conv1D(24, 3, activation="relu", name="conv_0")(L.ZeroPadding1D((2, 0), name="past_0")(inputs))
    for d in (1, 2, 4, 8):
        branch = L.ZeroPadding1D((2 * d, 0), name=f"past_{d}")(hidden)
        branch = L.Conv1D(24, 3, dilation_rate=d, name=f"conv_{d}")(branch)
        branch = L.BatchNormalization(name=f"bn_{d}")(branch)
        hidden = L.ReLU(name=f"relu_{d}")(L.Add(name=f"residual_{d}")([hidden, branch]))
    return hidden


def _train_kws(cell: str) -> _Trained:
    """A streaming keyword spotter, a softmax per frame: "GRU" (a causal Conv1D front end, two
    GRUs), "CRNN(GRU)" (a Conv2D front end, a GRU) or "TC-ResNet" (convolutional, no recurrent layer)."""
    rng = np.random.default_rng(SEED)
    x_train, y_train = _kws_data(rng, 512, 64)
    x_test, y_test = _kws_data(rng, 96, 100)
    inputs = keras.Input(shape=(None, _KWS_BINS), name="mel")
    if cell == "CRNN(GRU)":
        hidden, name, epochs = _kws_crnn(inputs), "kws_crnn", 5
    elif cell == "TC-ResNet":
        hidden, name, epochs = _kws_tcresnet(inputs), "kws_tcresnet", 8
    else:
        rnn = _RNN_LAYERS[cell]
        hidden = keras.layers.Conv1D(32, 5, padding="causal", activation="relu", name="front")(inputs)
        hidden = rnn(96, return_sequences=True, name="rnn_1")(hidden)
        hidden = rnn(96, return_sequences=True, name="rnn_2")(hidden)
        name, epochs = f"kws_{cell.lower()}", 8
    outputs = keras.layers.Dense(len(_KWS_WORDS) + 1, activation="softmax", name="keyword")(hidden)
    model = keras.Model(inputs, outputs, name=name)
    _fit(model, x_train, y_train, epochs=epochs, batch_size=32, lr=0.01, loss="sparse_categorical_crossentropy")
    return _Trained(model, (x_test,), y_test, metrics.majority_accuracy(y_test.reshape(-1)))


_VOCAB = 30
_MAX_TOKENS = 20
_TOKEN_A, _TOKEN_B = 1, 2  # e.g. "not" and "good"


def _sentiment_data(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Right-padded sequences of 5..20 tokens, A and B once each; label = A comes before B."""
    x = np.zeros((n, _MAX_TOKENS), dtype=np.int32)
    y = np.zeros(n, dtype=np.float32)
    for i in range(n):
        length = int(rng.integers(5, _MAX_TOKENS + 1))
        x[i, :length] = rng.integers(3, _VOCAB, size=length)
        a, b = rng.choice(length, size=2, replace=False)
        x[i, a], x[i, b] = _TOKEN_A, _TOKEN_B
        y[i] = float(a < b)
    return x, y


def _train_sentiment(cell: str) -> _Trained:  # cell is always "Bidirectional(LSTM)"
    rng = np.random.default_rng(SEED)
    x_train, y_train = _sentiment_data(rng, 640)
    x_test, y_test = _sentiment_data(rng, 400)
    inputs = keras.Input(shape=(_MAX_TOKENS,), dtype="int32", name="tokens")
    embedded = keras.layers.Embedding(_VOCAB, 8, mask_zero=True, name="embedding")(inputs)
    hidden = keras.layers.Bidirectional(keras.layers.LSTM(16), name="bilstm")(embedded)
    outputs = keras.layers.Dense(1, activation="sigmoid", name="positive")(hidden)
    model = keras.Model(inputs, outputs, name="sentiment_bilstm")
    _fit(model, x_train, y_train, epochs=4, batch_size=64, lr=0.02, loss="binary_crossentropy")
    return _Trained(model, (x_test,), y_test, metrics.majority_accuracy(y_test.astype(np.int32)))


_DIGITS_LEN = 5
_START = 10  # the decoder's start token, after the digits 0..9


def _seq2seq_data(rng: np.random.Generator, n: int):
    digits = rng.integers(0, 10, size=(n, _DIGITS_LEN))
    target = digits[:, ::-1]
    shifted = np.concatenate([np.full((n, 1), _START), target[:, :-1]], axis=1)
    encoder_in = np.eye(10, dtype=np.float32)[digits]
    decoder_in = np.eye(11, dtype=np.float32)[shifted]
    return encoder_in, decoder_in, target.astype(np.int32)


def _train_seq2seq(cell: str) -> _Trained:
    rng = np.random.default_rng(SEED)
    enc_train, dec_train, y_train = _seq2seq_data(rng, 2048)
    enc_test, dec_test, y_test = _seq2seq_data(rng, 400)
    rnn = _RNN_LAYERS[cell]
    encoder_in = keras.Input(shape=(None, 10), name="encoder_digits")
    decoder_in = keras.Input(shape=(None, 11), name="decoder_tokens")
    _, *states = rnn(32, return_state=True, name="encoder")(encoder_in)
    decoder = rnn(32, return_sequences=True, return_state=True, name="decoder")
    sequence, *decoder_states = decoder(decoder_in, initial_state=states)
    probs = keras.layers.Dense(10, activation="softmax", name="digit")(sequence)
    trainer = keras.Model([encoder_in, decoder_in], probs, name=f"seq2seq_{cell.lower()}_train")
    _fit(trainer, [enc_train, dec_train], y_train, epochs=4, batch_size=64, lr=0.02,
         loss="sparse_categorical_crossentropy")
    # Same layers (same weights), with the decoder's final state(s) as extra outputs.
    model = keras.Model(
        [encoder_in, decoder_in], [probs, *decoder_states], name=f"seq2seq_{cell.lower()}"
    )
    return _Trained(model, (enc_test, dec_test), y_test, metrics.majority_accuracy(y_test))


def _cells_data(rng: np.random.Generator, n: int, steps: int) -> tuple[np.ndarray, np.ndarray]:
    x = rng.uniform(-1.0, 1.0, size=(n, steps, 1))
    delayed = np.concatenate([np.zeros((n, 3, 1)), x[:, :-3]], axis=1)
    return x.astype(np.float32), (x**2 + delayed).astype(np.float32)


def _train_cells(cell: str) -> _Trained:
    rng = np.random.default_rng(SEED)
    x_train, y_train = _cells_data(rng, 1024, 12)
    x_test, y_test = _cells_data(rng, 128, 32)  # longer than training: the time axis is dynamic
    inputs = keras.Input(shape=(None, 1), name="x")
    cells = keras.layers.StackedRNNCells(
        [keras.layers.LSTMCell(4, name="cell_1"), keras.layers.LSTMCell(7, name="cell_2")],
        name="stacked_cells",
    )
    rnn = keras.layers.RNN(cells, return_sequences=True, return_state=True, name="rnn")
    sequence, *states = rnn(inputs)
    y = keras.layers.TimeDistributed(keras.layers.Dense(1), name="y")(sequence)
    trainer = keras.Model(inputs, y, name="cells_lstm_train")
    _fit(trainer, x_train, y_train, epochs=16, batch_size=64, lr=0.05, loss="mse")
    # StackedRNNCells returns its states nested per cell ([h1, c1], [h2, c2]); flatten them so the
    # model's outputs are [y, h1, c1, h2, c2] in Keras order.
    model = keras.Model(inputs, [y, *keras.tree.flatten(states)], name="cells_lstm")
    baseline = metrics.rmse(np.full(y_test.shape, y_train.mean()), y_test)
    return _Trained(model, (x_test,), y_test, baseline)


def _train_digits_conv(cell: str) -> _Trained:
    """A convolutional front end, then a recurrent layer over the image's rows (a CRNN in small)."""
    x_train, x_test, y_train, y_test = _digits_split()
    x_train, x_test = x_train[..., None], x_test[..., None]  # (n, 8, 8, 1): one channel
    inputs = keras.Input(shape=(8, 8, 1), name="image")
    features = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv")(inputs)
    rows = keras.layers.Reshape((8, 8 * 8), name="rows")(features)  # 8 rows x (8 columns x 8 filters)
    hidden = _RNN_LAYERS[cell](32, name="rnn")(rows)
    outputs = keras.layers.Dense(10, activation="softmax", name="digit")(hidden)
    model = keras.Model(inputs, outputs, name=f"digits_conv_{cell.lower()}")
    _fit(model, x_train, y_train, epochs=8, batch_size=64, lr=0.01, loss="sparse_categorical_crossentropy")
    return _Trained(model, (x_test,), y_test, metrics.majority_accuracy(y_test))


def _reviews_data(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The sentiment task's token lists (A before B?), padded the way `keras.utils.pad_sequences`
    pads by default: zeros at the front."""
    lists, y = [], np.zeros(n, dtype=np.float32)
    for i in range(n):
        length = int(rng.integers(5, _MAX_TOKENS + 1))
        tokens = rng.integers(3, _VOCAB, size=length)
        a, b = rng.choice(length, size=2, replace=False)
        tokens[a], tokens[b] = _TOKEN_A, _TOKEN_B
        lists.append(tokens.tolist())
        y[i] = float(a < b)
    return keras.utils.pad_sequences(lists, maxlen=_MAX_TOKENS).astype(np.int32), y


def _train_reviews(cell: str) -> _Trained:
    rng = np.random.default_rng(SEED + 1)
    x_train, y_train = _reviews_data(rng, 640)
    x_test, y_test = _reviews_data(rng, 400)
    inputs = keras.Input(shape=(None,), dtype="int32", name="tokens")
    embedded = keras.layers.Embedding(_VOCAB, 8, mask_zero=True, name="embedding")(inputs)
    hidden = _RNN_LAYERS[cell](24, name="rnn")(embedded)
    outputs = keras.layers.Dense(1, activation="sigmoid", name="positive")(hidden)
    model = keras.Model(inputs, outputs, name=f"reviews_{cell.lower()}")
    _fit(model, x_train, y_train, epochs=6, batch_size=64, lr=0.02, loss="binary_crossentropy")
    return _Trained(model, (x_test,), y_test, metrics.majority_accuracy(y_test.astype(np.int32)))


TRAINERS = {
    "digits": _train_digits,
    "airline": _train_airline,
    "events": _train_events,
    "sentiment": _train_sentiment,
    "seq2seq": _train_seq2seq,
    "cells": _train_cells,
    "digits-conv": _train_digits_conv,
    "reviews": _train_reviews,
    "kws": _train_kws,
}
