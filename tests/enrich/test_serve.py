"""`python -m shared serve`: route templates, dispatch to whatever HTTP functions an app registers, and
the real command serving the app's functions on 127.0.0.1."""

from __future__ import annotations

import http.client
from typing import Any
from urllib.parse import quote, urlsplit

import azure.functions as func
import orjson
import pytest

from shared.cli.serve import Dispatcher, ServedProcess, compile_route, http_functions, refusal
from shared.enrich.api import EXAMPLE_ALERT_ID
from tests.enrich.fake_arm import FakeArm, arm_path


@pytest.mark.parametrize(("template", "path", "expected"), [
    ("enrich/ip/{ip}", "enrich/ip/10.0.0.1", {"ip": "10.0.0.1"}),
    ("enrich/ip/{ip}", "ENRICH/IP/10.0.0.1", {"ip": "10.0.0.1"}),
    ("enrich/ip/{ip}", "enrich/ip/10.0.0.1/extra", None),
    ("enrich/ip/{ip}", "enrich/ip/", None),
    ("enrich/operation/{*name}", "enrich/operation/Microsoft.Sql/servers/write",
     {"name": "Microsoft.Sql/servers/write"}),
    ("items/{id:int}", "items/42", {"id": "42"}),
    ("items/{id?}", "items", {"id": None}),
    ("items/{id?}", "items/7", {"id": "7"}),
    ("files/{name}.json", "files/report.json", {"name": "report"}),
])
def test_route_templates(template: str, path: str, expected: dict[str, str] | None) -> None:
    match = compile_route(template).fullmatch(path)
    assert (match.groupdict() if match else None) == expected


