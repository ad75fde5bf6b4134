"""A real MLflow tracking server for tests: ``mlflow server`` on a free loopback port, its
backend store a fresh PostgreSQL database (127.0.0.1:5432, user postgres, trust), started as a
subprocess in its own process group and stopped by killing that group.

``stop`` and ``start`` again on the same database and port is a server that went away and
came back: what it had committed is still there, as it would be after a production restart.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from pulse_assets_tests.ports import free_port

HOST = "127.0.0.1"
MLFLOW = str(Path(sys.executable).parent / "mlflow")
START_TIMEOUT_S = 120.0  # a fresh database runs MLflow's migrations first
LOG_TAIL_CHARS = 3000


@dataclass
class MlflowServer:
    """``mlflow server`` with ``backend_uri`` as its backend store and artifacts proxied to
    ``artifacts_destination`` (a folder or ``s3://bucket/prefix``); ``env`` adds to the
    server's environment (S3 endpoint and credentials). Clients reach the artifacts through
    the server with an experiment location of ``mlflow-artifacts:/...``."""

    backend_uri: str
    artifacts_destination: str
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self) -> MlflowServer:
        command = [
            MLFLOW,
            "server",
            "--backend-store-uri",
            self.backend_uri,
            "--artifacts-destination",
            self.artifacts_destination,
            "--host",
            HOST,
            "--port",
            str(self.port),
            "--workers",
            "1",
        ]
        environment = os.environ | {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"} | self.env
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=environment,
                start_new_session=True,
            )
        self._wait_healthy()
        return self

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"mlflow server exited with code {self.process.returncode} at start; "
                    f"its log ends:\n{self.log_tail()}"
                )
            with contextlib.suppress(OSError, urllib.error.URLError):
                with urllib.request.urlopen(f"{self.url}/health", timeout=1) as answer:
                    if answer.status == 200:
                        return
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(
            f"mlflow server at {self.url} not healthy after {START_TIMEOUT_S:.0f}s; its log "
            f"ends:\n{self.log_tail()}"
        )

    def stop(self, sig: signal.Signals = signal.SIGKILL) -> None:
        """Kill the server's whole process group (the CLI, uvicorn and its workers) and wait
        until nothing listens on the port any more. SIGKILL is a server that goes away."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, sig)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self.process = None
        self._wait_port_closed()

    def _wait_port_closed(self) -> None:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                socket.create_connection((HOST, self.port), 0.2).close()
            except OSError:
                return
            time.sleep(0.1)
        raise RuntimeError(f"something still listens on {self.url} after the server was killed")

    def log_tail(self) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return text[-LOG_TAIL_CHARS:]


@contextlib.contextmanager
def mlflow_server(
    backend_uri: str, artifacts_destination: str, log_path: Path, env: dict[str, str] | None = None
) -> Iterator[MlflowServer]:
    server = MlflowServer(backend_uri, artifacts_destination, log_path, env or {}).start()
    try:
        yield server
    finally:
        server.stop()
