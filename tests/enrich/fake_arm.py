"""A real HTTP server on 127.0.0.1 that answers like Azure Resource Manager, for the enrichment tests.

It serves the documents in `tests/enrich/arm/` at their paths (case-insensitively), insists on an
`api-version` like ARM does, dismisses alerts on `POST .../dismiss` (204), answers ARM's error shapes for
unknown paths, and plays scripted answers (403, 429 with Retry-After, 5xx, slow answers) before the
normal one. Every request is recorded, so a test can tell whether an answer came from the cache.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict, deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import orjson

ARM_DATA = Path(__file__).parent / "arm"
SUBSCRIPTION = "a1b2c3d4-1111-4111-8111-000000000001"
# What ARM says about the caller in a 403; the API must not pass this on to its own callers.
CALLER_DETAILS = ("The client 'da7e0000-0000-4000-8000-0000000000d4' with object id "
                  "'da7e0000-0000-4000-8000-0000000000d4'")


def arm_path(name: str) -> str:
    """The path of a document in `tests/enrich/arm/` by file stem, e.g. `nsg-web`."""
    path: str = orjson.loads((ARM_DATA / f"{name}.json").read_bytes())["path"]
    return path


def arm_body(name: str) -> dict[str, Any]:
    body: dict[str, Any] = orjson.loads((ARM_DATA / f"{name}.json").read_bytes())["body"]
    return body


@dataclass
class Answer:
    status: int
    body: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]


def forbidden(action: str) -> Answer:
    return Answer(403, {"error": {"code": "AuthorizationFailed", "message":
                                  f"{CALLER_DETAILS} does not have authorization to perform action '{action}' "
                                  "over scope '/subscriptions/a1b2c3d4-1111-4111-8111-000000000001' or the "
                                  "scope is invalid."}})


def throttled(seconds: int) -> Answer:
    return Answer(429, {"error": {"code": "TooManyRequests", "message": "The request is being throttled."}},
                  {"Retry-After": str(seconds)})


def failing(status: int = 503) -> Answer:
    return Answer(status, {"error": {"code": "ServiceUnavailable", "message": "The service is unavailable."}})


class FakeArm:
    def __init__(self) -> None:
        self.documents: dict[str, dict[str, Any]] = {}
        for file in sorted(ARM_DATA.glob("*.json")):
            entry = orjson.loads(file.read_bytes())
            self.documents[entry["path"].lower()] = entry["body"]
        self.scripts: dict[str, deque[Answer]] = defaultdict(deque)
        self.requests: list[Recorded] = []
        self._lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.server.daemon_threads = True
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}"

    def script(self, path: str, *answers: Answer) -> None:
        """Answers to give, in order, to the next requests of `path` before the normal answer."""
        self.scripts[path.lower()].extend(answers)

    def calls(self, path: str | None = None, method: str = "GET") -> list[Recorded]:
        return [call for call in self.requests
                if call.method == method and (path is None or call.path.lower() == path.lower())]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def answer(self, method: str, path: str, query: dict[str, str]) -> Answer:
        key = path.lower()
        with self._lock:
            if self.scripts[key]:
                return self.scripts[key].popleft()
        if "api-version" not in query:
            return Answer(400, {"error": {"code": "MissingApiVersionParameter", "message":
                                          "The api-version query parameter (?api-version=) is required."}})
        if method == "POST" and key.endswith("/dismiss") and key.removesuffix("/dismiss") in self.documents:
            self.documents[key.removesuffix("/dismiss")]["properties"]["status"] = "Dismissed"
            return Answer(204)
        if method == "GET" and key in self.documents:
            return Answer(200, self.documents[key])
        return Answer(404, {"error": {"code": "ResourceNotFound",
                                      "message": f"The Resource '{path}' was not found."}})


def _handler(arm: FakeArm) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def _reply(self) -> None:
            parts = urlsplit(self.path)
            query = dict(parse_qsl(parts.query))
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            with arm._lock:
                arm.requests.append(Recorded(self.command, parts.path, query, dict(self.headers.items())))
            answer = arm.answer(self.command, parts.path, query)
            if answer.delay:
                time.sleep(answer.delay)
            payload = orjson.dumps(answer.body) if answer.body is not None else b""
            self.send_response(answer.status)
            for name, value in answer.headers.items():
                self.send_header(name, value)
            if payload:
                self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            try:
                self.wfile.write(payload)
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True  # the client gave up waiting (timeout tests)

        do_GET = do_POST = _reply  # noqa: N815 - http.server's dispatch names

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: the recorded requests are what tests look at."""

    return Handler


def running() -> Iterator[FakeArm]:
    arm = FakeArm()
    try:
        yield arm
    finally:
        arm.close()
