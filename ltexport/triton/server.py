"""Start and stop a Triton Inference Server for a model repository (`ltexport serve`, and the tests).

Where tritonserver comes from, first found:
- $LTEXPORT_TRITONSERVER_HOME or /opt/tritonserver (NGC's containers): bin/tritonserver, backends/.
- the `nvidia-pytriton` wheel in this Python environment (`pip install --no-deps nvidia-pytriton`):
  a real tritonserver 2.51 with only the python backend. Its backend stub is shipped per Python
  version apart from the backend, so a backend directory is assembled from links.

Triton's python backend stub embeds libpython and locates its interpreter by searching PATH for
python3; with this environment's bin/ first on PATH the stub runs in this environment and imports
ltexport, numpy and onnxruntime from it (what PyTriton does too).

The server runs in its own process group; stop() ends the whole group (server and stubs) within a
bounded time, and with `setpriv` available the server is also killed if this process dies.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from ltexport.errors import LtexportError

HOME_ENV = "LTEXPORT_TRITONSERVER_HOME"
INSTALL_HINT = (f"install one with `pip install --no-deps nvidia-pytriton` (a tritonserver with the python backend), "
                f"or set {HOME_ENV} to a Triton installation (bin/tritonserver, backends/)")


@dataclass(frozen=True)
class TritonInstall:
    """A tritonserver binary and how to run it."""

    binary: Path
    backend_dir: Path  # --backend-directory (for the wheel: its backends/, the stub is linked in by start())
    origin: str
    stub: Path | None = None  # the python backend stub for this Python, when it lives apart (the wheel)
    lib_dirs: tuple = ()

    @property
    def backends(self) -> list[str]:
        return sorted(p.name for p in self.backend_dir.iterdir() if p.is_dir())


def _from_home(home: Path) -> TritonInstall | None:
    if (home / "bin" / "tritonserver").is_file() and (home / "backends").is_dir():
        return TritonInstall(home / "bin" / "tritonserver", home / "backends", f"{home}")
    return None


def _from_pytriton() -> TritonInstall | None:
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        return None
    package = Path(list(spec.submodule_search_locations)[0])
    dist = package / "tritonserver"
    version = f"{sys.version_info[0]}.{sys.version_info[1]}"
    stub = dist / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not (dist / "bin" / "tritonserver").is_file():
        return None
    if not stub.is_file():
        raise LtexportError(f"the nvidia-pytriton wheel has no python backend stub for Python {version}; "
                            "use a Python it ships a stub for (3.8-3.13)")
    return TritonInstall(dist / "bin" / "tritonserver", dist / "backends", "nvidia-pytriton wheel", stub,
                         (package.parent / "nvidia_pytriton.libs",))


def find_triton() -> TritonInstall | None:
    """The first tritonserver found ($LTEXPORT_TRITONSERVER_HOME, /opt/tritonserver, the pytriton wheel)."""
    homes = [os.environ.get(HOME_ENV), "/opt/tritonserver"]
    for home in filter(None, homes):
        found = _from_home(Path(home))
        if found:
            return found
    if os.environ.get(HOME_ENV):
        raise LtexportError(f"{HOME_ENV}={os.environ[HOME_ENV]} has no bin/tritonserver and backends/; "
                            "point it at a Triton installation")
    return _from_pytriton()


def require_triton() -> TritonInstall:
    found = find_triton()
    if found is None:
        raise LtexportError(f"no tritonserver found; {INSTALL_HINT}")
    return found


def server_env(install: TritonInstall, extra: dict | None = None) -> dict:
    """The server's environment: this Python's bin/ first on PATH (for the python backend stub)."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    if install.lib_dirs:
        env["LD_LIBRARY_PATH"] = os.pathsep.join([*map(str, install.lib_dirs), env.get("LD_LIBRARY_PATH", "")])
    env.update(extra or {})
    return env


def missing_libraries(install: TritonInstall) -> list[str]:
    """Shared libraries the server or the python backend stub cannot find (ldd), e.g. libpython3.11.so.1.0."""
    if shutil.which("ldd") is None:
        return []
    missing = []
    env = server_env(install)
    for binary in filter(None, [install.binary, install.stub]):
        out = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, env=env, timeout=30).stdout
        missing += [f"{line.split()[0]} (needed by {binary.name})" for line in out.splitlines() if "not found" in line]
    return missing


def runnable_triton() -> TritonInstall:
    """require_triton(), and every shared library the server and its python backend stub need is found."""
    install = require_triton()
    missing = missing_libraries(install)
    if missing:
        raise LtexportError(f"tritonserver ({install.origin}) cannot find {', '.join(missing)}; install them "
                            "(e.g. the libpython shared library of this Python) or add their directory to LD_LIBRARY_PATH")
    return install


