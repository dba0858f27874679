"""The user's own classes for loading a model file (`--custom module.py`, a dotted module path, or
`export(..., custom=...)`): each class and function the module defines, by name, as Keras custom
objects. Loading keeps safe_mode on (a Lambda still needs --unsafe)."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
from pathlib import Path

from rnnedge.errors import RnnEdgeError, first_line


def custom_objects(spec) -> dict:
    """{name: class or function} from `spec`: None, a dict of them, a module object, a path to a .py
    file, a dotted module path, or a list (or comma-separated string) of any of these."""
    if spec is None or spec == "" or spec == ():
        return {}
    if isinstance(spec, dict):
        return dict(spec)
    if isinstance(spec, (list, tuple)):
        found = {}
        for item in spec:
            found.update(custom_objects(item))
        return found
    if inspect.isclass(spec) or inspect.isfunction(spec):
        return {spec.__name__: spec}
    if inspect.ismodule(spec):
        return _defined(spec)
    text = str(spec)
    if "," in text:
        return custom_objects([part.strip() for part in text.split(",") if part.strip()])
    import keras

    registry = keras.saving.get_custom_objects()
    before = dict(registry)
    try:
        return _defined(_import(text))  # named as the module registers them (register_keras_serializable)
    finally:  # the module's own registrations leave with the export: a later one without --custom is as given
        registry.clear()
        registry.update(before)


def _import(text: str):
    """A module from a .py file's path or a dotted module path, refused in one line where it cannot be."""
    path = Path(text)
    if text.endswith(".py") or path.exists():
        if not path.is_file():
            raise RnnEdgeError(f"--custom {text}: no such file; expected a .py file or a dotted module path "
                               "defining the model's custom classes")
        name = f"rnnedge_custom_{path.stem}"
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise RnnEdgeError(f"--custom {text}: not a Python module (expected a .py file)")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses and pickling look classes up by their module
        try:
            spec.loader.exec_module(module)
        except Exception as e:  # the user's module: any error means it could not be imported
            sys.modules.pop(name, None)
            raise RnnEdgeError(f"--custom {text}: importing it failed ({type(e).__name__}: {first_line(e)})") from None
        return module
    try:
        return importlib.import_module(text)
    except Exception as e:  # ModuleNotFoundError, or the module's own error
        raise RnnEdgeError(f"--custom {text}: cannot import it ({type(e).__name__}: {first_line(e)}); pass a .py "
                           "file's path or a module importable from here (PYTHONPATH)") from None


def _defined(module) -> dict:
    """The classes and functions `module` defines itself (not those it imports), under their names
    and the names Keras registered them under ("package>Name"), which a .keras file records."""
    import keras

    found = {}
    for name, obj in vars(module).items():
        if (inspect.isclass(obj) or inspect.isfunction(obj)) and obj.__module__ == module.__name__ \
                and not name.startswith("_"):
            found[name] = obj
            found[keras.saving.get_registered_name(obj)] = obj
    return found
