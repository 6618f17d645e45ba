"""Start and stop a real NVIDIA Triton Inference Server from the ``nvidia-pytriton`` wheel.

The wheel carries a ``tritonserver`` binary (2.51) with the Python backend. Using it takes three
preparations this module does once: a backend directory holding the Python backend plus the stub
built for this interpreter, the interpreter's libpython on ``LD_LIBRARY_PATH``, and loopback
addresses. In a container from NGC, pass ``binary=/opt/tritonserver/bin/tritonserver`` and
``backend_dir=/opt/tritonserver/backends`` instead (BUILD.md).
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path


class TritonError(RuntimeError):
    pass


def _pytriton_dir() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise TritonError("the Triton server binary is missing: run `make install` "
                          "(it installs nvidia-pytriton==0.7.0 with --no-deps)")
    return Path(list(spec.submodule_search_locations)[0]) / "tritonserver"


def locate_binary() -> Path:
    binary = _pytriton_dir() / "bin" / "tritonserver"
    if not binary.exists():
        raise TritonError(f"no tritonserver binary at {binary}; reinstall nvidia-pytriton==0.7.0")
    return binary


def prepare_backend_dir(target: Path | None = None) -> Path:
    """A backend directory with the Python backend and the stub for this Python version.

    The wheel's own folder may be read-only, so the backend is assembled elsewhere (links where
    possible)."""
    source = _pytriton_dir()
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = source / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.exists():
        raise TritonError(f"the Triton wheel has no Python backend stub for Python {version}")
    target = Path(target or Path(tempfile.gettempdir()) / f"tworec-triton-backends-{os.getuid()}")
    python_dir = target / "python"
    python_dir.mkdir(parents=True, exist_ok=True)
    for path in list((source / "backends" / "python").iterdir()) + [stub]:
        if path.name == "__pycache__":
            continue
        dest = python_dir / path.name
        if not dest.exists():
            try:
                dest.symlink_to(path)
            except OSError:
                shutil.copy2(path, dest)
    return target


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@dataclass
class TritonConfig:
    model_repository: str
    host: str = "127.0.0.1"  # loopback unless told otherwise
    grpc_port: int = 0  # 0: pick a free port
    http_port: int = 0
    metrics_port: int = 0
    binary: str | None = None
    backend_dir: str | None = None
    model_control_mode: str = "poll"  # poll: new versions in the repository load by themselves
    repository_poll_secs: int = 2
    startup_timeout_s: float = 120.0
    exit_timeout_s: int = 10
    log_verbose: int = 0
    extra_args: list = field(default_factory=list)


def remove_shm_regions(prefix: str, shm_dir: str = "/dev/shm") -> list:
    """Remove the shared-memory regions whose names start with ``prefix``; the names removed."""
    try:
        names = [n for n in os.listdir(shm_dir) if n.startswith(prefix)]
    except OSError:  # no /dev/shm here
        return []
    for name in names:
        try:
            os.unlink(os.path.join(shm_dir, name))
        except OSError:
            pass
    return names


class TritonServer:
    """``with TritonServer(TritonConfig(repo)) as server:`` → ``server.grpc_address`` is ready."""

    def __init__(self, config: TritonConfig, log_path: str | None = None):
        self.config = config
        self.process: subprocess.Popen | None = None
        if log_path is None:  # created now (mkstemp), so no other process can take the name
            handle, log_path = tempfile.mkstemp(prefix="tritonserver-", suffix=".log")
            os.close(handle)
        self.log_path = log_path
        self._ports = {}
        # The Python backend's shared-memory regions get this server's own name prefix, so the ones
        # a killed server leaves in /dev/shm (~1 MB per model instance) can be found and removed.
        self.shm_prefix = f"tworec_triton_{os.getpid()}_{uuid.uuid4().hex[:8]}_"

    @property
    def ports(self) -> dict:
        """{"grpc_port", "http_port", "metrics_port"} in use (after start)."""
        return {f"{name}_port": port for name, port in self._ports.items()}

    @property
    def grpc_address(self) -> str:
        return f"{self.config.host}:{self._ports['grpc']}"

    @property
    def http_address(self) -> str:
        return f"{self.config.host}:{self._ports['http']}"

    def command(self) -> list:
        c = self.config
        for name in ("grpc", "http", "metrics"):
            self._ports[name] = getattr(c, f"{name}_port") or free_port(c.host)
        return [
            str(c.binary or locate_binary()),
            f"--model-repository={c.model_repository}",
            f"--backend-directory={c.backend_dir or prepare_backend_dir()}",
            f"--grpc-address={c.host}", f"--grpc-port={self._ports['grpc']}",
            f"--http-address={c.host}", f"--http-port={self._ports['http']}",
            f"--metrics-address={c.host}", f"--metrics-port={self._ports['metrics']}",
            f"--model-control-mode={c.model_control_mode}",
            *( [f"--repository-poll-secs={c.repository_poll_secs}"] if c.model_control_mode == "poll" else []),
            f"--exit-timeout-secs={c.exit_timeout_s}",
            f"--log-verbose={c.log_verbose}",
            "--allow-cpu-metrics=false", "--allow-gpu-metrics=false",
            f"--backend-config=python,shm-region-prefix-name={self.shm_prefix}",
            *c.extra_args,
        ]

    def environment(self) -> dict:
        env = dict(os.environ)
        libdir = sysconfig.get_config_var("LIBDIR") or ""
        env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (libdir, env.get("LD_LIBRARY_PATH")) if p)
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        return env

    def start(self) -> "TritonServer":
        if not Path(self.config.model_repository).is_dir():
            raise TritonError(f"model repository {self.config.model_repository} does not exist")
        command = self.command_line = self.command()
        self._log = open(self.log_path, "ab")
        try:
            self.process = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT,
                                            env=self.environment(), start_new_session=True)
        except OSError as err:
            self._log.close()
            raise TritonError(f"cannot run tritonserver {command[0]}: {err.strerror}; run `make install` "
                              f"(the binary comes with nvidia-pytriton) or point to a working one") from err
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(Path(self.log_path).read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def wait_ready(self):
        import tritonclient.grpc as grpcclient

        deadline = time.monotonic() + self.config.startup_timeout_s
        client = grpcclient.InferenceServerClient(self.grpc_address)
        try:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise TritonError(f"tritonserver ({self.command_line[0]}) exited with code "
                                      f"{self.process.returncode} at start-up; check the binary "
                                      f"(`make install`) and its log {self.log_path}:\n"
                                      f"{self.log_tail()}")
                try:
                    if client.is_server_ready():
                        return
                except Exception:  # noqa: BLE001 - not listening yet
                    pass
                time.sleep(0.2)
        finally:
            client.close()
        raise TritonError(f"tritonserver not ready after {self.config.startup_timeout_s:.0f}s "
                          f"(log {self.log_path}):\n"
                          f"{self.log_tail()}")

    def stop(self, timeout: float | None = None):
        """SIGTERM (Triton finishes in-flight requests), then SIGKILL if it outstays ``timeout``."""
        if self.process is None:
            return
        timeout = timeout if timeout is not None else self.config.exit_timeout_s + 5
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        try:  # backend stubs left behind by a server that died on its own
            os.killpg(self.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        remove_shm_regions(self.shm_prefix)  # a server that exits cleanly has removed them itself
        self._log.close()
        self.process = None

    def __enter__(self) -> "TritonServer":
        return self.start()

    def __exit__(self, *exc):
        self.stop()