def free_port(address: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((address, 0))
        return s.getsockname()[1]


def _group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes of process group pgid, from /proc."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(stat.parent.name))
    return members


def check_repository(repo) -> Path:
    """The resolved model repository; refused unless it is a directory holding at least one model."""
    path = Path(repo)
    if not path.exists():
        raise LtexportError(f"model repository {repo} does not exist; create it with `ltexport package OUT --triton {repo}`")
    if not path.is_dir():
        raise LtexportError(f"model repository {repo} is not a directory; give `ltexport serve` the directory "
                            "that `ltexport package --triton` wrote")
    if not any(p.is_file() for p in path.glob("*/config.pbtxt")):
        raise LtexportError(f"model repository {repo} holds no model (no */config.pbtxt); package one with "
                            f"`ltexport package OUT --triton {repo}`")
    return path.resolve()


@dataclass
class TritonServer:
    """One tritonserver process serving `repo`; use as a context manager or call start()/stop().

    Ports 0 pick free ones. log: a file for the server's output (None: inherit stdout/stderr).
    extra_args: further tritonserver flags. env: extra environment variables for the server.
    """

    repo: Path
    address: str = "127.0.0.1"
    grpc_port: int = 0
    http_port: int = 0
    metrics_port: int = 0
    log: Path | None = None
    extra_args: tuple = ()
    env: dict = field(default_factory=dict)
    install: TritonInstall | None = None
    exit_timeout_s: int = 5
    proc: subprocess.Popen | None = field(default=None, init=False)

    def __post_init__(self):
        self.repo = check_repository(self.repo)
        self.install = self.install or require_triton()
        self.grpc_port = self.grpc_port or free_port(self.address)
        self.http_port = self.http_port or free_port(self.address)
        self.metrics_port = self.metrics_port or free_port(self.address)
        self._workdir: Path | None = None

    @property
    def grpc_url(self) -> str:
        return f"{self.address}:{self.grpc_port}"

    def command(self, backend_dir: Path) -> list[str]:
        cmd = [str(self.install.binary), f"--model-repository={self.repo}", f"--backend-directory={backend_dir}",
               f"--grpc-address={self.address}", f"--grpc-port={self.grpc_port}",
               f"--http-address={self.address}", f"--http-port={self.http_port}",
               f"--metrics-address={self.address}", f"--metrics-port={self.metrics_port}",
               f"--exit-timeout-secs={self.exit_timeout_s}", *self.extra_args]
        setpriv = shutil.which("setpriv")
        return ([setpriv, "--pdeathsig", "KILL", *cmd] if setpriv else cmd)  # dies with its parent

    def start(self) -> "TritonServer":
        self._workdir = Path(tempfile.mkdtemp(prefix="ltexport-triton-"))
        backend_dir = self._backend_dir(self._workdir)
        out = open(self.log, "w") if self.log else None  # noqa: SIM115 - the child keeps its own copy
        try:
            self.proc = subprocess.Popen(self.command(backend_dir), stdout=out, stderr=subprocess.STDOUT if out else None,
                                         env=server_env(self.install, self.env), start_new_session=True)
        finally:
            if out:
                out.close()
        return self

    def _backend_dir(self, workdir: Path) -> Path:
        if self.install.stub is None:
            return self.install.backend_dir
        backends = workdir / "backends"
        for backend in self.install.backend_dir.iterdir():
            if not backend.is_dir():
                continue
            (backends / backend.name).mkdir(parents=True)
            for f in backend.iterdir():
                (backends / backend.name / f.name).symlink_to(f)
        (backends / "python" / self.install.stub.name).symlink_to(self.install.stub)
        return backends

    def wait_ready(self, timeout_s: float = 120) -> None:
        """Until the server and all its models are ready (strict readiness); raises LtexportError otherwise."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                where = f"{self.last_error()}; see {self.log}" if self.log else "see its log above"
                raise LtexportError(f"tritonserver exited with status {self.proc.returncode} before it was ready: "
                                    f"{where}")
            if self._get("/v2/health/ready") == 200:
                return
            time.sleep(0.2)
        raise LtexportError(f"tritonserver was not ready after {timeout_s:g} s: {self.last_error()}")

    def metrics(self) -> str:
        """Triton's Prometheus metrics text (ltexport's python models add ltexport_* gauges)."""
        with urllib.request.urlopen(f"http://{self.address}:{self.metrics_port}/metrics", timeout=10) as r:
            return r.read().decode()

    def last_error(self) -> str:
        lines = self.log.read_text(errors="replace").splitlines() if self.log and self.log.is_file() else []
        errors = [line.strip() for line in lines if line.startswith("E") or "error" in line.lower()]
        return (errors or lines or ["no log"])[-1][:500]

    def stop(self, timeout_s: float | None = None) -> None:
        """SIGTERM to the server's process group, SIGKILL to whatever is left after the timeout."""
        try:
            if self.proc is not None:
                pgid = self.proc.pid
                timeout_s = self.exit_timeout_s + 10 if timeout_s is None else timeout_s
                _signal_group(pgid, signal.SIGTERM)
                try:
                    self.proc.wait(timeout=timeout_s)
                except subprocess.TimeoutExpired:
                    pass
                _signal_group(pgid, signal.SIGKILL)  # stubs that outlived the server, or a hung server
                self.proc.wait(timeout=10)
                deadline = time.monotonic() + 10
                while _group_members(pgid) and time.monotonic() < deadline:
                    time.sleep(0.05)
        finally:
            if self._workdir is not None:
                shutil.rmtree(self._workdir, ignore_errors=True)
                self._workdir = None

    def leftover_processes(self) -> list[int]:
        return _group_members(self.proc.pid) if self.proc is not None else []

    def _get(self, path: str) -> int | None:
        try:
            with urllib.request.urlopen(f"http://{self.address}:{self.http_port}{path}", timeout=2) as r:
                return r.status
        except (urllib.error.URLError, OSError):
            return None

    def __enter__(self):
        self.start()
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc):
        self.stop()


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass
