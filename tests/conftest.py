import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# Another process that has begun writing OUT (it holds its temporary folder's lock until it ends),
# or changing an export folder in place (it holds the folder's lock).
_HOLD = """
import sys, time
from pathlib import Path
from rnnedge.files import changing, temp_dir
if sys.argv[2] == "change":
    with changing(Path(sys.argv[1])):
        print(sys.argv[1], flush=True)
        time.sleep(120)
print(temp_dir(Path(sys.argv[1])), flush=True)
time.sleep(120)
"""


@pytest.fixture(scope="session")
def zoo_cache(tmp_path_factory):
    """One trained zoo per test session, shared by every test that needs a zoo model."""
    return tmp_path_factory.mktemp("zoo")


@pytest.fixture
def fake_netron(monkeypatch):
    """netron stood in for (`rnnedge view`): what rnnedge asks of it is recorded, as (call, *arguments)."""
    import types

    calls = []
    module = types.ModuleType("netron")
    module.start = lambda file, address=None, browse=True: calls.append(("start", file, address, browse)) or address
    module.wait = lambda: calls.append(("wait",))
    module.stop = lambda: calls.append(("stop",))
    monkeypatch.setitem(sys.modules, "netron", module)
    monkeypatch.setattr("rnnedge.preflight.missing", lambda extra: [])
    return calls


@pytest.fixture
def writer_of():
    """writer_of(out) -> the temporary folder of a live run (a real process) writing `out`;
    writer_of(folder, "change"): a live run changing an export folder in place.
    `writer_of.kill()` ends them, as a SIGKILL would, leaving their folders behind."""
    procs = []

    def start(out: Path, how: str = "write") -> Path:
        proc = subprocess.Popen([sys.executable, "-c", _HOLD, str(out), how], stdout=subprocess.PIPE, text=True,
                                cwd=REPO)
        procs.append(proc)
        return Path(proc.stdout.readline().strip())

    def kill():
        for proc in procs:
            proc.kill()
            proc.wait()

    start.kill = kill
    yield start
    kill()


# The fast tier (`make test-fast`): modules that need no TensorFlow (the runtime, check, quantize,
# bench and the CLI's runtime-only commands, over the committed exported/ and small ONNX fixtures).
# test_layout checks that none of them imports TensorFlow or Keras at module level.
FAST_MODULES = frozenset({
    "test_runtime", "test_layout", "test_manifest", "test_metrics", "test_check", "test_exported",
    "test_hostile_inputs", "test_hostile_cli", "test_quantize_gate", "test_quantize", "test_plots",
    "test_view", "test_bench", "test_docs",
})


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.path.stem in FAST_MODULES:
            item.add_marker(pytest.mark.fast)


def pytest_ignore_collect(collection_path, config):
    """Under `-m fast` the other modules are not even imported (they import TensorFlow)."""
    if config.getoption("markexpr", "") == "fast" and collection_path.suffix == ".py" \
            and collection_path.name.startswith("test_"):
        return collection_path.stem not in FAST_MODULES
    return None
