"""A local `tritonserver` from the nvidia-pytriton wheel, on 127.0.0.1 only, always stopped.

    from rnnedge.serve.server import local_server
    with local_server("repo") as server:          # free ports unless given
        print(server.http_url, server.grpc_url)   # "127.0.0.1:PORT" each

The wheel ships the `tritonserver` binary (pytriton/tritonserver/bin), its shared libraries
(nvidia_pytriton.libs), the python backend (libtriton_python.so, triton_python_backend_utils.py)
and one backend stub per Python version. `local_server` copies the backend and the stub for this
Python into a temporary backend directory, starts the server with the libraries on
LD_LIBRARY_PATH, waits (bounded) until every model is ready, and kills the server's process group
on exit, errors included. The stub embeds whichever libpython3.X the loader finds first and does
not read PYTHONPATH itself: this interpreter's libpython is put first on LD_LIBRARY_PATH, and the
folders holding rnnedge and this environment's site-packages on PYTHONPATH, which the generated
model.py applies (see `triton_model.py`). There is no onnxruntime backend in the wheel.

Models are loaded with explicit model control (`--load-model=*`), so `Watcher` can reload one:
Triton keeps a model whose python backend process died "ready" while every request fails, so the
watcher looks at the stub processes themselves, unloads a model whose stub died (it is then not
ready), loads it again, and raises RnnEdgeError where it cannot. It also hands on rnnedge's own
lines from the server's log (sequences released idle, every sequence slot taken).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from rnnedge.errors import RnnEdgeError
from rnnedge.interrupts import handled
from rnnedge.serve.triton import tidy_repository

HOST = "127.0.0.1"
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0
_NEED = "pip install 'rnnedge[serve]' (nvidia-pytriton ships tritonserver and its python backend)"


@dataclass
class Server:
    """A running local server: its URLs ("127.0.0.1:PORT"), log file and process."""

    http_url: str
    grpc_url: str
    log: Path
    process: subprocess.Popen = field(repr=False)

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        """Kill the server and its backend stubs at once (SIGKILL to its process group)."""
        _signal_group(self.process, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=STOP_TIMEOUT_S)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@dataclass(frozen=True)
class Installation:
    """Where the wheel's pieces are."""

    binary: Path
    libs: Path
    backend: Path  # pytriton/tritonserver/backends/python
    stub: Path


def find_tritonserver() -> Installation:
    """The nvidia-pytriton wheel's server, libraries, python backend and this Python's stub; RnnEdgeError if absent."""
    spec = importlib.util.find_spec("pytriton")  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise RnnEdgeError(f"no tritonserver: the nvidia-pytriton wheel is not installed; {_NEED}")
    root = Path(list(spec.submodule_search_locations)[0]) / "tritonserver"
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    found = Installation(binary=root / "bin" / "tritonserver", libs=root.parent.parent / "nvidia_pytriton.libs",
                         backend=root / "backends" / "python",
                         stub=root / "python_backend_stubs" / version / "triton_python_backend_stub")
    for path in (found.binary, found.libs, found.backend / "libtriton_python.so",
                 found.backend / "triton_python_backend_utils.py"):
        if not path.exists():
            raise RnnEdgeError(f"the nvidia-pytriton installation has no {path}: reinstall it ({_NEED})")
    if not found.stub.is_file():
        have = sorted(p.name for p in (root / "python_backend_stubs").iterdir()) if root.exists() else []
        raise RnnEdgeError(f"nvidia-pytriton has no python backend stub for Python {version} (it has "
                           f"{', '.join(have) or 'none'}): run rnnedge with one of those Python versions")
    return found


def backend_directory(install: Installation, folder: Path) -> Path:
    """folder/python/ with the python backend and this Python's stub (copies); returns folder."""
    python = Path(folder) / "python"
    python.mkdir(parents=True, exist_ok=True)
    for source in (install.backend / "libtriton_python.so", install.backend / "triton_python_backend_utils.py",
                   install.stub):
        shutil.copy2(source, python / source.name)
    return Path(folder)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def free_ports(count: int, taken: tuple[int | None, ...] = ()) -> list[int]:
    """`count` different free ports, none of `taken` (all held open while chosen: ports asked for one at
    a time can come back equal, and tritonserver then refuses to start)."""
    ports: list[int] = []
    with contextlib.ExitStack() as stack:
        while len(ports) < count:
            s = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            s.bind((HOST, 0))
            port = s.getsockname()[1]
            if port not in taken:
                ports.append(port)
    return ports


