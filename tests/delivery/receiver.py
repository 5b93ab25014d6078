"""A real webhook receiver on 127.0.0.1 for the delivery tests: it records every request, answers with
scripted statuses, can die after a number of requests (and come back on the same port), and keeps each
alert once by its idempotency key, as a receiver following the README would."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)


@dataclass
class Receiver:
    port: int = 0
    answers: list[int] = field(default_factory=list)  # statuses to answer, in order; then 200
    retry_after: str | None = None  # sent with every answer that is not 2xx
    die_after: int | None = None  # stop listening once this many requests have been answered
    received: list[Received] = field(default_factory=list)
    kept: dict[str, Received] = field(default_factory=dict)  # by Idempotency-Key: what the receiver acts on
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                request = Received(self.path, {name.lower(): value for name, value in self.headers.items()}, body)
                with receiver._lock:
                    receiver.received.append(request)
                    status = receiver.answers.pop(0) if receiver.answers else 200
                    if 200 <= status < 300:
                        receiver.kept.setdefault(request.headers.get("idempotency-key", ""), request)
                    dying = receiver.die_after is not None and len(receiver.received) >= receiver.die_after
                self.send_response(status)
                if receiver.retry_after and not 200 <= status < 300:
                    self.send_header("Retry-After", receiver.retry_after)
                self.send_header("Content-Length", "0")
                self.end_headers()
                if dying:
                    receiver.die_after = None
                    threading.Thread(target=receiver.stop).start()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()

    @property
    def running(self) -> bool:
        return self._server is not None


@contextmanager
def receiving(**options: Any) -> Iterator[Receiver]:
    receiver = Receiver(**options).start()
    try:
        yield receiver
    finally:
        receiver.stop()
