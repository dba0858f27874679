"""Published-style recurrent model files, as older or other Keras versions wrote them, imitated
with tf_keras and Keras 3 (hand-edited where the writer is not installable): each builder writes
its file(s) under a folder and returns the path to export. PATTERNS maps a name to (builder, the
fused recurrent nodes its export has, the framework its truth comes from)."""

from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path

import numpy as np


def _k2():
    import tf_keras

    return tf_keras


def _seeded(model):
    """Random weights (biases too) from a fixed seed."""
    rng = np.random.default_rng(0)
    model.set_weights([rng.normal(0, 0.3, w.shape).astype(w.dtype) for w in model.get_weights()])
    return model


def _forecaster():
    """A forecasting LSTM + GRU stack, the most common published shape."""
    k, L = _k2(), _k2().layers
    _k2().utils.set_random_seed(0)
    x = L.Input((None, 4), name="series")
    h = L.LSTM(6, return_sequences=True)(x)
    h = L.GRU(5)(h)
    return _seeded(k.Model(x, L.Dense(2)(h)))


def _sentiment():
    """Token ids (a float32 model input, as Keras 2 declares it) through an Embedding into an LSTM."""
    k, L = _k2(), _k2().layers
    _k2().utils.set_random_seed(0)
    return _seeded(k.Sequential([L.Embedding(30, 6, input_length=9), L.LSTM(5), L.Dense(1, activation="sigmoid")]))


def move_metadata_into_saved_model(folder: Path):
    """What TF <= 2.4 wrote: no keras_metadata.pb, each Keras object's metadata in saved_model.pb's
    object graph (the user object's `metadata` field), where tf_keras' loader still reads it."""
    from tensorflow.core.protobuf import saved_model_pb2
    from tf_keras.protobuf import saved_metadata_pb2

    meta = saved_metadata_pb2.SavedMetadata()
    meta.ParseFromString((folder / "keras_metadata.pb").read_bytes())
    saved = saved_model_pb2.SavedModel()
    saved.ParseFromString((folder / "saved_model.pb").read_bytes())
    nodes = saved.meta_graphs[0].object_graph_def.nodes
    for node in meta.nodes:
        assert nodes[node.node_id].user_object.identifier == node.identifier
        nodes[node.node_id].user_object.metadata = node.metadata
    (folder / "saved_model.pb").write_bytes(saved.SerializeToString())
    (folder / "keras_metadata.pb").unlink()


def early_savedmodel(folder: Path) -> Path:
    """tf.keras <= 2.4's model.save(dir): Keras metadata inside saved_model.pb."""
    path = folder / "early_savedmodel"
    _forecaster().save(path, save_format="tf")
    move_metadata_into_saved_model(path)
    return path


def early_savedmodel_tokens(folder: Path) -> Path:
    path = folder / "early_savedmodel_tokens"
    _sentiment().save(path, save_format="tf")
    move_metadata_into_saved_model(path)
    return path


def tf_saved_model_save(folder: Path) -> Path:
    """tf.saved_model.save(keras_model): Keras objects in the object graph, no metadata at all."""
    import tensorflow as tf

    k, L = _k2(), _k2().layers
    _k2().utils.set_random_seed(0)
    x = L.Input((None, 4), name="series")
    model = _seeded(k.Model(x, L.Dense(2)(L.LSTM(6)(L.LSTM(7, return_sequences=True)(x)))))
    path = folder / "tf_saved_model_save"
    tf.saved_model.save(model, str(path))
    return path


def tf_saved_model_save_simple_rnn(folder: Path) -> Path:
    """The same with a SimpleRNN, which tf2onnx leaves as a Loop."""
    import tensorflow as tf

    k, L = _k2(), _k2().layers
    _k2().utils.set_random_seed(0)
    model = _seeded(k.Sequential([L.SimpleRNN(5, input_shape=(None, 3)), L.Dense(2)]))
    path = folder / "tf_saved_model_save_simple_rnn"
    tf.saved_model.save(model, str(path))
    return path


def tf_saved_model_save_tokens(folder: Path) -> Path:
    """tf.saved_model.save of an Embedding model: its signature takes float32 token ids."""
    import tensorflow as tf

    path = folder / "tf_saved_model_save_tokens"
    tf.saved_model.save(_sentiment(), str(path))
    return path


def h5_named_keras(folder: Path) -> Path:
    """A tf.keras 2 HDF5 model saved under a .keras name."""
    path = folder / "h5_named_keras.keras"
    _forecaster().save(folder / "h5_named_keras.h5")
    shutil.move(folder / "h5_named_keras.h5", path)
    return path


def keras3_h5_named_keras(folder: Path) -> Path:
    """A Keras 3 legacy HDF5 model saved under a .keras name."""
    import keras

    keras.utils.set_random_seed(0)
    x = keras.Input((None, 3))
    model = _seeded(keras.Model(x, keras.layers.Dense(2)(keras.layers.GRU(4)(x))))
    model.save(folder / "keras3_h5.h5")
    path = folder / "keras3_h5_named_keras.keras"
    shutil.move(folder / "keras3_h5.h5", path)
    return path


def _without_reset_after(path: Path, version: str = "2.0.4"):
    """An .h5 model's configuration as Keras 2.0-2.2 wrote a GRU: no reset_after (it meant False)."""
    import h5py

    with h5py.File(path, "r+") as f:
        config = json.loads(f.attrs["model_config"])

        def drop(obj):
            if isinstance(obj, dict):
                if obj.get("class_name") == "GRU":
                    obj["config"].pop("reset_after", None)
                for v in obj.values():
                    drop(v)
            elif isinstance(obj, list):
                for v in obj:
                    drop(v)

        drop(config)
        f.attrs["model_config"] = json.dumps(config).encode()
        f.attrs["keras_version"] = version.encode()


