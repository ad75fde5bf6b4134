"""A real S3-compatible server for tests: moto's standalone server on a free loopback port,
started as a subprocess, and a TCP proxy in front of it that can cut a request mid-body.

The proxy is how a test sees "the network went away during a PUT" while the server, and
the state it holds in memory, stay up to be read afterwards: moto keeps its buckets in the
server process, so stopping the server itself loses the previous object along with the
failed write and cannot show that the previous object survived.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from pulse_assets_tests.ports import free_port

HOST = "127.0.0.1"
REGION = "us-east-1"
ACCESS_KEY_ID = "AKIAPULSETESTKEY0001"
# A secret planted in the environment: no error message or log line may contain it.
PLANTED_SECRET = "pulse-planted-S3-secret-7f3a9c1e5b"


def _wait_for_port(port: int, process: subprocess.Popen[bytes] | None, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"moto_server exited with code {process.returncode} at start")
        with contextlib.suppress(OSError), socket.create_connection((HOST, port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {HOST}:{port} after {timeout_s}s")


@dataclass
class MotoServer:
    """``python -m moto.server`` on ``port``; ``stop`` kills it (and its in-memory state)."""

    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self) -> MotoServer:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", HOST, "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait_for_port(self.port, self.process, timeout_s=30)
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


class CuttingProxy:
    """A TCP proxy to ``upstream_port``. While ``cut_body_after`` is set, a request passes
    its headers and that many bytes of its body, then both sides of the connection are
    closed: an upload cut off mid-body, as when a network path fails."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.cut_body_after: int | None = None
        self.cuts = 0
        self._listener = socket.create_server((HOST, 0))
        self.port = int(self._listener.getsockname()[1])
        self._closing = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def endpoint(self) -> str:
        return f"http://{HOST}:{self.port}"

    def close(self) -> None:
        self._closing = True
        self._listener.close()

    def _accept(self) -> None:
        while not self._closing:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection((HOST, self.upstream_port))
            threading.Thread(target=self._pump_up, args=(client, upstream), daemon=True).start()
            threading.Thread(target=_pump, args=(upstream, client), daemon=True).start()

    def _pump_up(self, client: socket.socket, upstream: socket.socket) -> None:
        pending = b""
        with contextlib.suppress(OSError):
            while chunk := client.recv(65536):
                if self.cut_body_after is None:
                    upstream.sendall(chunk)
                    continue
                pending += chunk
                head_end = pending.find(b"\r\n\r\n")
                if head_end < 0 or len(pending) < head_end + 4 + self.cut_body_after:
                    continue
                upstream.sendall(pending[: head_end + 4 + self.cut_body_after])
                self.cuts += 1
                break
        _close(client, upstream)


def _pump(source: socket.socket, target: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while chunk := source.recv(65536):
            target.sendall(chunk)
    _close(source, target)


def _close(*sockets: socket.socket) -> None:
    for sock in sockets:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()


def aws_environment(monkeypatch: pytest.MonkeyPatch, endpoint: str | None = None) -> None:
    """Credentials (the planted secret) from the environment only; no profile or config file
    of the machine can interfere; ``endpoint`` as the standard ``AWS_ENDPOINT_URL_S3``."""
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", PLANTED_SECRET)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/pulse-aws-config")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/pulse-aws-credentials")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    if endpoint is None:
        monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    else:
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", endpoint)


@contextlib.contextmanager
def moto_server() -> Iterator[MotoServer]:
    server = MotoServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def moto() -> Iterator[MotoServer]:
    """One moto server for the session; each test uses its own bucket."""
    with moto_server() as server:
        yield server


def new_bucket(client: Any, name: str) -> str:
    client.create_bucket(Bucket=name)
    return name
