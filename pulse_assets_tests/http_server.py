"""A real HTTP server on 127.0.0.1 that answers from a script, for source and client tests."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse


@dataclass
class Reply:
    status: int = 200
    body: Any = None
    raw: bytes | None = None
    delay_s: float = 0.0
    trickle_s: float = 0.0  # seconds between single bytes of the body: a server that trickles
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Script:
    """Replies in order (the last one repeats) and the requests the server received."""

    replies: list[Reply]
    requests: list[dict[str, Any]] = field(default_factory=list)

    def next_reply(self) -> Reply:
        index = min(len(self.requests) - 1, len(self.replies) - 1)
        return self.replies[index]


def _handler(script: Script) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server naming)
            length = int(self.headers.get("Content-Length") or 0)
            self.answer(json.loads(self.rfile.read(length) or b"null"))

        def do_GET(self) -> None:  # noqa: N802 (http.server naming)
            self.answer(None)

        def answer(self, body: Any) -> None:
            url = urlparse(self.path)
            script.requests.append(
                {
                    "path": url.path,
                    "query": {k: v[0] for k, v in parse_qs(url.query).items()},
                    "authorization": self.headers.get("Authorization"),
                    "body": body,
                }
            )
            reply = script.next_reply()
            if reply.delay_s:
                time.sleep(reply.delay_s)
            payload = reply.raw if reply.raw is not None else json.dumps(reply.body).encode()
            try:
                self.send_response(reply.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                if reply.trickle_s:
                    self.trickle(payload, reply.trickle_s)
                else:
                    self.wfile.write(payload)
            except (BrokenPipeError, ConnectionResetError):
                return

        def trickle(self, payload: bytes, pause_s: float) -> None:
            for byte in payload:
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
                time.sleep(pause_s)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            return

    return Handler


@contextmanager
def scripted_server(replies: list[Reply]) -> Iterator[tuple[str, Script]]:
    """Serve ``replies`` on a free loopback port; yields (base URL, script)."""
    script = Script(replies=replies)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(script))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", script
    finally:
        server.shutdown()
        server.server_close()
