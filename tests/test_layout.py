"""The package reads as the pipeline: every module belongs to a stage, and no module imports a
stage above its own (read from the modules' syntax trees, imports inside functions included)."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "rnnedge"

# Stages from the bottom up: a module may import its own stage and the ones below it.
STAGES = [
    # facts every stage reads
    {"errors", "files", "tables", "manifest", "metrics", "samples", "timing", "logs", "preflight", "interrupts"},
    {"runtime"},  # numpy + onnxruntime: load, run, stream
    {"check"},  # parity against golden data, on any runner
    {"quantize", "zoo"},  # variants of an export; the reference models
    {"exporter"},  # Keras -> ONNX (the --allow-loop fallback too), Keras' truth
    {"pipeline"},  # export: source -> convert -> truth -> golden -> check -> quantize -> write
    {"bench", "serve", "web"},  # timing every candidate; serving through Triton; the browser
    {"cli", "demo", "entry", "__main__", "__init__"},  # the command line and the package's front door
]
RANK = {name: i for i, names in enumerate(STAGES) for name in names}


def _stage(module: str) -> str:
    """'rnnedge.runtime.model' -> 'runtime'; 'rnnedge' (or a name in it: __version__) -> '__init__'."""
    parts = module.split(".")
    if len(parts) > 1 and ((PACKAGE / parts[1]).is_dir() or (PACKAGE / f"{parts[1]}.py").is_file()):
        return parts[1]
    return "__init__"


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__" and len(parts) > 1:
            parts = parts[:-1]
        yield ".".join(parts), path


def _imports(module: str, path: Path) -> list[tuple[str, int]]:
    """(imported rnnedge module, line) for every import, outside `if TYPE_CHECKING:` blocks."""
    tree = ast.parse(path.read_text())
    skip = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
            and getattr(node.test, "id", getattr(node.test, "attr", None)) == "TYPE_CHECKING"
            for n in ast.walk(node)}
    found = []
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names if a.name.split(".")[0] == "rnnedge"]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1]
                                + ([base] if base else []))
            if base.split(".")[0] == "rnnedge":
                found += [(f"{base}.{a.name}", node.lineno) for a in node.names]  # a module, or a name in one
    return found


def test_every_module_belongs_to_a_stage():
    unknown = sorted({_stage(m) for m, _ in _modules()} - set(RANK) - {"data"})
    assert not unknown, f"modules outside every stage: {unknown}; add them to STAGES"


def test_no_module_imports_a_stage_above_its_own():
    wrong = []
    for module, path in _modules():
        own = RANK[_stage(module)]
        for target, line in _imports(module, path):
            stage = _stage(target)
            if stage in RANK and RANK[stage] > own:
                wrong.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {module} ({_stage(module)}) imports "
                             f"{target} ({stage})")
    assert not wrong, "\n".join(wrong)


def test_no_import_cycles_between_modules():
    graph = {m: {t for t, _ in _imports(m, p)} for m, p in _modules()}
    modules = set(graph)

    def resolve(target: str) -> str | None:  # 'rnnedge.runtime.load' -> 'rnnedge.runtime'
        while target and target not in modules:
            target = target.rpartition(".")[0]
        return target or None

    # a package's __init__ re-exporting its modules is not a cycle with them: edges to a parent are left out
    edges = {m: {r for t in ts if (r := resolve(t)) and r != m and not m.startswith(r + ".")}
             for m, ts in graph.items()}
    cycles, state = [], {}

    def visit(m, stack):
        state[m] = "open"
        for n in edges[m]:
            if state.get(n) == "open":
                cycles.append(" -> ".join(stack[stack.index(n):] + [n]))
            elif n not in state:
                visit(n, stack + [n])
        state[m] = "done"

    for m in sorted(edges):
        if m not in state:
            visit(m, [m])
    assert not cycles, "\n".join(cycles)


def test_a_stream_knows_nothing_of_the_model():
    """runtime/stream.py builds a stream from a session and a signature: it imports nothing of
    runtime/model.py (not even under TYPE_CHECKING, nor `Model` through the package) and reads no
    other object's private fields."""
    path = PACKAGE / "runtime" / "stream.py"
    tree = ast.parse(path.read_text())
    wrong = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            wrong += [f"{node.lineno}: import {a.name}" for a in node.names
                      if a.name.startswith("rnnedge.runtime.model")]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            names = [a.name for a in node.names]
            if base.startswith("rnnedge.runtime.model") or (node.level and base.startswith("model")) \
                    or (base in ("rnnedge", "rnnedge.runtime") and {"model", "Model", "load"} & set(names)):
                wrong.append(f"{node.lineno}: from {base} import {', '.join(names)}")
        elif isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__") \
                and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")):
            wrong.append(f"{node.lineno}: reads private field .{node.attr}")
    assert not wrong, "runtime/stream.py: " + "; ".join(wrong)


