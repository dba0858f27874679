"""Loading: a Keras model (object, .keras / .h5 file, SavedModel folder, zoo:NAME) read into a Keras 3
model the converter walks. `source` (`load_source`, `load_keras`: which reader, the sources' records),
`keras2` (a Keras 2 file rebuilt in Keras 3; `keras2_fit`: arguments and nested calls; `keras2_files`:
SavedModel metadata, HDF5 under any name, old GRUs, revived layers), `custom` (--custom classes),
`tfgraph` (a SavedModel's signature: a plain tf.Module, a subclassed tf_keras model), `inline` (custom
layers holding recurrent ones, opened) and `keras_api` (Keras' private API, alone)."""