def keras20_gru(folder: Path) -> Path:
    """A Keras 2.0 GRU (reset_after=False, hard_sigmoid gates, as 2.0 defaulted) without reset_after."""
    k, L = _k2(), _k2().layers
    _k2().utils.set_random_seed(0)
    model = _seeded(k.Sequential([L.GRU(6, reset_after=False, recurrent_activation="hard_sigmoid",
                                        return_sequences=True, input_shape=(None, 4)),
                                  L.Bidirectional(L.GRU(3, reset_after=False, recurrent_activation="hard_sigmoid")),
                                  L.Dense(2)]))
    path = folder / "keras20_gru.h5"
    model.save(path)
    model.save(folder / "keras20_gru_as_saved.h5")  # unedited: what tf_keras computes, for the test
    _without_reset_after(path)
    return path


def keras23_gru_reset_after(folder: Path) -> Path:
    """A GRU whose bias says reset_after=True (two rows), its config edited to omit it: tf_keras,
    defaulting to True, loads it."""
    k, L = _k2(), _k2().layers
    _k2().utils.set_random_seed(0)
    model = _seeded(k.Sequential([L.GRU(5, input_shape=(None, 3)), L.Dense(1)]))
    path = folder / "keras23_gru_reset_after.h5"
    model.save(path)
    _without_reset_after(path, "2.2.4")
    return path


CUSTOM_MODULE = textwrap.dedent('''
    """A user's module of custom layers (Keras 3 and tf_keras versions of the same class)."""
    import keras


    @keras.saving.register_keras_serializable(package="user")
    class Scale(keras.layers.Layer):
        def __init__(self, factor=2.0, **kwargs):
            super().__init__(**kwargs)
            self.factor = factor

        def call(self, x):
            return x * self.factor

        def get_config(self):
            return {**super().get_config(), "factor": self.factor}
''')


def custom_module(folder: Path) -> Path:
    path = folder / "user_layers.py"
    path.write_text(CUSTOM_MODULE)
    return path


def keras3_custom_layer(folder: Path) -> Path:
    """A .keras file with a custom layer class (Scale), saved by the module above."""
    import importlib.util

    import keras

    spec = importlib.util.spec_from_file_location("user_layers_writer", custom_module(folder))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    keras.utils.set_random_seed(0)
    x = keras.Input((None, 4))
    model = _seeded(keras.Model(x, keras.layers.Dense(2)(module.Scale(0.5)(keras.layers.LSTM(5)(x)))))
    path = folder / "keras3_custom_layer.keras"
    model.save(path)
    registered = keras.saving.get_custom_objects()
    for key in [k for k in registered if k.endswith(">Scale")]:
        del registered[key]  # the reader does not have the class registered
    return path


def revived_custom_layer(folder: Path) -> Path:
    """A tf_keras SavedModel with a custom layer whose class the reader does not have: tf_keras
    revives it from its traced functions."""
    k, L = _k2(), _k2().layers

    class Twice(L.Layer):
        def call(self, x):
            return 2.0 * x

    _k2().utils.set_random_seed(0)
    x = L.Input((12, 3), name="frames")
    model = _seeded(k.Model(x, L.Dense(2)(Twice(name="twice")(L.LSTM(4)(x)))))
    path = folder / "revived_custom_layer"
    model.save(path, save_format="tf")
    return path


TF_KERAS_MODULE = textwrap.dedent('''
    """A user's module of tf_keras custom layers."""
    import tf_keras


    class Twice(tf_keras.layers.Layer):
        def call(self, x):
            return 2.0 * x
''')


def keras2_custom_layer(folder: Path) -> Path:
    """A tf_keras .h5 with a custom layer class, read with the user's module (--custom)."""
    import importlib.util

    module_path = folder / "user_tf_keras_layers.py"
    module_path.write_text(TF_KERAS_MODULE)
    spec = importlib.util.spec_from_file_location("user_tf_keras_writer", module_path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    k, L = _k2(), _k2().layers
    _k2().utils.set_random_seed(0)
    x = L.Input((None, 3), name="frames")
    model = _seeded(k.Model(x, L.Dense(2)(module.Twice(name="twice")(L.LSTM(4)(x)))))
    path = folder / "keras2_custom_layer.h5"
    model.save(path)
    return path


# name -> (builder, fused recurrent nodes, truth framework, export keyword arguments)
PATTERNS = {
    "early_savedmodel": (early_savedmodel, 2, "tf_keras", {}),
    "early_savedmodel_tokens": (early_savedmodel_tokens, 1, "tf_keras", {}),
    "tf_saved_model_save": (tf_saved_model_save, 2, "tensorflow", {}),
    "tf_saved_model_save_tokens": (tf_saved_model_save_tokens, 1, "tensorflow", {}),
    "h5_named_keras": (h5_named_keras, 2, "tf_keras", {}),
    "keras3_h5_named_keras": (keras3_h5_named_keras, 1, "keras", {}),
    "keras20_gru": (keras20_gru, 2, "keras", {}),
    "keras23_gru_reset_after": (keras23_gru_reset_after, 1, "tf_keras", {}),  # tf_keras' default fits it
    "keras3_custom_layer": (keras3_custom_layer, 1, "keras", {"custom": "user_layers.py"}),
    "revived_custom_layer": (revived_custom_layer, 1, "tensorflow", {}),
    "keras2_custom_layer": (keras2_custom_layer, 1, "tensorflow", {"custom": "user_tf_keras_layers.py"}),
}