def _port_free(port: int) -> bool:
    """Nothing listens on HOST:port (connections of a server just stopped, in TIME_WAIT, do not count:
    tritonserver binds with SO_REUSEADDR as this check does)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
        except OSError:
            return False
        return True


def server_environment(install: Installation) -> dict[str, str]:
    """os.environ plus the libraries' folders on LD_LIBRARY_PATH and rnnedge's on PYTHONPATH."""
    env = dict(os.environ)
    libs = []
    libdir, libname = sysconfig.get_config_var("LIBDIR"), sysconfig.get_config_var("LDLIBRARY")
    if libdir and libname and (Path(libdir) / libname).exists():
        libs.append(libdir)  # the stub then embeds this interpreter, not the system's libpython
    libs.append(str(install.libs))
    env["LD_LIBRARY_PATH"] = os.pathsep.join(libs + [p for p in env.get("LD_LIBRARY_PATH", "").split(os.pathsep) if p])
    import numpy
    import onnxruntime
    paths = [str(Path(__file__).resolve().parents[2])]
    for module in (numpy, onnxruntime):
        paths.append(str(Path(module.__file__).resolve().parent.parent))
    paths += [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    return env


def _signal_group(process: subprocess.Popen, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, sig)  # the server was started in a session of its own: pgid == pid


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        _signal_group(process, signal.SIGTERM)
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            pass
    _signal_group(process, signal.SIGKILL)  # stubs left behind, or a server that ignored SIGTERM
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=STOP_TIMEOUT_S)


def _ready(http_port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://{HOST}:{http_port}/v2/health/ready", timeout=1) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _why(log: Path) -> str:
    """The first error line of a server log, shortened to one line."""
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return "no log"
    for line in text.splitlines():
        if "failed to load" in line or line.startswith("error:") or line.startswith("E") and "model" in line:
            return line.strip()[:400]
    tail = [line for line in text.splitlines() if line.strip() and not line.startswith(("|", "+"))]
    return (tail[-1].strip() if tail else "no output")[:400]


@contextlib.contextmanager
def local_server(repo: str | os.PathLike, *, http_port: int | None = None, grpc_port: int | None = None,
                 timeout: float = START_TIMEOUT_S, log: str | os.PathLike | None = None,
                 verbose: bool = False) -> Iterator[Server]:
    """Start tritonserver on REPO (127.0.0.1, free ports unless given), wait until ready, yield a
    `Server`; the server and its stubs are always killed on exit. RnnEdgeError if it does not come up."""
    repo = Path(repo).resolve()
    if not repo.is_dir():
        raise RnnEdgeError(f"model repository {repo} does not exist: write one with `rnnedge triton DIR --out {repo}`")
    tidy_repository(repo)
    if not any(p.is_dir() and (p / "config.pbtxt").is_file() for p in repo.iterdir()):
        raise RnnEdgeError(f"{repo} holds no model (no <name>/config.pbtxt): "
                           f"write one with `rnnedge triton DIR --out {repo}`")
    install = find_tritonserver()
    for what, port in (("HTTP", http_port), ("gRPC", grpc_port)):
        if port is not None and not _port_free(port):
            raise RnnEdgeError(f"{HOST}:{port} (the {what} port) is in use: pick another port or stop what holds it")
    spare = iter(free_ports(3, (http_port, grpc_port)))
    http_port = http_port or next(spare)
    grpc_port = grpc_port or next(spare)
    metrics_port = next(spare)
    with tempfile.TemporaryDirectory(prefix="rnnedge-triton-") as tmp:
        backends = backend_directory(install, Path(tmp) / "backends")
        log_path = Path(log) if log is not None else Path(tmp) / "tritonserver.log"
        command = [str(install.binary), f"--model-repository={repo}", f"--backend-directory={backends}",
                   "--http-address", HOST, "--http-port", str(http_port), "--grpc-address", HOST,
                   "--grpc-port", str(grpc_port), "--metrics-port", str(metrics_port), "--allow-metrics", "false",
                   "--exit-timeout-secs", "5", "--log-verbose", "1" if verbose else "0",
                   "--model-control-mode=explicit", "--load-model=*"]
        try:
            out = open(log_path, "wb")  # noqa: SIM115 - closed below, once the server holds it
        except OSError as e:
            raise RnnEdgeError(f"cannot write the server's log to {log_path} ({e.strerror}): pass --log a file in "
                               "a folder that exists and is writable") from None
        with out:
            process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       env=server_environment(install), start_new_session=True)
        try:
            deadline = time.monotonic() + timeout
            while not _ready(http_port):
                if process.poll() is not None:
                    raise RnnEdgeError(f"tritonserver exited during start-up ({_why(log_path)}); "
                                       f"see {log_path}" if log is not None else
                                       f"tritonserver exited during start-up: {_why(log_path)}")
                if time.monotonic() > deadline:
                    raise RnnEdgeError(f"tritonserver was not ready after {timeout:g} s ({_why(log_path)}): "
                                       "check the repository's models, or raise the timeout")
                time.sleep(0.1)
            yield Server(f"{HOST}:{http_port}", f"{HOST}:{grpc_port}", log_path, process)
        finally:
            _stop(process)


STUB = "triton_python_backend_stub"
POLL_S = 1.0
RESTARTS = 3  # a model whose backend dies more often than this within RESTART_WINDOW_S is given up on
RESTART_WINDOW_S = 300.0


def backend_processes(pid: int) -> dict[str, tuple[int, str]]:
    """The live python-backend stub processes of server `pid`: instance name -> (pid, model name)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            argv = [a.decode(errors="replace") for a in (entry / "cmdline").read_bytes().split(b"\0") if a]
        except OSError:
            continue
        state, ppid = stat.rsplit(")", 1)[1].split()[:2]
        # argv: stub, REPO/<model>/<version>/model.py, shm region, sizes, parent pid, backend dir, ..., instance, kind
        if int(ppid) != pid or state in ("Z", "X") or len(argv) < 3 or not argv[0].endswith(STUB):
            continue
        found[argv[-2]] = (int(entry.name), Path(argv[1]).parent.parent.name)
    return found


