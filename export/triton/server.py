"""Run the pip-installed tritonserver (from ``nvidia-pytriton``) on a model repository, on loopback.

    with TritonServer("model_repository") as server:
        client = tritonclient.grpc.InferenceServerClient(server.grpc_url)

``pip install 'edgernn[serve]'`` brings a real tritonserver (2.51) with its python backend: the
``nvidia-pytriton`` wheel ships the binary in ``pytriton/tritonserver/bin``, the backend in
``pytriton/tritonserver/backends/python``, one backend stub per Python version in
``pytriton/tritonserver/python_backend_stubs/3.X`` and the shared libraries they need in
``nvidia_pytriton.libs``. This module lays out a backend directory with the stub of the running Python,
and starts the server with an environment in which the stub's embedded Python is this interpreter's:

- ``LD_LIBRARY_PATH``: ``nvidia_pytriton.libs`` and this Python's ``libpython3.X.so``;
- ``PATH`` starts with this interpreter's ``bin`` folder: the stub's Python finds ``python3`` there and
  takes its prefix from it, so a virtual environment's site-packages (``edgernn``, ``onnxruntime``,
  ``numpy``) are the stub's, .pth files included (the same way pytriton starts it).

Run ``python -m edgernn.export.triton.server REPO`` to serve a repository in the foreground: SIGTERM,
SIGHUP or Ctrl-C stops tritonserver too (exit 0); a port in use or a missing repository is one line,
exit 2; tritonserver failing to start or dying is exit 1 with its log's tail.
"""

from __future__ import annotations

import argparse
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
from pathlib import Path

from edgernn.runtime.errors import EdgeRNNError, InputError

INSTALL_HINT = "pip install 'edgernn[serve]'"
START_TIMEOUT_S = 60.0


class ServerError(EdgeRNNError):
    """tritonserver is missing, did not start, or stopped."""


class PortInUse(ServerError, InputError):
    """The gRPC port asked for is taken (another server listens on it)."""


def pytriton_root() -> Path | None:
    """The installed ``pytriton`` package folder, or None when ``nvidia-pytriton`` is not installed."""
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        return None
    root = Path(next(iter(spec.submodule_search_locations)))
    return root if (root / "tritonserver" / "bin" / "tritonserver").is_file() else None


def find_server() -> Path:
    """The tritonserver binary; raises ServerError naming the package to install when it is missing."""
    root = pytriton_root()
    if root is None:
        raise ServerError(f"tritonserver not found: {INSTALL_HINT} (it installs nvidia-pytriton)")
    return root / "tritonserver" / "bin" / "tritonserver"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def check_port(port: int) -> None:
    """Raise PortInUse when something listens on 127.0.0.1:``port`` (connections of a server that just
    stopped, in TIME_WAIT, do not count: tritonserver binds past them, as this check does)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError as exc:
            raise PortInUse(
                f"--grpc-port {port}: 127.0.0.1:{port} is in use ({exc.strerror}); stop what listens "
                "there or pick another port"
            ) from None


def prepare_backends(directory: Path) -> Path:
    """A backend directory with the python backend and the stub built for this Python; returns it."""
    root = find_server().parents[1]
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = root / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.is_file():
        raise ServerError(f"nvidia-pytriton has no python backend stub for Python {version}")
    python = directory / "python"
    python.mkdir(parents=True, exist_ok=True)
    for source in (root / "backends" / "python").iterdir():
        if source.is_file():
            shutil.copy2(source, python / source.name)
    shutil.copy2(stub, python / "triton_python_backend_stub")
    return directory


def server_environment() -> dict[str, str]:
    """os.environ with the stub's libraries on LD_LIBRARY_PATH and this interpreter first on PATH."""
    env = dict(os.environ)
    libs = [str(find_server().parents[3] / "nvidia_pytriton.libs"), sysconfig.get_config_var("LIBDIR")]
    env["LD_LIBRARY_PATH"] = os.pathsep.join([*libs, *filter(None, [env.get("LD_LIBRARY_PATH")])])
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


