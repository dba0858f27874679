"""The reference zoo: fifteen small Keras 3 recurrent models, trained for real on data that ships
with the project (or its dependencies), each with its test split, its score and a trivial baseline.

    >>> from rnnedge import zoo
    >>> m = zoo.load("events-gru")
    >>> m.keras_score, m.baseline, m.beats_baseline()

Every model trains in a few seconds on a CPU with fixed seeds, and is cached in process and on
disk (`~/.cache/rnnedge/zoo`, file names carry `ZOO_VERSION`). Nothing is downloaded.

Tasks (the metric of each, and what its baseline is):

- digits:    sklearn's 8x8 digits read row by row (8 steps x 8 features in [0, 1]); accuracy;
             baseline = the most frequent class of the test split.
- airline:   monthly airline passengers 1949-1960, one step ahead from a 12-month window; RMSE in
             SCALED units (min-max fit on the training part: 1.0 = 401 thousand passengers);
             baseline = the naive forecast (the window's last value) on the same test windows.
- events:    synthetic spectrogram-like frames (time x 40 bins), 4 overlapping event classes
             labelled per frame; micro F1 at 0.5; baseline = the better of all-negative and
             all-positive.
- sentiment: synthetic token sequences (right-padded with 0) whose label is whether token 1 comes
             before token 2 (both appear exactly once, so word counts say nothing); accuracy;
             baseline = the most frequent class of the test split.
- seq2seq:   an encoder-decoder that reverses 5 digits (teacher forcing); the returned model also
             outputs the decoder's final state(s); per-token accuracy; baseline = the most frequent
             token of the test split.
- cells:     `RNN(StackedRNNCells([LSTMCell(4), LSTMCell(7)]))` learning y(t) = x(t)^2 + x(t-3);
             outputs y and the four states; RMSE; baseline = predicting the training mean of y.
- digits-conv: the digits as 8x8x1 images through Conv2D(8, 3x3), reshaped into 8 rows of 64
             features for a GRU (a CRNN in small); accuracy; baseline as digits.
- reviews:   the sentiment task fed as `keras.utils.pad_sequences` pads by default (zeros at the
             front), through Embedding(mask_zero=True) and an LSTM; accuracy; baseline as sentiment.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import csv
import importlib.resources
import threading
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import keras
import numpy as np

from rnnedge import metrics
from rnnedge.errors import RnnEdgeError

# Bump when training code, data or hyper-parameters change: old cache files are then ignored.
ZOO_VERSION = 2

NAMES: tuple[str, ...] = (
    "digits-simplernn",
    "digits-lstm",
    "digits-gru",
    "airline-simplernn",
    "airline-lstm",
    "airline-gru",
    "events-simplernn",
    "events-gru",
    "events-lstm",
    "sentiment-bilstm",
    "seq2seq-lstm",
    "seq2seq-gru",
    "cells-lstm",
    "digits-conv-gru",
    "reviews-lstm",
)

# name -> (task, cell)
_SPECS: dict[str, tuple[str, str]] = {
    "digits-simplernn": ("digits", "SimpleRNN"),
    "digits-lstm": ("digits", "LSTM"),
    "digits-gru": ("digits", "GRU"),
    "airline-simplernn": ("airline", "SimpleRNN"),
    "airline-lstm": ("airline", "LSTM"),
    "airline-gru": ("airline", "GRU"),
    "events-simplernn": ("events", "SimpleRNN"),
    "events-gru": ("events", "GRU"),
    "events-lstm": ("events", "LSTM"),
    "sentiment-bilstm": ("sentiment", "Bidirectional(LSTM)"),
    "seq2seq-lstm": ("seq2seq", "LSTM"),
    "seq2seq-gru": ("seq2seq", "GRU"),
    "cells-lstm": ("cells", "StackedRNNCells(LSTMCell)"),
    "digits-conv-gru": ("digits-conv", "GRU"),
    "reviews-lstm": ("reviews", "LSTM"),
}

_METRICS: dict[str, str] = {
    "digits": "accuracy",
    "airline": "rmse",
    "events": "f1",
    "sentiment": "accuracy",
    "seq2seq": "accuracy",
    "cells": "rmse",
    "digits-conv": "accuracy",
    "reviews": "accuracy",
}

_RNN_LAYERS = {
    "SimpleRNN": keras.layers.SimpleRNN,
    "LSTM": keras.layers.LSTM,
    "GRU": keras.layers.GRU,
}

_SEED = 1234
_DEFAULT_CACHE = Path("~/.cache/rnnedge/zoo")


# --------------------------------------------------------------------------------------- metrics


# tasks whose first output holds class probabilities on its last axis
_CLASS_PROBABILITY_TASKS = {"digits", "digits-conv", "seq2seq"}


# ------------------------------------------------------------------------------------ the result


def _unknown(name: str) -> RnnEdgeError:
    return RnnEdgeError(f"unknown zoo model {name!r}; expected one of: {', '.join(NAMES)}")


@dataclass(frozen=True)
class ZooModel:
    """A trained zoo model with its test split, its score and the score of a trivial baseline."""

    name: str
    task: str
    cell: str
    metric: str
    model: keras.Model
    x_test: tuple[np.ndarray, ...]  # one array per model.inputs, in order, in the dtype it expects
    y_test: np.ndarray
    keras_score: float
    baseline: float

    def __post_init__(self):
        if self.name not in _SPECS:
            raise _unknown(self.name)
        if (self.task, self.cell) != _SPECS[self.name] or self.metric != _METRICS[self.task]:
            raise RnnEdgeError(
                f"zoo model {self.name!r} must have task/cell/metric "
                f"{_SPECS[self.name] + (_METRICS[_SPECS[self.name][0]],)}, "
                f"got {(self.task, self.cell, self.metric)}"
            )
        if len(self.x_test) != len(self.model.inputs):
            raise RnnEdgeError(
                f"zoo model {self.name!r} has {len(self.model.inputs)} inputs "
                f"but x_test holds {len(self.x_test)} arrays"
            )

    @property
    def higher_is_better(self) -> bool:
        return self.metric != "rmse"

    def score(self, outputs) -> float:
        """The task metric of raw model outputs against `y_test`.

        `outputs` is one array, or the list of the model's outputs in Keras' flattened order
        (Keras `predict` or onnxruntime `run`); only the first (the prediction) is scored, the
        state outputs of seq2seq and cells models are ignored.
        """
        main = np.asarray(outputs[0] if isinstance(outputs, (list, tuple)) else outputs)
        y = self.y_test
        if self.task in _CLASS_PROBABILITY_TASKS:
            fits, expected = main.shape[:-1] == y.shape, f"{y.shape} + (classes,)"
        else:
            fits, expected = main.size == y.size and main.shape[:1] == y.shape[:1], f"{y.shape}"
        if not fits:
            raise RnnEdgeError(
                f"{self.name}: expected the first output for the {len(y)} test samples shaped "
                f"{expected}, got {main.shape}; pass the outputs of the model run on x_test"
            )
        return metrics.score(self.metric, main, y)

    def beats_baseline(self) -> bool:
        """True when the model is strictly better than the trivial baseline."""
        if self.higher_is_better:
            return self.keras_score > self.baseline
        return self.keras_score < self.baseline


# ------------------------------------------------------------------------------------- training


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
    rng = np.random.default_rng(_SEED)
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
    rng = np.random.default_rng(_SEED)
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
    rng = np.random.default_rng(_SEED)
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
    rng = np.random.default_rng(_SEED)
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
    rng = np.random.default_rng(_SEED)
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
    rng = np.random.default_rng(_SEED + 1)
    x_train, y_train = _reviews_data(rng, 640)
    x_test, y_test = _reviews_data(rng, 400)
    inputs = keras.Input(shape=(None,), dtype="int32", name="tokens")
    embedded = keras.layers.Embedding(_VOCAB, 8, mask_zero=True, name="embedding")(inputs)
    hidden = _RNN_LAYERS[cell](24, name="rnn")(embedded)
    outputs = keras.layers.Dense(1, activation="sigmoid", name="positive")(hidden)
    model = keras.Model(inputs, outputs, name=f"reviews_{cell.lower()}")
    _fit(model, x_train, y_train, epochs=6, batch_size=64, lr=0.02, loss="binary_crossentropy")
    return _Trained(model, (x_test,), y_test, metrics.majority_accuracy(y_test.astype(np.int32)))


_TRAINERS = {
    "digits": _train_digits,
    "airline": _train_airline,
    "events": _train_events,
    "sentiment": _train_sentiment,
    "seq2seq": _train_seq2seq,
    "cells": _train_cells,
    "digits-conv": _train_digits_conv,
    "reviews": _train_reviews,
}


# ------------------------------------------------------------------------------ loading, caching

_MEMORY: dict[tuple[str, str], ZooModel] = {}


def _predict(model: keras.Model, x_test: tuple[np.ndarray, ...]) -> list[np.ndarray]:
    """The model's outputs on the test split, flattened as `model.predict` returns them.

    One direct call: `predict` would first trace a predict function, which takes longer than
    the whole call on these small test splits. The numbers are the same.
    """
    outputs = model(list(x_test) if len(x_test) > 1 else x_test[0], training=False)
    return [keras.ops.convert_to_numpy(o) for o in keras.tree.flatten(outputs)]


def _train(name: str) -> ZooModel:
    task, cell = _SPECS[name]
    keras.utils.set_random_seed(_SEED)
    trained = _TRAINERS[task](cell)
    unscored = ZooModel(name, task, cell, _METRICS[task], trained.model, trained.x_test,
                        trained.y_test, keras_score=float("nan"), baseline=trained.baseline)
    return replace(unscored, keras_score=unscored.score(_predict(trained.model, trained.x_test)))


def _paths(name: str, cache_dir: Path) -> tuple[Path, Path]:
    stem = f"{name}.v{ZOO_VERSION}"
    return cache_dir / f"{stem}.keras", cache_dir / f"{stem}.npz"


def _write_atomically(path: Path, write) -> None:
    """Call write(temp_path) for a temp file beside `path`, then move it into place, so that a
    reader (another process) sees the old file or the new one, never half of one."""
    tmp = path.with_name(f".{path.stem}.{os.getpid()}-{threading.get_ident()}{path.suffix}")
    try:
        write(str(tmp))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _save(zm: ZooModel, cache_dir: Path) -> None:
    cache_dir.mkdir(parents=True, exist_ok=True)
    model_path, data_path = _paths(zm.name, cache_dir)
    arrays = {f"x_test_{i}": x for i, x in enumerate(zm.x_test)}
    arrays.update(y_test=zm.y_test, keras_score=np.float64(zm.keras_score),
                  baseline=np.float64(zm.baseline))

    def write_data(tmp):
        with open(tmp, "wb") as f:  # a file object: np.savez would append ".npz" to a name
            np.savez(f, **arrays)

    with warnings.catch_warnings():
        # Keras 3.15 saving TensorFlow variables under numpy 2 warns once per weight; not ours.
        warnings.filterwarnings("ignore", "__array__ implementation doesn't accept a copy keyword",
                                DeprecationWarning)
        _write_atomically(model_path, lambda tmp: zm.model.save(tmp))
    _write_atomically(data_path, write_data)  # written last: its presence marks a complete entry


def _read(name: str, cache_dir: Path) -> ZooModel | None:
    model_path, data_path = _paths(name, cache_dir)
    if not (model_path.is_file() and data_path.is_file()):
        return None
    task, cell = _SPECS[name]
    with np.load(data_path) as data:
        n_inputs = sum(key.startswith("x_test_") for key in data.files)
        x_test = tuple(data[f"x_test_{i}"] for i in range(n_inputs))
        y_test = data["y_test"]
        keras_score, baseline = float(data["keras_score"]), float(data["baseline"])
    model = keras.models.load_model(model_path)
    return ZooModel(name, task, cell, _METRICS[task], model, x_test, y_test, keras_score, baseline)


def load(name: str, cache_dir: str | Path | None = None, retrain: bool = False) -> ZooModel:
    """The zoo model `name`, trained on first use and cached in process and in `cache_dir`.

    `cache_dir` defaults to `~/.cache/rnnedge/zoo`; `retrain=True` ignores both caches and
    overwrites the files.
    """
    if name not in _SPECS:
        raise _unknown(name)
    folder = Path(cache_dir if cache_dir is not None else _DEFAULT_CACHE).expanduser().resolve()
    key = (name, str(folder))
    if not retrain:
        if key in _MEMORY:
            return _MEMORY[key]
        cached = _read(name, folder)
        if cached is not None:
            _MEMORY[key] = cached
            return cached
    zm = _train(name)
    _save(zm, folder)
    _MEMORY[key] = zm
    return zm
