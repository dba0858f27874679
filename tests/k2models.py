"""A Keras 2 suite built with tf_keras: the recurrent examples of the Keras 2 examples folder
(tiny, random weights), plus wrappers, masks, states and arguments Keras 3 no longer knows.
Builders return a tf_keras model; `build` saves it both ways."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _k2():
    import tf_keras

    return tf_keras


def subclassed_gru():
    """A subclassed tf_keras model (GRU(4), then Dense(2)): no configuration to rebuild it from."""
    tf_keras = _k2()

    class Net(tf_keras.Model):
        def __init__(self):
            super().__init__()
            self.gru, self.head = tf_keras.layers.GRU(4), tf_keras.layers.Dense(2)

        def call(self, x):
            return self.head(self.gru(x))

    return Net()


def addition_rnn():
    k, L = _k2(), _k2().layers
    return k.Sequential([L.LSTM(8, input_shape=(7, 12)), L.RepeatVector(4), L.LSTM(8, return_sequences=True),
                         L.TimeDistributed(L.Dense(12, activation="softmax"))])


def imdb_lstm():
    k, L = _k2(), _k2().layers
    return k.Sequential([L.Embedding(50, 8, input_length=10), L.LSTM(6, dropout=0.2, recurrent_dropout=0.2),
                         L.Dense(1, activation="sigmoid")])


def imdb_bidirectional():
    k, L = _k2(), _k2().layers
    return k.Sequential([L.Embedding(50, 8, input_length=10), L.Bidirectional(L.LSTM(6)), L.Dropout(0.5),
                         L.Dense(1, activation="sigmoid")])


def imdb_cnn_lstm():
    k, L = _k2(), _k2().layers
    return k.Sequential([L.Embedding(50, 8, input_length=12), L.Dropout(0.25),
                         L.Conv1D(8, 3, padding="valid", activation="relu"), L.MaxPooling1D(2), L.LSTM(6),
                         L.Dense(1, activation="sigmoid")])


def text_generation():
    k, L = _k2(), _k2().layers
    return k.Sequential([L.LSTM(16, input_shape=(10, 20)), L.Dense(20, activation="softmax")])


def _seq2seq_layers():
    L = _k2().layers
    encoder_in, decoder_in = L.Input((None, 5), name="encoder_in"), L.Input((None, 6), name="decoder_in")
    encoder = L.LSTM(8, return_state=True, name="encoder")
    decoder = L.LSTM(8, return_sequences=True, return_state=True, name="decoder")
    dense = L.Dense(6, activation="softmax", name="dense")
    return encoder_in, decoder_in, encoder, decoder, dense


def seq2seq_training():
    k = _k2()
    encoder_in, decoder_in, encoder, decoder, dense = _seq2seq_layers()
    _, h, c = encoder(encoder_in)
    y, _, _ = decoder(decoder_in, initial_state=[h, c])
    return k.Model([encoder_in, decoder_in], dense(y))


def seq2seq_inference_encoder():
    k = _k2()
    encoder_in, _, encoder, _, _ = _seq2seq_layers()
    _, h, c = encoder(encoder_in)
    return k.Model(encoder_in, [h, c])


def seq2seq_inference_decoder():
    """The classic inference decoder: states in (extra inbound tensors of the LSTM call) and out."""
    k, L = _k2(), _k2().layers
    _, decoder_in, _, decoder, dense = _seq2seq_layers()
    h_in, c_in = L.Input((8,), name="h_in"), L.Input((8,), name="c_in")
    y, h, c = decoder(decoder_in, initial_state=[h_in, c_in])
    return k.Model([decoder_in, h_in, c_in], [dense(y), h, c])


def stateful_lstm():
    k, L = _k2(), _k2().layers
    return k.Sequential([L.LSTM(6, stateful=True, return_sequences=True, batch_input_shape=(2, 5, 1)),
                         L.LSTM(4, stateful=True), L.Dense(1)])


def irnn():
    k, L = _k2(), _k2().layers
    return k.Sequential([L.SimpleRNN(8, activation="relu", input_shape=(12, 1),
                                     kernel_initializer=k.initializers.RandomNormal(stddev=0.1),
                                     recurrent_initializer=k.initializers.Identity(gain=1.0)),
                         L.Dense(10, activation="softmax")])


def hierarchical_rnn():
    k, L = _k2(), _k2().layers
    x = L.Input((4, 5, 3))
    rows = L.TimeDistributed(L.LSTM(6))(x)
    return k.Model(x, L.Dense(3, activation="softmax")(L.LSTM(6)(rows)))


def babi_rnn():
    k, L = _k2(), _k2().layers
    story, question = L.Input((12,), dtype="int32"), L.Input((4,), dtype="int32")
    encoded_story = L.Dropout(0.3)(L.Embedding(30, 8)(story))
    encoded_question = L.RepeatVector(12)(L.LSTM(8)(L.Dropout(0.3)(L.Embedding(30, 8)(question))))
    merged = L.LSTM(8)(L.add([encoded_story, encoded_question]))
    return k.Model([story, question], L.Dense(30, activation="softmax")(L.Dropout(0.3)(merged)))


def masked_gru_v1():
    """GRU reset_after=False (the Keras 1/2 GRU) behind Masking: tf2onnx makes it a Loop."""
    k, L = _k2(), _k2().layers
    return k.Sequential([L.Masking(0.0, input_shape=(None, 3)), L.GRU(5, reset_after=False, return_sequences=True),
                         L.GRU(4, reset_after=False)])


def implementations():
    """implementation=1 and 2, recurrent_dropout on a SimpleRNN (tf2onnx: Loop), a masked
    Bidirectional GRU over an Embedding(mask_zero=True)."""
    k, L = _k2(), _k2().layers
    x = L.Input((None,), dtype="int32")
    e = L.Embedding(20, 6, mask_zero=True)(x)
    a = L.LSTM(5, implementation=1, return_sequences=True)(e)
    b = L.Bidirectional(L.GRU(4, implementation=1, return_sequences=True), merge_mode="sum")(a)
    c = L.SimpleRNN(3, recurrent_dropout=0.3, dropout=0.1, go_backwards=True)(b)
    return k.Model(x, c)


def conv_lstm():
    k, L = _k2(), _k2().layers
    return k.Sequential([L.ConvLSTM2D(2, 3, input_shape=(3, 6, 6, 1)), L.Flatten(), L.Dense(1)])


def conv_lstm_sequences():
    """Stacked ConvLSTM2D over frames of any count ('same', strided and go_backwards), Keras 2's default
    hard_sigmoid gates, a per-step Dense between them."""
    k, L = _k2(), _k2().layers
    return k.Sequential([L.ConvLSTM2D(3, 3, padding="same", return_sequences=True, input_shape=(None, 6, 5, 2)),
                         L.Dense(4, activation="tanh"),
                         L.ConvLSTM2D(2, (3, 2), strides=(2, 1), padding="same", go_backwards=True),
                         L.Flatten(), L.Dense(1)])


# name -> (builder, fused recurrent nodes in the export: one per layer, a Bidirectional's two
# directions in one node)
SUITE = {
    "addition_rnn": (addition_rnn, 2),
    "imdb_lstm": (imdb_lstm, 1),
    "imdb_bidirectional": (imdb_bidirectional, 1),
    "imdb_cnn_lstm": (imdb_cnn_lstm, 1),
    "text_generation": (text_generation, 1),
    "seq2seq_training": (seq2seq_training, 2),
    "seq2seq_inference_encoder": (seq2seq_inference_encoder, 1),
    "seq2seq_inference_decoder": (seq2seq_inference_decoder, 1),
    "stateful_lstm": (stateful_lstm, 2),
    "irnn": (irnn, 1),
    "hierarchical_rnn": (hierarchical_rnn, 2),
    "babi_rnn": (babi_rnn, 2),
    "masked_gru_v1": (masked_gru_v1, 2),
    "implementations": (implementations, 3),
}


def build(name: str, folder: Path, formats=("h5", "savedmodel")):
    """The model (random weights, biases too, seeded) saved as `name.h5` and as the SavedModel
    folder `name` under `folder`."""
    _k2().utils.set_random_seed(0)
    model = (SUITE[name][0] if name in SUITE else globals()[name])()
    rng = np.random.default_rng(0)
    model.set_weights([w if w.ndim != 1 else rng.normal(0, 0.2, w.shape).astype(w.dtype) for w in model.get_weights()])
    if "h5" in formats:
        model.save(folder / f"{name}.h5")
    if "savedmodel" in formats:
        model.save(folder / name, save_format="tf")
    return model