@pytest.mark.parametrize("module", ["rnnedge.runtime", "rnnedge.check", "rnnedge.quantize", "rnnedge.bench",
                                    "rnnedge.cli"])
def test_the_runtime_side_imports_no_tensorflow(module):
    """In a fresh interpreter, these import neither TensorFlow, Keras nor tf2onnx."""
    code = (f"import sys, {module}\n"
            "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'tensorflow', 'keras', 'tf2onnx', 'tf_keras'})\n"
            "print(heavy)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          cwd=PACKAGE.parent)
    assert done.returncode == 0, done.stderr[-800:]
    assert done.stdout.strip() == "[]", f"{module} imports {done.stdout.strip()}"


def test_the_dtype_table_uses_onnxs_own_codes():
    """tables.DTYPES writes onnx.TensorProto's codes as numbers (the CLI starts without onnx): they
    must be onnx's, and every other module reads them from there."""
    import onnx

    from rnnedge.tables import DTYPES

    for name, (np_type, code, _) in DTYPES.items():
        assert onnx.helper.tensor_dtype_to_np_dtype(code) == np.dtype(np_type), name


def test_no_module_imports_another_modules_underscore_names():
    """What another module needs is public: `from rnnedge.x import _name` is a seam nobody declared."""
    found = []
    for module, path in _modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("rnnedge"):
                found += [f"{module}: {node.module}.{a.name}" for a in node.names
                          if a.name.startswith("_") and not a.name.startswith("__")]
    assert not found, found


KERAS_PRIVATE = ("keras.src", "_nodes_by_depth", "_inbound_nodes", "_keras_history", "_keras_mask", "_call_signature",
                 "_call_context_args", "_flatten_layers", "_call_has_mask_arg", "_call_has_training_arg", "_functional",
                 "_could_use_gpu_kernel")


def test_keras_private_api_lives_in_one_module():
    """Keras' (and tf_keras') private API is used in rnnedge/exporter/load/keras_api.py only, so a Keras
    release that moves it breaks one module."""
    found = [f"{path.relative_to(PACKAGE.parent)}:{n}: {name}" for _, path in _modules()
             if path != PACKAGE / "exporter" / "load" / "keras_api.py"
             for n, line in enumerate(path.read_text().splitlines(), 1) for name in KERAS_PRIVATE
             if re.search(rf"(?<![\w]){re.escape(name)}\b", line)]
    assert not found, found


def test_the_command_line_modules_stay_thin():
    """cli/ parses arguments and calls the library: each module under 450 lines, and none changes
    another package's behaviour when imported (no assignment to another module's attributes)."""
    for path in sorted((PACKAGE / "cli").glob("*.py")):
        text = path.read_text()
        assert len(text.splitlines()) < 450, path.name
        patched = [node.lineno for node in ast.walk(ast.parse(text)) if isinstance(node, ast.Assign)
                   for t in node.targets if isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name)
                   and t.value.id[0].isupper()]
        assert not patched, f"cli/{path.name} sets attributes of classes at lines {patched}"


def test_modules_stay_small_enough_to_read():
    """Past ~450 lines a module has become a stage of its own (STYLE.md): make it a package."""
    sizes = {str(path.relative_to(PACKAGE.parent)): len(path.read_text().splitlines()) for _, path in _modules()}
    assert not {m: n for m, n in sizes.items() if n > 450}, sizes


