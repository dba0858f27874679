"""Custom layers and nested subclassed models that run recurrent layers inside their own call are
opened (rnnedge/exporter/load/inline.py): each recurrent layer they hold is fused, and the model as
given computes the truth, so parity shows the opened graph is the model."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from keras import layers as L

import rnnedge
from rnnedge.errors import RnnEdgeError
from rnnedge.pipeline import export
from tests.helpers import op_counts
from tests.kmodels import randomize


class Encoder(L.Layer):
    """An LSTM and a projection, in a layer of its own (the pattern of seq2seq tutorials)."""

    def __init__(self, units=6, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.lstm = L.LSTM(units, return_sequences=True)
        self.proj = L.Dense(units, activation="tanh")

    def call(self, x):
        return self.proj(self.lstm(x))

    def get_config(self):
        return {**super().get_config(), "units": self.units}


@keras.saving.register_keras_serializable(package="rnnedge_tests")
class MaskedBlock(L.Layer):
    """A Bidirectional GRU that takes the mask Keras passes (Embedding(mask_zero=True) before it)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.rnn = L.Bidirectional(L.GRU(3, return_sequences=True))

    def build(self, shape):
        self.rnn.build(shape)

    def call(self, x, mask=None):
        return self.rnn(x, mask=mask)

    def compute_mask(self, x, mask=None):
        return mask


class Seq2Seq(keras.Model):
    """A nested subclassed encoder model whose final states start the decoder."""

    class Coder(keras.Model):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.gru = L.GRU(5, return_sequences=True, return_state=True)

        def call(self, x, initial_state=None):
            return self.gru(x, initial_state=initial_state)

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.encoder, self.decoder, self.head = self.Coder(), self.Coder(), L.Dense(2)

    def call(self, inputs):
        source, target = inputs
        _, state = self.encoder(source)
        out, _ = self.decoder(target, initial_state=state)
        return self.head(out)


@keras.saving.register_keras_serializable(package="rnnedge_tests")
class TwoTensors(L.Layer):
    """A call of two tensors: Keras fills `x_mask` from x's mask (not `mask`, which stays None)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.gru = L.GRU(4, return_sequences=True)

    def call(self, x, scale, x_mask=None, mask=None):
        y = self.gru(x, mask=x_mask) * scale[:, None, :]
        return y if mask is None else y * 0.0  # wrong if given a mask Keras does not give

    def compute_mask(self, x, scale, x_mask=None, mask=None):
        return None  # the mask ends here


@keras.saving.register_keras_serializable(package="rnnedge_tests")
class TrainingDefault(L.Layer):
    """training=True by default: inference gives it False."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.lstm = L.LSTM(3, return_sequences=True)

    def call(self, x, training=True):
        y = self.lstm(x)
        return y * 0.5 if training else y


@keras.saving.register_keras_serializable(package="rnnedge_tests")
class TokenEncoder(keras.Model):
    """A nested subclassed model that reads token ids: Embedding(mask_zero) and a GRU."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.embed, self.gru = L.Embedding(20, 4, mask_zero=True), L.GRU(5)

    def call(self, ids):
        return self.gru(self.embed(ids))


@keras.saving.register_keras_serializable(package="rnnedge_tests")
class Classifier(keras.Model):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.encoder, self.head = TokenEncoder(), L.Dense(2)

    def call(self, ids):
        return self.head(self.encoder(ids))


class Branching(L.Layer):
    """Keras builds it into a graph from its declared output shape; its call() cannot be traced."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.lstm = L.LSTM(3)

    def build(self, shape):
        self.lstm.build(shape)

    def compute_output_shape(self, shape):
        return (shape[0], 3)

    def call(self, x):
        if keras.ops.sum(x) > 0:  # Python control flow on a tensor's value
            return self.lstm(x)
        return self.lstm(-x)


def fused(folder) -> int:
    counts = op_counts(folder / "model.onnx")
    assert not counts.get("Loop") and not counts.get("Scan"), counts
    return sum(counts.get(op, 0) for op in ("LSTM", "GRU", "RNN"))


def subclassed_with_encoder():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.enc, self.gru, self.out = Encoder(name="encoder"), L.GRU(4), L.Dense(2)

        def call(self, x):
            return self.out(self.gru(self.enc(x)))

    net = Net()
    net(np.zeros((2, 5, 3), "float32"))
    return randomize(net)


def test_a_custom_layer_in_a_subclassed_model_is_opened_and_fused(tmp_path):
    net = subclassed_with_encoder()
    result = export(net, tmp_path / "o")
    assert result.passed and fused(tmp_path / "o") == 2
    assert result.manifest.source["opened"] == {"encoder": [f"its call() traced into the graph ({net.enc.lstm.name} "
                                                            "fused)"]}
    assert [s.name for s in result.manifest.data_inputs] == ["x"]  # call()'s argument
    x = np.random.default_rng(1).normal(size=(3, 9, 3)).astype("float32")
    got = rnnedge.load(tmp_path / "o").run(x).data[0]
    np.testing.assert_allclose(got, keras.ops.convert_to_numpy(net(x)), atol=1e-5, rtol=1e-4)
    assert type(net.enc) is Encoder  # the layer is left as it was


