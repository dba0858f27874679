"""Python source that makes TensorFlow, Keras and tf2onnx unimportable, as on a runtime-only
install: prepend it to the code a test runs in a subprocess."""

BLOCK_TENSORFLOW = (
    "import importlib.abc, sys\n"
    "BLOCKED = {'tensorflow', 'keras', 'tf2onnx', 'tf_keras'}\n"
    "class Block(importlib.abc.MetaPathFinder):\n"
    "    def find_spec(self, name, path=None, target=None):\n"
    "        if name.split('.')[0] in BLOCKED:\n"
    "            raise ImportError(name + ' is blocked in this test')\n"
    "sys.meta_path.insert(0, Block())\n"
)
