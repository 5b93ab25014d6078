"""inventory_fn over the samples: the JSON endpoint through the registered function, and the dashboard
served by `python -m shared serve` as headless Chromium renders it."""

from __future__ import annotations

import os
import struct
import unicodedata
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import azure.functions as func
import orjson
import pytest
from azure.storage.blob import BlobServiceClient

from shared import __version__
from shared.caller import PRINCIPAL_HEADER
from shared.cli import azurite
from shared.cli.screenshot import capture, install_chromium, sample_inventory
from shared.cli.serve import spawn
from shared.clients import wiring
from shared.detect.alerts import Alert
from shared.detect.inventory_aggregates import DIMENSIONS, TOTALS
from shared.inventory.dashboard import html_response, render_dashboard
from shared.settings import Settings
from tests.conftest import indexed_functions
from tests.detect_fixtures import PRODUCTION
from tests.test_caller import READER_ONLY

MONTH = {"from": "2026-11-01", "to": "2026-11-30"}
# The samples as the golden tests pin them: completed deletes, Error/Critical events, failed sign-ins.
SAMPLE_TOTALS = {"deletes": 20, "errors": 16, "signin_failures": 27}


class Samples:
    def __init__(self, settings: Settings, events: int, alerts: list[Alert]) -> None:
        self.settings, self.events, self.alerts = settings, events, alerts

    def env(self) -> dict[str, str]:
        return {"STORMWATCH_STORAGE_CONNECTION_STRING": self.settings.storage_connection_string or "",
                "STORMWATCH_INVENTORY_TABLE": self.settings.inventory_table}


@pytest.fixture(scope="module")
def samples(azurite_instance: azurite.Azurite) -> Samples:
    """The bundled samples through normalize and detect, into tables of this module's own."""
    suffix = uuid.uuid4().hex[:10]
    settings = Settings(storage_connection_string=azurite_instance.connection_string, state_table=f"st{suffix}",
                        alerts_table=f"al{suffix}", inventory_table=f"inv{suffix}")
    events, alerts = sample_inventory(settings)
    return Samples(settings, events, alerts)


@pytest.fixture
def served_env(app_env: pytest.MonkeyPatch, samples: Samples) -> Iterator[Samples]:
    for name, value in samples.env().items():
        app_env.setenv(name, value)
    wiring.reset()
    yield samples


def call(name: str, **params: str) -> func.HttpResponse:
    handler = indexed_functions()[name].get_user_function()
    response: func.HttpResponse = handler(func.HttpRequest("GET", f"http://localhost/api/{name}", params=params,
                                                           body=b""))
    return response


def test_both_routes_are_get_with_function_keys() -> None:
    for name in ("inventory", "dashboard"):
        trigger = indexed_functions()[name].get_trigger()
        assert (trigger.route, str(trigger.auth_level.value).lower()) == (name, "function")


def test_the_json_endpoint_answers_the_samples_month(served_env: Samples) -> None:
    response = call("inventory", **MONTH)
    assert response.status_code == 200 and response.mimetype == "application/json"
    answer = orjson.loads(response.get_body())
    assert answer["totals"] == {"events": served_env.events, "alerts": len(served_env.alerts), **SAMPLE_TOTALS}
    assert len(answer["days"]) == 30 and sum(day["deletes"] for day in answer["days"]) == SAMPLE_TOTALS["deletes"]
    names = {item["name"]: item["events"] for item in answer["subscriptions"]}
    assert set(names) == {"Contoso Production", "Contoso Development", "Entra ID tenant"}
    assert sum(names.values()) == served_env.events
    latest = answer["latest_alerts"]
    assert len(latest) == 10 and latest[0]["rule_id"] == "log-analytics-workspace-deleted"  # the wipe's last step
    production = orjson.loads(call("inventory", subscription=PRODUCTION.upper(), top="3", **MONTH).get_body())
    assert production["subscriptions"] == [{"id": PRODUCTION, "name": "Contoso Production",
                                            "environment": "production", "events": names["Contoso Production"]}]
    assert all(len(values) <= 4 for values in production["top"].values())  # 3 + other