def _exit_text(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
        return f"killed by signal {-code}"
    return f"exit code {code}"


class Watcher:
    """Watches a running `Server` each `poll()`: a dead stub's model is reloaded (`say` tells), rnnedge's
    log lines are handed to `say`; RnnEdgeError when the server exits or a model cannot be recovered."""

    def __init__(self, server: Server, say, *, kept_log: bool = False):
        self.server, self.say, self.kept_log = server, say, kept_log
        self.stubs = backend_processes(server.pid)
        self.offset = self._size()
        self.partial = b""
        self.deaths: dict[str, list[float]] = {}

    def _size(self) -> int:
        try:
            return self.server.log.stat().st_size
        except OSError:
            return 0

    def _new_lines(self) -> list[str]:
        try:
            with open(self.server.log, "rb") as f:
                f.seek(self.offset)
                data = f.read(1 << 20)
        except OSError:
            return []
        self.offset += len(data)
        *lines, self.partial = (self.partial + data).split(b"\n")
        return [line.decode(errors="replace") for line in lines]

    def _relay(self, lines: list[str]) -> None:
        for line in lines:
            _, sep, message = line.partition("] ")
            if sep and message.strip('"').startswith("rnnedge: "):
                self.say(message.strip().strip('"')[len("rnnedge: "):])

    def _post(self, model: str, action: str) -> None:
        url = f"http://{self.server.http_url}/v2/repository/models/{urllib.parse.quote(model)}/{action}"
        request = urllib.request.Request(url, data=b"{}", method="POST", headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=START_TIMEOUT_S):
                pass
        except urllib.error.HTTPError as e:
            raise RnnEdgeError(f"model '{model}' died and could not be {action}ed again "
                               f"({e.read().decode(errors='replace').strip()[:300]}){self._see()}") from None
        except (urllib.error.URLError, OSError) as e:
            raise RnnEdgeError(f"model '{model}' died and the server did not answer its {action} ({e})"
                               f"{self._see()}") from None

    def _see(self) -> str:
        return f"; see {self.server.log}" if self.kept_log else ""

    def _restart(self, model: str, dead: list[str]) -> None:
        now = time.monotonic()
        times = [t for t in self.deaths.get(model, []) if now - t < RESTART_WINDOW_S] + [now]
        self.deaths[model] = times
        self.say(f"model '{model}': its backend process {', '.join(dead)} died; it is not ready until it is loaded "
                 "again (its open sequences are lost)")
        if len(times) > RESTARTS:
            raise RnnEdgeError(f"model '{model}' died {len(times)} times within {RESTART_WINDOW_S:g} s: "
                               f"not restarting it again{self._see()}")
        self._post(model, "unload")
        self._post(model, "load")
        self.say(f"model '{model}' loaded again: ready")

    def poll(self) -> None:
        self._relay(self._new_lines())
        if not self.server.alive():
            after = [line for line in self._new_lines() + [self.partial.decode(errors="replace")]
                     if line.startswith("E")]
            raise RnnEdgeError(f"tritonserver stopped by itself ({_exit_text(self.server.process.poll())})"
                               + (f": {after[-1].strip()[:300]}" if after else "") + self._see())
        now = backend_processes(self.server.pid)
        dead: dict[str, list[str]] = {}
        for instance, (pid, model) in self.stubs.items():
            if instance not in now:
                dead.setdefault(model, []).append(f"{instance} (pid {pid})")
        for model, instances in dead.items():
            self._restart(model, instances)
        if dead:
            now = backend_processes(self.server.pid)
        self.stubs = now


def serve_forever(repo: str | os.PathLike, *, http_port: int, grpc_port: int, timeout: float, say,
                  log: str | os.PathLike | None = None) -> None:
    """`rnnedge serve`: tritonserver on REPO in the foreground until Ctrl-C or SIGTERM (`say` prints
    each line, the watcher's too); RnnEdgeError if the server exits by itself or a model that died cannot
    be loaded again. `log`: keep the server's log in this file (else a temporary one)."""
    def stop(*_):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)  # `kill PID` stops the server too, not only Ctrl-C
    with local_server(repo, http_port=http_port, grpc_port=grpc_port, timeout=timeout, log=log) as server:
        say(f"serving {repo}: http://{server.http_url}  grpc://{server.grpc_url}  (Ctrl-C stops)"
            + (f"; log: {log}" if log is not None else ""))
        watcher = Watcher(server, say, kept_log=log is not None)
        try:
            while True:
                time.sleep(POLL_S)
                watcher.poll()
        except KeyboardInterrupt:
            handled()  # Ctrl-C is how serve ends: exit 0
            say("stopping")