class TritonServer:
    """tritonserver serving one or more model repositories on 127.0.0.1 (gRPC on a free port unless
    given; HTTP and metrics off).

    ``start()`` waits until every model is ready (or raises ServerError with the server's log tail);
    ``kill()`` ends it at once as a crash would, and ``start()`` starts it again on the same port;
    ``stop()`` ends it (SIGTERM, then SIGKILL) and is safe to call twice. A context manager.
    """

    def __init__(
        self,
        repository: str | os.PathLike | list[str | os.PathLike],
        *,
        grpc_port: int | None = None,
        log_verbose: int = 0,
    ):
        repositories = repository if isinstance(repository, list) else [repository]
        self.repositories = [Path(r).resolve() for r in repositories]
        self.grpc_port = grpc_port
        self.log_verbose = log_verbose
        self.process: subprocess.Popen | None = None
        self._workdir: Path | None = None

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def log_path(self) -> Path:
        assert self._workdir is not None
        return self._workdir / "tritonserver.log"

    @property
    def shm_prefix(self) -> str:
        """The name prefix of the python backend's shared-memory regions (in /dev/shm) of this server."""
        return f"edgernn{os.getpid()}_{self.grpc_port}_"

    def command(self, backends: Path) -> list[str]:
        return [
            str(find_server()),
            *(f"--model-repository={r}" for r in self.repositories),
            f"--backend-directory={backends}",
            "--allow-http=false",
            "--allow-metrics=false",
            "--pinned-memory-pool-byte-size=0",  # CPU only: no CUDA pinned memory to ask for
            "--grpc-address=127.0.0.1",
            f"--grpc-port={self.grpc_port}",
            f"--backend-config=python,shm-region-prefix-name={self.shm_prefix}",
            "--exit-timeout-secs=5",
            f"--log-verbose={self.log_verbose}",
        ]

    def start(self, timeout_s: float = START_TIMEOUT_S) -> TritonServer:
        if self.process is not None:
            raise ServerError("the server is already running")
        if self._workdir is None:  # kept after kill(), for a restart
            self._workdir = Path(tempfile.mkdtemp(prefix="edgernn-triton-"))
            prepare_backends(self._workdir / "backends")
        backends = self._workdir / "backends"
        if self.grpc_port is None:
            self.grpc_port = free_port()
        else:
            check_port(self.grpc_port)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.command(backends),
                stdout=log,
                stderr=subprocess.STDOUT,
                env=server_environment(),
                start_new_session=True,
            )
        try:
            self._wait_ready(timeout_s)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self, timeout_s: float) -> None:
        import tritonclient.grpc as grpcclient

        deadline = time.monotonic() + timeout_s
        client = grpcclient.InferenceServerClient(self.grpc_url)
        try:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise ServerError(
                        f"tritonserver exited with {self.process.returncode}:\n{self.log_tail()}"
                    )
                try:
                    if client.is_server_ready(client_timeout=1.0):
                        return
                except Exception:  # noqa: BLE001 - not listening yet: any transport error means "wait"
                    pass
                time.sleep(0.1)
        finally:
            client.close()
        raise ServerError(f"tritonserver not ready after {timeout_s:.0f} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        if self._workdir is None or not self.log_path.is_file():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def kill(self) -> None:
        """End the server at once (SIGKILL), as a crash would; the work folder stays for a restart."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        self.process = None
        self._remove_shared_memory()

    def _remove_shared_memory(self) -> None:
        """A killed server leaves its python backend's shared-memory regions behind: remove them."""
        if self.grpc_port is not None:
            for region in Path("/dev/shm").glob(self.shm_prefix + "*"):
                region.unlink(missing_ok=True)

    def stop(self, timeout_s: float = 15.0) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            try:
                os.killpg(process.pid, signal.SIGTERM)
                process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
            except ProcessLookupError:
                pass
        self._remove_shared_memory()
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    def __enter__(self) -> TritonServer:
        return self.start() if self.process is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _Stopped(BaseException):
    """SIGTERM or SIGHUP arrived: stop as Ctrl-C does."""


def _stop_on_signal(signum: int, frame: object) -> None:
    raise _Stopped(signal.Signals(signum).name)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m edgernn.export.triton.server",
        description="Serve Triton model repositories on 127.0.0.1 (gRPC) with the tritonserver of "
        "pip install 'edgernn[serve]'. SIGTERM, SIGHUP or Ctrl-C stops it.",
    )
    parser.add_argument(
        "repository", type=Path, nargs="+", help="model repositories (edgernn deploy --target triton)"
    )
    parser.add_argument("--grpc-port", type=int, default=8001, help="port on 127.0.0.1 (default 8001)")
    args = parser.parse_args(argv)
    for repository in args.repository:
        if not repository.is_dir():
            _fail(f"{str(repository)!r}: expected a model repository directory, found none", 2)
    if not 0 < args.grpc_port < 65536:
        _fail(f"--grpc-port: expected a port in 1..65535, got {args.grpc_port}", 2)
    server = TritonServer(args.repository, grpc_port=args.grpc_port)
    signals = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {sig: signal.getsignal(sig) for sig in signals}
    signal.signal(signal.SIGTERM, _stop_on_signal)
    signal.signal(signal.SIGHUP, _stop_on_signal)
    error: tuple[str, int] | None = None
    try:
        server.start()
        print(
            f"serving {', '.join(map(str, args.repository))} on {server.grpc_url} (gRPC); "
            "Ctrl-C or SIGTERM stops",
            file=sys.stderr,
        )
        code = server.process.wait()
        error = (f"tritonserver exited with {code}:\n{server.log_tail()}", 1)
    except (KeyboardInterrupt, _Stopped):
        pass
    except PortInUse as exc:
        error = (str(exc), 2)
    except ServerError as exc:
        error = (str(exc), 1)
    finally:
        for sig in signals:  # a second signal must not cut the stop short and leave tritonserver running
            signal.signal(sig, signal.SIG_IGN)
        server.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if error is not None:
        _fail(*error)


def _fail(message: str, code: int) -> None:
    print(f"Error: {message}", file=sys.stderr)
    sys.exit(code)


if __name__ == "__main__":
    main()
