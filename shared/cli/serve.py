"""`python -m shared serve`: the app's HTTP functions on 127.0.0.1, without the Functions host.

Whatever HTTP functions `function_app.app` registers are served, under the same route prefix (`api`,
or host.json's `extensions.http.routePrefix`) and route templates as under `func start`: each request
becomes an `azure.functions.HttpRequest`, is dispatched to the function whose route and methods match,
and the function's `HttpResponse` is written back. Like `func start`, no function key is checked.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import json
import queue
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO, Any, cast
from urllib.parse import parse_qsl, unquote, urlsplit

import azure.functions as func
import orjson

from shared.cli.usage import UsageError

REPO = Path(__file__).resolve().parents[2]
MAX_BODY_BYTES = 16 * 1024 * 1024  # beyond this the request is refused before it is read
_READY = re.compile(r"serving \d+ HTTP functions on (?P<url>http://127\.0\.0\.1:\d+/\S*)")
_PARAMETER = re.compile(r"\{(\*{0,2})([A-Za-z_]\w*)(?::[^}]*)?(\?)?\}")


def compile_route(template: str) -> re.Pattern[str]:
    """A route template (`enrich/ip/{ip}`, `files/{*path}`, `items/{id:int?}`) as a regex on the
    still-encoded path; literal parts match case-insensitively, as ASP.NET Core routing does."""
    pattern, position = "", 0
    for match in _PARAMETER.finditer(template):
        pattern += re.escape(template[position:match.start()])
        catch_all, name, optional = match.groups()
        if catch_all:
            pattern += f"(?P<{name}>.*)"
        elif optional and pattern.endswith("/"):
            pattern = pattern[:-1] + f"(?:/(?P<{name}>[^/]+))?"
        else:
            pattern += f"(?P<{name}>[^/]+)" if not optional else f"(?P<{name}>[^/]*)"
        position = match.end()
    pattern += re.escape(template[position:])
    return re.compile(pattern, re.IGNORECASE)


@dataclass(frozen=True)
class HttpFunction:
    name: str
    template: str
    route: re.Pattern[str]
    methods: frozenset[str] | None
    argument: str
    call: Callable[..., Any]
    unsupported: str | None  # why it cannot run here (an extra input binding), or None

    @property
    def specificity(self) -> tuple[int, int, int]:
        """Literal routes before parameterised ones, catch-alls last (ASP.NET's order, simplified)."""
        parameters = _PARAMETER.findall(self.template)
        return (any(star for star, _, _ in parameters), len(parameters), -len(self.template))


def http_functions(functions: Iterable[Any]) -> list[HttpFunction]:
    """The HTTP-triggered functions of an app (`FunctionApp.get_functions()`), most specific first."""
    found: list[HttpFunction] = []
    for function in functions:
        if not function.is_http_function():
            continue
        trigger = function.get_trigger()
        template = (trigger.route or function.get_function_name()).strip("/")
        methods = frozenset(str(getattr(method, "value", method)).upper() for method in trigger.methods) \
            if trigger.methods else None
        extra = [binding.name for binding in function.get_bindings()
                 if binding is not trigger and binding.name != "$return"]
        found.append(HttpFunction(
            name=function.get_function_name(), template=template, route=compile_route(template), methods=methods,
            argument=trigger.name, call=function.get_user_function(),
            unsupported=f"input bindings {extra} need the Functions host" if extra else None))
    return sorted(found, key=lambda function: function.specificity)


def route_prefix(host_json: Path = REPO / "host.json") -> str:
    try:
        document = json.loads(host_json.read_text())
    except (OSError, ValueError):
        return "api"
    prefix = document.get("extensions", {}).get("http", {}).get("routePrefix", "api")
    return str(prefix).strip("/")


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> func.HttpResponse:
    return func.HttpResponse(orjson.dumps({"error": {"status": status, "message": message}}), status_code=status,
                             mimetype="application/json", headers=headers)


class Dispatcher:
    """Finds the function for a method and raw path and runs it, as the host would."""

    def __init__(self, functions: list[HttpFunction], prefix: str) -> None:
        self.functions = functions
        self.prefix = f"/{prefix}" if prefix else ""

    def dispatch(self, method: str, target: str, headers: dict[str, str], body: bytes,
                 base_url: str) -> func.HttpResponse:
        parts = urlsplit(target)
        if not parts.path.lower().startswith(self.prefix.lower() + "/"):
            return _error(404, "no function at this path")
        path = parts.path[len(self.prefix) + 1:]
        routed = [(function, match) for function in self.functions
                  if (match := function.route.fullmatch(path)) is not None]
        if not routed:
            return _error(404, "no function at this path")
        allowed = [(function, match) for function, match in routed
                   if function.methods is None or method in function.methods]
        if not allowed:
            methods = sorted({m for function, _ in routed for m in function.methods or ()})
            return _error(405, f"method {method} not allowed", {"Allow": ", ".join(methods)})
        function, match = allowed[0]
        if function.unsupported:
            return _error(501, f"{function.name}: {function.unsupported}")
        params: dict[str, str] = {}
        for key, value in parse_qsl(parts.query, keep_blank_values=True):
            params.setdefault(key, value)  # first value wins, for one reading of a repeated parameter
        route_params = {key: unquote(value) for key, value in match.groupdict().items() if value is not None}
        request = func.HttpRequest(method, base_url + target, headers=headers, params=params,
                                   route_params=route_params, body=body)
        return self._run(function, request)

    @staticmethod
    def _run(function: HttpFunction, request: func.HttpRequest) -> func.HttpResponse:
        try:
            result = function.call(**{function.argument: request})
            if inspect.isawaitable(result):
                result = asyncio.run(_awaited(result))
        except Exception as error:  # the host answers 500 for a function that raises; so do we
            print(f"{function.name} raised {type(error).__name__}: {orjson.dumps(str(error)).decode()}",
                  file=sys.stderr)
            return _error(500, f"{function.name} raised {type(error).__name__}")
        if not isinstance(result, func.HttpResponse):
            return _error(500, f"{function.name} returned {type(result).__name__}, not an HttpResponse")
        return result


async def _awaited(result: Any) -> Any:
    return await result


_LOCAL_NAMES = ("127.0.0.1", "localhost")
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def _local_authority(value: str, port: int) -> bool:
    """`127.0.0.1` or `localhost`, with this server's port or none: what a browser on this machine sends."""
    try:
        parts = urlsplit(f"//{value}")
        return parts.hostname in _LOCAL_NAMES and parts.port in (None, port) and not parts.username
    except ValueError:
        return False


def refusal(method: str, headers: dict[str, str], port: int) -> func.HttpResponse | None:
    """Keep web pages out: another Host is DNS rebinding (a site's name resolved to 127.0.0.1), and a
    state-changing request from another origin is cross-site request forgery (dismissing an alert)."""
    if not _local_authority(headers.get("host", ""), port):
        return _error(403, "this local server answers only Host 127.0.0.1 or localhost")
    if method in _SAFE_METHODS:
        return None
    site = headers.get("sec-fetch-site")
    origin = headers.get("origin")
    if (site is not None and site not in ("same-origin", "none")) or (
            origin is not None and not (origin.startswith("http://") and _local_authority(origin[7:], port))):
        return _error(403, f"{method} from another site is refused")
    return None


def _handler(dispatcher: Dispatcher, quiet: bool) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: clients reuse one connection
        disable_nagle_algorithm = True  # headers and body leave as written, not after a delayed ACK

        def _serve(self) -> None:
            body, unreadable = self._body()
            headers = {key.lower(): value for key, value in self.headers.items()}
            port = cast(ThreadingHTTPServer, self.server).server_port
            refused = unreadable or refusal(self.command.upper(), headers, port)
            if refused is not None:
                self.close_connection = True
                response = refused
            else:
                base_url = f"http://{headers['host']}"
                response = dispatcher.dispatch(self.command.upper(), self.path, headers, body, base_url)
            self._write(response)

        def _body(self) -> tuple[bytes, func.HttpResponse | None]:
            if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
                return b"", _error(411, "send a Content-Length (chunked bodies are not supported)")
            length_text = self.headers.get("Content-Length") or "0"
            if not length_text.isdigit():
                return b"", _error(400, "invalid Content-Length")
            length = int(length_text)
            if length > MAX_BODY_BYTES:
                return b"", _error(413, f"body larger than {MAX_BODY_BYTES} bytes")
            return self.rfile.read(length), None

        def _write(self, response: func.HttpResponse) -> None:
            payload = response.get_body()
            self.send_response(response.status_code)
            content_type = response.mimetype or "text/plain"
            if response.charset and "charset" not in content_type:
                content_type += f"; charset={response.charset}"
            sent = {key.lower() for key, _ in response.headers.items()}
            if "content-type" not in sent:
                self.send_header("Content-Type", content_type)
            for key, value in response.headers.items():
                if key.lower() not in ("content-length", "transfer-encoding", "connection"):
                    self.send_header(key, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)

        # http.server dispatches on these names; every method goes through the same routing.
        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _serve  # noqa: N815

        def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
            if not quiet:  # the path only, never the query: a function key can ride in `?code=`; JSON-quoted
                print(f"{self.command} {orjson.dumps(urlsplit(self.path).path).decode()} {code}", file=sys.stderr)

        def log_message(self, format: str, *args: Any) -> None:
            if not quiet:
                super().log_message(format, *args)

    return Handler


def make_server(port: int, *, quiet: bool = False, app: Any = None) -> tuple[ThreadingHTTPServer, Dispatcher]:
    """A server bound to 127.0.0.1 (port 0: any free port) for the app's HTTP functions."""
    if app is None:
        if str(REPO) not in sys.path:
            sys.path.insert(0, str(REPO))
        app = importlib.import_module("function_app").app
    dispatcher = Dispatcher(http_functions(app.get_functions()), route_prefix())
    server = ThreadingHTTPServer(("127.0.0.1", port), _handler(dispatcher, quiet))
    server.daemon_threads = True
    return server, dispatcher


def serve(port: int, *, quiet: bool = False) -> int:
    try:
        server, dispatcher = make_server(port, quiet=quiet)
    except OSError as error:
        raise UsageError(f"cannot listen on 127.0.0.1:{port}: {error.strerror or error}") from None
    for function in dispatcher.functions:
        methods = ",".join(sorted(function.methods)) if function.methods else "*"
        print(f"  {methods:<5} {dispatcher.prefix}/{function.template}  ({function.name})", file=sys.stderr)
    print(f"serving {len(dispatcher.functions)} HTTP functions on http://127.0.0.1:{server.server_port}{dispatcher.prefix}/",
          file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


@dataclass
class ServedProcess:
    """`python -m shared serve` running as a child process (tests, benchmarks)."""

    process: subprocess.Popen[bytes]
    url: str  # e.g. http://127.0.0.1:41234/api

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def spawn(env: dict[str, str], timeout: float = 30.0) -> ServedProcess:
    """Start the server on a free port and return once it listens; its stderr keeps being drained."""
    command = [sys.executable, "-m", "shared", "serve", "--port", "0", "--quiet"]
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL,  # noqa: S603 - fixed
                               stderr=subprocess.PIPE)
    lines: queue.Queue[bytes] = queue.Queue()

    def drain(stream: IO[bytes]) -> None:
        for line in stream:
            lines.put(line)
        lines.put(b"")

    threading.Thread(target=drain, args=(cast(IO[bytes], process.stderr),), daemon=True).start()
    deadline, seen = time.monotonic() + timeout, []
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=max(0.0, deadline - time.monotonic())).decode(errors="replace")
        except queue.Empty:
            break
        seen.append(line)
        if ready := _READY.search(line):
            return ServedProcess(process, ready["url"].rstrip("/"))
        if not line:
            break
    ServedProcess(process, "").stop()
    raise RuntimeError("python -m shared serve did not start:\n" + "".join(seen[-20:]))