def demo_app() -> Any:
    """A small app of its own: serve must run whatever HTTP functions are registered."""
    app = func.FunctionApp()

    @app.route(route="hello/{name}", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
    def hello(req: func.HttpRequest) -> func.HttpResponse:
        return func.HttpResponse(orjson.dumps({"name": req.route_params["name"], "q": req.params.get("q"),
                                               "url": req.url}), mimetype="application/json")

    @app.route(route="echo", methods=["POST"], trigger_arg_name="request")
    async def echo(request: func.HttpRequest) -> func.HttpResponse:
        return func.HttpResponse(request.get_body(), headers={"X-Echo": "yes"})

    @app.route(route="boom")
    def boom(req: func.HttpRequest) -> func.HttpResponse:
        raise RuntimeError("secret detail")

    @app.route(route="queued")
    @app.queue_output(arg_name="msg", queue_name="q", connection="AzureWebJobsStorage")
    def queued(req: func.HttpRequest, msg: func.Out[str]) -> func.HttpResponse:
        return func.HttpResponse("never")

    return app


@pytest.fixture(scope="module")
def dispatcher() -> Dispatcher:
    return Dispatcher(http_functions(demo_app().get_functions()), "api")


def send(dispatcher: Dispatcher, method: str, target: str, body: bytes = b"") -> func.HttpResponse:
    return dispatcher.dispatch(method, target, {"host": "127.0.0.1:1"}, body, "http://127.0.0.1:1")


def test_dispatch_by_route_and_method(dispatcher: Dispatcher) -> None:
    response = send(dispatcher, "GET", "/api/hello/J%C3%BCrgen%20K?q=1&q=2")
    assert response.status_code == 200
    assert orjson.loads(response.get_body()) == {"name": "Jürgen K", "q": "1",
                                                 "url": "http://127.0.0.1:1/api/hello/J%C3%BCrgen%20K?q=1&q=2"}
    echoed = send(dispatcher, "POST", "/api/echo", b"payload")
    assert (echoed.status_code, echoed.get_body(), echoed.headers["X-Echo"]) == (200, b"payload", "yes")


def test_what_the_host_would_refuse(dispatcher: Dispatcher) -> None:
    assert send(dispatcher, "GET", "/hello/x").status_code == 404  # no /api prefix
    assert send(dispatcher, "GET", "/api/nothing").status_code == 404
    wrong_method = send(dispatcher, "DELETE", "/api/hello/x")
    assert (wrong_method.status_code, wrong_method.headers["Allow"]) == (405, "GET")
    crashed = send(dispatcher, "GET", "/api/boom")
    assert crashed.status_code == 500 and b"secret detail" not in crashed.get_body()
    assert send(dispatcher, "GET", "/api/queued").status_code == 501


def fetch(served: ServedProcess, method: str, path: str, body: bytes = b"",
          headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    parts = urlsplit(served.url)
    connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=30)
    try:
        connection.request(method, parts.path + path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, {key.lower(): value for key, value in response.getheaders()}, response.read()
    finally:
        connection.close()


def test_served_on_loopback_under_the_api_prefix(served: ServedProcess) -> None:
    assert served.url.startswith("http://127.0.0.1:") and served.url.endswith("/api")
    status, headers, body = fetch(served, "GET", "/enrich/ip/13.68.20.7")
    assert (status, headers["content-type"]) == (200, "application/json; charset=utf-8")
    assert orjson.loads(body)["service_tags"][0]["name"] == "AzureMonitor"


def test_operation_names_with_slashes_as_they_are_or_encoded(served: ServedProcess) -> None:
    plain = fetch(served, "GET", "/enrich/operation/Microsoft.Network/networkSecurityGroups/securityRules/write")
    encoded = fetch(served, "GET", "/enrich/operation/" + quote(
        "Microsoft.Network/networkSecurityGroups/securityRules/write", safe=""))
    assert plain[0] == encoded[0] == 200
    assert plain[2] == encoded[2]


def test_resource_ids_in_the_query_encoded_or_not(served: ServedProcess, module_arm: FakeArm) -> None:
    rule = arm_path("rule-allow-9753")
    status, _, body = fetch(served, "GET", "/enrich/resource?id=" + quote(rule, safe=""))
    assert status == 200 and orjson.loads(body)["verdict"] == "allows inbound TCP 9753 from any source"
    assert fetch(served, "GET", f"/enrich/resource?id={rule}")[0] == 200
    double_encoded = quote(quote(arm_path("nsg-web") + "/../x", safe=""), safe="")
    assert fetch(served, "GET", f"/enrich/resource?id={double_encoded}")[0] == 400


def test_what_the_served_api_refuses(served: ServedProcess) -> None:
    assert fetch(served, "GET", "/enrich/nothing")[0] == 404
    assert fetch(served, "DELETE", "/enrich/ip/10.0.0.1")[0] == 405
    assert fetch(served, "POST", "/enrich/event", b"{", {"content-type": "application/json"})[0] == 400
    oversized = b'{"event_id": "' + b"x" * 70_000 + b'"}'
    assert fetch(served, "POST", "/enrich/event", oversized, {"content-type": "application/json"})[0] == 413
    assert fetch(served, "POST", "/enrich/event", b"{}", {"content-type": "text/plain"})[0] == 415


@pytest.mark.parametrize(("method", "headers", "refused"), [
    ("GET", {"host": "127.0.0.1:7071"}, False),
    ("GET", {"host": "localhost:7071"}, False),
    ("GET", {"host": "LOCALHOST"}, False),
    ("GET", {"host": "attacker.example:7071"}, True),  # DNS rebinding: a site's name resolved to 127.0.0.1
    ("GET", {"host": "127.0.0.1:8080"}, True),
    ("GET", {"host": "user@127.0.0.1:7071"}, True),
    ("GET", {"host": "127.0.0.1:x"}, True),
    ("GET", {}, True),
    ("GET", {"host": "127.0.0.1:7071", "origin": "http://attacker.example"}, False),  # reading is not changing
    ("POST", {"host": "127.0.0.1:7071", "origin": "http://127.0.0.1:7071"}, False),
    ("POST", {"host": "127.0.0.1:7071", "sec-fetch-site": "same-origin"}, False),
    ("POST", {"host": "127.0.0.1:7071"}, False),  # curl, scripts: no Origin
    ("POST", {"host": "127.0.0.1:7071", "origin": "http://attacker.example"}, True),
    ("POST", {"host": "127.0.0.1:7071", "origin": "null"}, True),
    ("POST", {"host": "127.0.0.1:7071", "origin": "https://127.0.0.1:7071.attacker.example"}, True),
    ("POST", {"host": "127.0.0.1:7071", "sec-fetch-site": "cross-site"}, True),
    ("POST", {"host": "127.0.0.1:7071", "sec-fetch-site": "same-site"}, True),
    ("DELETE", {"host": "127.0.0.1:7071", "origin": "http://localhost:9999"}, True),
])
def test_only_local_hosts_and_same_origin_changes_are_served(method: str, headers: dict[str, str],
                                                              refused: bool) -> None:
    answer = refusal(method, headers, 7071)
    assert (answer is not None and answer.status_code == 403) == refused


def test_dns_rebinding_and_cross_site_dismissal_are_refused_when_served(served: ServedProcess) -> None:
    port = urlsplit(served.url).port
    assert fetch(served, "GET", "/enrich/ip/10.0.0.1", headers={"Host": f"localhost:{port}"})[0] == 200
    status, _, body = fetch(served, "GET", "/enrich/ip/10.0.0.1", headers={"Host": f"rebound.example:{port}"})
    assert status == 403 and b"Host" in body
    dismiss = orjson.dumps({"id": EXAMPLE_ALERT_ID})
    json_type = {"content-type": "application/json"}
    for cross_site in ({"Origin": "http://attacker.example"}, {"Sec-Fetch-Site": "cross-site"}):
        status, _, body = fetch(served, "POST", "/enrich/alert/dismiss", dismiss, json_type | cross_site)
        assert status == 403 and b"another site" in body
    assert fetch(served, "POST", "/enrich/event", b"{", json_type | {"Origin": f"http://127.0.0.1:{port}"})[0] == 400