def test_the_exporter_converts_and_nothing_else():
    """exporter/ turns Keras into ONNX (and Keras' outputs): checking and quantizing the result is the
    pipeline's (rnnedge/pipeline), so no exporter module imports check or quantize."""
    found = [f"{module}:{line}: {target}" for module, path in _modules() if _stage(module) == "exporter"
             for target, line in _imports(module, path) if _stage(target) in ("check", "quantize", "pipeline")]
    assert not found, found


def test_convert_is_used_through_its_public_names():
    """Outside exporter/convert, convert is imported only as `from rnnedge.exporter.convert import NAME`
    with NAME in its __init__'s __all__ (no core.interface, graph.OPSET, splice.SpliceError from inside)."""
    init = ast.parse((PACKAGE / "exporter" / "convert" / "__init__.py").read_text())
    public = next(ast.literal_eval(node.value) for node in init.body if isinstance(node, ast.Assign)
                  and any(getattr(t, "id", None) == "__all__" for t in node.targets))
    found = [f"{module}:{line}: {target}" for module, path in _modules()
             if not module.startswith("rnnedge.exporter.convert")
             for target, line in _imports(module, path) if target.startswith("rnnedge.exporter.convert.")
             and not (target.count(".") == 3 and target.rpartition(".")[2] in public)]
    assert not found, found


def test_converters_are_declared_in_one_registry():
    """One declaration per converter (`registry.converts`): no module keeps a table of layer types of its
    own beside it (CONVERTERS / MASK_AWARE / PER_STEP tables were kept in step by hand)."""
    convert = PACKAGE / "exporter" / "convert"
    found = [f"{path.name}: {t.id}" for path in convert.glob("*.py") if path.name != "registry.py"
             for node in ast.parse(path.read_text()).body if isinstance(node, ast.Assign)
             for t in node.targets if isinstance(t, ast.Name) and t.id in ("CONVERTERS", "MASK_AWARE", "PER_STEP")]
    assert not found, found


def test_tolerances_come_from_the_tables():
    """Parity tolerances are one fact (tables.PROVIDERS): no literal atol=/rtol= number elsewhere."""
    found = [f"{path.relative_to(PACKAGE.parent)}:{n}" for _, path in _modules() if path.name != "tables.py"
             for n, line in enumerate(path.read_text().splitlines(), 1)
             if re.search(r"\b[ar]tol\s*=\s*[0-9.]+e-|\bATOL\s*=\s*[0-9]", line)]
    assert not found, found


def test_plain_pytest_collects_the_suite():
    """`pytest` (not only `python -m pytest`) finds `tests.*` imports: pyproject sets pythonpath."""
    pytest = str(Path(sys.executable).with_name("pytest"))
    done = subprocess.run([pytest, "--collect-only", "-q", "tests/test_runtime.py"], capture_output=True, text=True,
                          timeout=300, cwd=PACKAGE.parent)  # test_runtime imports tests.onnx_fixtures
    assert done.returncode == 0 and "tests collected" in done.stdout, done.stdout[-2000:] + done.stderr[-2000:]


def test_the_fast_tier_needs_no_tensorflow():
    """`make test-fast` stays fast: its modules import neither TensorFlow nor Keras (nor the test
    models built with them) at module level, and there are at least 300 of its tests."""
    from tests.conftest import FAST_MODULES

    heavy = ("tensorflow", "keras", "tf_keras", "tf2onnx", "tests.kmodels", "tests.k2models", "rnnedge.exporter",
             "rnnedge.pipeline", "rnnedge.zoo")
    for name in sorted(FAST_MODULES):
        tree = ast.parse((PACKAGE.parent / "tests" / f"{name}.py").read_text())
        for node in tree.body:
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not [n for n in names if n.split(".")[0] in heavy or n.startswith(heavy)], (name, names)
    run = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-m", "fast", "-p",
                          "no:cacheprovider"], capture_output=True, text=True, cwd=PACKAGE.parent)
    collected = int(re.search(r"(\d+)(?:/\d+)? tests? (?:collected|selected)", run.stdout).group(1))
    assert collected >= 300, run.stdout[-500:]