@pytest.mark.parametrize(("params", "message"), [
    ({"from": "2026-11-31"}, "'from' must be a date"),
    ({"to": "yesterday"}, "'to' must be a date"),
    ({"from": "2026-11-30", "to": "2026-11-01"}, "must not be after"),
    ({"from": "2024-01-01", "to": "2026-11-01"}, "at most 366 days"),
    ({"subscription": "a1b2c3d4' or 1 eq 1"}, "subscription GUID"),
    ({"top": "0"}, "'top' must be"),
    ({"to": "0001-01-05"}, "give 'from' too"),  # the default 30 days would start before year 1
    ({"from": "0001-01-01", "to": "0001-01-05", "top": "x"}, "'top' must be"),
    ({"to": "10000-01-01"}, "'to' must be a date"),
])
def test_bad_parameters_are_a_400_naming_the_parameter(served_env: Samples, params: dict[str, str],
                                                       message: str) -> None:
    for name in ("inventory", "dashboard"):
        response = call(name, **params)
        assert response.status_code == 400 and message in orjson.loads(response.get_body())["error"]["message"]


class Page(HTMLParser):
    """What the test reads off the rendered DOM: cards, trend series, and every table row per section."""

    def __init__(self) -> None:
        super().__init__()
        self.cards: dict[str, str] = {}
        self.series: dict[str, dict[str, Any]] = {}
        self.rows: dict[str, list[list[str]]] = {}
        self.links: list[str] = []
        self.external: list[str] = []
        self._section = ""
        self._card: str | None = None
        self._series: str | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        for name in ("src", "href"):
            if (found.get(name) or "").startswith(("http:", "https:", "//")):
                self.external.append(found[name] or "")
        if tag == "section":
            self._section = found.get("id") or ""
        elif tag == "dd":
            self._card = found.get("data-name")
        elif tag == "g" and found.get("data-series"):
            self._series = found["data-series"] or ""
            self.series[self._series] = {"total": int(found.get("data-total") or -1), "dots": 0}
        elif tag == "polyline" and self._series:
            self.series[self._series]["points"] = len((found.get("points") or "").split())
        elif tag == "circle" and self._series:
            self.series[self._series]["dots"] += 1
        elif tag == "tr":
            self.rows.setdefault(self._section, []).append([])
        elif tag == "td":
            self._cell = []
        elif tag == "a" and found.get("href"):
            self.links.append(found["href"] or "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self._cell is not None:
            self.rows[self._section][-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "g":
            self._series = None

    def handle_data(self, data: str) -> None:
        if self._card:
            self.cards[self._card] = data.strip()
            self._card = None
        if self._cell is not None:
            self._cell.append(data)


def png_size(path: Path) -> tuple[int, int]:
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    width, height = struct.unpack(">II", header[16:24])
    return width, height


@pytest.fixture(scope="module")
def chromium() -> str:
    try:
        return install_chromium()
    except (RuntimeError, OSError) as error:
        pytest.skip(f"headless Chromium unavailable: Debian's chromium package could not be installed ({error})")


def test_the_dashboard_renders_in_headless_chromium(samples: Samples, chromium: str, tmp_path: Path) -> None:
    served = spawn({**os.environ, **samples.env()})
    try:
        query = "&".join(f"{name}={value}" for name, value in MONTH.items())
        screenshot = tmp_path / "dashboard.png"
        page = Page()
        page.feed(capture(chromium, f"{served.url}/dashboard?{query}", screenshot))
        answer = orjson.loads(call_served(served.url, f"inventory?{query}"))
    finally:
        served.stop()
    assert png_size(screenshot)[0] == 1280 and screenshot.stat().st_size > 50_000
    assert page.external == []
    assert page.cards == {name: str(value) for name, value in answer["totals"].items()}
    for name, values in page.series.items():  # one point per day; a dot per non-zero day
        assert values == {"total": answer["totals"][name], "points": 30,
                          "dots": sum(1 for day in answer["days"] if day[name])}
    assert set(page.series) == {"deletes", "errors", "signin_failures", "alerts"}
    assert rows(page, "top-subscriptions") == [[item["name"], str(item["events"])] for item in answer["subscriptions"]]
    for name in ("resource_type", "resource_group", "region", "actor"):
        assert rows(page, f"top-{name}") == [[item["value"], str(item["events"])] for item in answer["top"][name]]
    alerts = page.rows["alerts"][1:]
    assert [row[2] for row in alerts] == [alert["rule_id"] for alert in answer["latest_alerts"]]
    assert any(link.startswith("enrich/resource?id=%2Fsubscriptions%2F") for link in page.links)


def rows(page: Page, section: str) -> list[list[str]]:
    """(value, count) of a Top-X table, header row left out."""
    return [[row[0], row[-1]] for row in page.rows[section][1:]]


def call_served(url: str, path: str) -> bytes:
    with urllib.request.urlopen(f"{url}/{path}", timeout=10) as response:  # noqa: S310 - 127.0.0.1 only
        body: bytes = response.read()
    return body


def test_the_range_defaults_to_the_last_30_days(served_env: Samples) -> None:
    answer = orjson.loads(call("inventory").get_body())
    today = datetime.now(UTC).date()
    assert (answer["from"], answer["to"]) == ((today - timedelta(days=29)).isoformat(), today.isoformat())
    assert len(answer["days"]) == 30


def test_bidi_and_other_invisible_characters_cannot_disguise_a_caller() -> None:
    spoof = "admin\u202egro.elpmaxe@evil"  # shows as "admin" + "live@example.org" reversed
    totals = dict.fromkeys(TOTALS, 1)
    answer = {"subscription": None, "from": "2026-11-01", "to": "2026-11-01", "catalog": [], "totals": totals,
              "days": [{"day": "2026-11-01", **totals}], "subscriptions": [],
              "top": {name: [{"value": spoof + "\u200b\n\u2066x\u2069", "events": 1}] for name in DIMENSIONS},
              "latest_alerts": [{"alert_id": "a", "time": "2026-11-01T00:00:00Z", "severity": "high",
                                 "rule_id": "r", "subscription_name": "s", "summary": f"deletes by {spoof}"}]}
    page = render_dashboard(answer)
    assert not any(unicodedata.category(char) in ("Cf", "Cc") for char in page.replace("\n", ""))
    assert "admin[U+202E]gro.elpmaxe@evil[U+200B][U+000A][U+2066]x[U+2069]" in page
    assert "deletes by admin[U+202E]gro.elpmaxe@evil" in page
    assert "Jürgen" in render_dashboard(answer | {"subscriptions": [{"id": "t", "name": "Jürgen", "events": 1}]})


def test_values_from_logs_are_escaped_and_nothing_is_fetched() -> None:
    hostile = '<script>alert(1)</script>"><img src=x>'
    totals = dict.fromkeys(TOTALS, 1)
    answer = {"subscription": None, "from": "2026-11-01", "to": "2026-11-01", "catalog": [], "totals": totals,
              "days": [{"day": "2026-11-01", **totals}],
              "subscriptions": [{"id": "tenant", "name": hostile, "events": 1}],
              "top": {name: [{"value": hostile, "events": 1}] for name in DIMENSIONS},
              "latest_alerts": [{"alert_id": "a", "time": "2026-11-01T00:00:00Z", "severity": "high",
                                 "rule_id": hostile, "subscription_name": hostile, "summary": hostile,
                                 "source_ip": hostile}]}
    page = render_dashboard(answer)
    assert "<script" not in page and "<img" not in page and "&lt;script&gt;" in page
    assert html_response(page).headers["Content-Security-Policy"].startswith("default-src 'none'")


def test_no_rendered_link_or_form_carries_a_function_key(served_env: Samples) -> None:
    page = call("dashboard", code="s3cr3t-function-key", **MONTH).get_body().decode()
    assert "s3cr3t-function-key" not in page and 'name="code"' not in page
    assert "<a href=" in page  # the enrichment links are there, without the key
    assert f"<footer>Stormwatch {__version__}</footer>" in page


def test_with_entra_sign_in_the_routes_need_a_signed_in_reader(served_env: Samples,
                                                               app_env: pytest.MonkeyPatch) -> None:
    app_env.setenv("STORMWATCH_HTTP_AUTH", "entra")
    for name in ("inventory", "dashboard"):
        assert call(name, **MONTH).status_code == 401
    handler = indexed_functions()["inventory"].get_user_function()
    signed_in = func.HttpRequest("GET", "http://localhost/api/inventory", params=MONTH, body=b"",
                                 headers={PRINCIPAL_HEADER: READER_ONLY})
    assert handler(signed_in).status_code == 200


def test_a_catalog_uploaded_to_the_rules_container_names_the_subscriptions(
        served_env: Samples, app_env: pytest.MonkeyPatch, azurite_instance: azurite.Azurite) -> None:
    container = BlobServiceClient.from_connection_string(azurite_instance.connection_string) \
        .get_container_client(f"rules-{uuid.uuid4().hex[:10]}")
    container.create_container()
    container.upload_blob("lists/subscriptions.yaml",
                          f"subscriptions:\n  {PRODUCTION}: {{name: Payments EU, environment: production}}\n")
    app_env.setenv("STORMWATCH_RULES_CONTAINER", container.container_name)
    wiring.reset()
    answer = orjson.loads(call("inventory", subscription=PRODUCTION, **MONTH).get_body())
    assert [item["name"] for item in answer["subscriptions"]] == ["Payments EU"]