def test_a_registered_custom_layer_taking_the_mask_opens_from_a_keras_file(tmp_path):
    tokens = keras.Input((None,), dtype="int32", name="tokens")
    y = MaskedBlock(name="block")(L.Embedding(20, 4, mask_zero=True)(tokens))
    model = randomize(keras.Model(tokens, L.Dense(1)(L.GlobalAveragePooling1D()(y))))
    model.save(tmp_path / "m.keras")
    result = export(tmp_path / "m.keras", tmp_path / "o")  # padded rows of every kind: the mask reached the GRU
    assert result.passed and fused(tmp_path / "o") == 1 and list(result.manifest.source["opened"]) == ["block"]
    ids = np.array([[0, 0, 3, 4, 5], [6, 7, 0, 0, 0]], np.int32)
    np.testing.assert_allclose(rnnedge.load(tmp_path / "o").run(ids).data[0],
                               keras.ops.convert_to_numpy(model(ids)), atol=1e-5, rtol=1e-4)


def test_nested_subclassed_models_passing_states_are_opened(tmp_path):
    model = Seq2Seq()
    model([np.zeros((2, 4, 3), "float32"), np.zeros((2, 6, 2), "float32")])
    randomize(model)
    result = export(model, tmp_path / "o")
    assert result.passed and fused(tmp_path / "o") == 2
    assert set(result.manifest.source["opened"]) == {model.encoder.name, model.decoder.name}
    assert [s.name for s in result.manifest.data_inputs] == ["inputs_0", "inputs_1"]


def test_a_custom_layer_that_cannot_be_traced_is_one_line(tmp_path):
    x = keras.Input((None, 3))
    model = keras.Model(x, L.Dense(1)(Branching(name="branching")(x)))
    with pytest.raises(RnnEdgeError) as err:
        export(model, tmp_path / "o")
    message = str(err.value)
    assert "\n" not in message and "'branching' (Branching)" in message and "keras.ops.cond" in message
    assert not (tmp_path / "o").exists()
    with pytest.raises(RnnEdgeError) as err:  # tf.function cannot trace the branch either
        export(model, tmp_path / "o", allow_loop=True)
    message = str(err.value)
    assert "\n" not in message and "tf2onnx could not convert" in message and "bool" in message, message


def test_masks_and_training_are_what_keras_gives(tmp_path):
    """Several tensor arguments: Keras fills `x_mask`, not `mask`; training=True by default becomes
    False in inference. A wrong guess changes the outputs, which the parity check would catch."""
    x, scale = keras.Input((None, 3), name="x"), keras.Input((4,), name="scale")
    masked = L.Masking(0.0)(x)
    y = TrainingDefault(name="train")(TwoTensors(name="two")(masked, scale))
    model = randomize(keras.Model([x, scale], y))
    result = export(model, tmp_path / "o")  # every kind of padded row
    assert result.passed and fused(tmp_path / "o") == 2
    assert set(result.manifest.source["opened"]) == {"two", "train"}


def test_a_subclassed_keras_file_with_a_nested_token_encoder(tmp_path):
    """A subclassed model saved whole: traced as the object is; its input reaches an Embedding only
    inside the nested model, and is still taken as int32 token ids of any length."""
    model = Classifier()
    model(np.array([[1, 2, 0]], np.int32))
    randomize(model)
    model.save(tmp_path / "m.keras")
    result = export(tmp_path / "m.keras", tmp_path / "o")
    assert result.passed and fused(tmp_path / "o") == 1
    (ids,) = result.manifest.data_inputs
    assert ids.name == "ids" and ids.dtype == "int32" and ids.shape == ("batch", "time"), ids
    assert result.manifest.source["format"] == "keras (subclassed)"
    tokens = np.array([[0, 0, 3, 4, 5, 6, 7, 8, 9], [1, 2, 0, 0, 0, 0, 0, 0, 0]], np.int32)  # longer than built
    np.testing.assert_allclose(rnnedge.load(tmp_path / "o").run(tokens).data[0],
                               keras.ops.convert_to_numpy(model(tokens)), atol=1e-5, rtol=1e-4)


def test_a_stateful_subclassed_model_says_why_it_cannot_be_traced(tmp_path):
    class Streaming(keras.Model):
        def __init__(self):
            super().__init__()
            self.lstm = L.LSTM(3, stateful=True)

        def call(self, x):
            return self.lstm(x)

    model = Streaming()
    model(np.zeros((2, 4, 3), "float32"))
    with pytest.raises(RnnEdgeError, match="stateful layer.*create their states at the first call.*functional API"):
        export(model, tmp_path / "o")
