"""routes.yaml: validation that reports instead of raising, and which alerts a route selects."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from shared.delivery.routes import MAX_ROUTES, Match, load_routes
from shared.detect.rules.loader import load_rules
from tests.delivery.conftest import make_alert

REPO_RULES = Path(__file__).resolve().parents[2] / "rules"


def routes_in(tmp_path: Path, text: str) -> Path:
    (tmp_path / "routes.yaml").write_text(textwrap.dedent(text))
    return tmp_path


def test_the_shipped_routes_file_loads_and_is_not_read_as_a_rule() -> None:
    table = load_routes(REPO_RULES)
    assert not table.errors
    assert [route.name for route in table.routes] == ["sentinel"]
    assert not [error for error in load_rules(REPO_RULES).errors if "routes.yaml" in str(error)]


def test_no_file_is_no_routes_and_no_error(tmp_path: Path) -> None:
    table = load_routes(tmp_path)
    assert table.routes == [] and table.errors == []


def test_one_bad_route_is_reported_with_its_line_and_the_others_load(tmp_path: Path) -> None:
    table = load_routes(routes_in(tmp_path, """
        routes:
          - name: good
            destination: {type: webhook, url_setting: GOOD_URL}
          - name: bad
            destination:
              type: webhook
              url: https://prod.westeurope.logic.azure.com/workflows/x/triggers/manual/paths/invoke?sig=SECRET
          - name: good
            destination: {type: webhook, url_setting: OTHER}
        """))
    assert [route.name for route in table.routes] == ["good"]
    messages = [str(error) for error in table.errors]
    assert len(messages) == 2
    assert "routes[1].destination.webhook.url" in messages[0] and "app setting" in messages[0]
    assert ":6:" in messages[0]  # the line of its destination
    assert "SECRET" not in messages[0]
    assert "used twice" in messages[1]


@pytest.mark.parametrize("text", [
    "routes: [",  # not YAML
    "- a list",  # not a mapping
    "routes: {}",  # routes not a list
    "routes: []\nextra: 1",  # unknown key (reported; routes still load)
    "routes:\n  - name: x\n    destination: {type: carrier_pigeon}",
    "routes:\n  - name: x\n    destination: {type: webhook, url: 'http://example.com/hook'}",  # not https
    "routes:\n  - name: x\n    destination: {type: webhook, url: 'https://a', url_setting: B}",  # both
    "routes:\n  - name: x\n    destination: {type: webhook, url: 'https://hooks.slack.com/services/T/B/X'}",
    "routes:\n  - name: x\n    destination: {type: webhook, url: 'https://x.westeurope.logic.azure.com/w'}",
    "routes:\n  - name: 'a/b'\n    destination: {type: webhook, url_setting: B}",  # not a RowKey
    "routes:\n  - name: x\n    match: {min_severity: urgent}\n    destination: {type: webhook, url_setting: B}",
    "routes:\n  - name: x\n    destination: {type: log_analytics, stream: 'StormwatchAlerts_CL'}",  # no Custom-
    "x: &a [*a]",  # a recursive alias
    "\xff\xfe",  # not text
])
def test_a_broken_file_is_reported_never_raised(tmp_path: Path, text: str) -> None:
    (tmp_path / "routes.yaml").write_bytes(text.encode("latin-1"))
    table = load_routes(tmp_path)
    assert table.errors, text
    assert all(str(error).startswith(str(tmp_path / "routes.yaml")) for error in table.errors)


def test_too_many_routes_are_cut_with_an_error(tmp_path: Path) -> None:
    entries = "".join(f"  - name: r{index}\n    destination: {{type: webhook, url_setting: U}}\n"
                      for index in range(MAX_ROUTES + 1))
    table = load_routes(routes_in(tmp_path, "routes:\n" + entries))
    assert len(table.routes) == MAX_ROUTES and len(table.errors) == 1


def test_matching_by_severity_rule_globs_and_tags() -> None:
    alert = make_alert(1, rule_id="role-assignment-added", severity="medium", tags=["attack.persistence"])
    assert Match().selects(alert)
    assert Match(min_severity="medium").selects(alert)
    assert not Match(min_severity="high").selects(alert)
    assert Match(rules=["role-*"]).selects(alert)
    assert not Match(rules=["nsg-*", "defender-alert"]).selects(alert)
    assert Match(tags=["ATTACK.PERSISTENCE", "attack.t1078"]).selects(alert)
    assert not Match(tags=["attack.t1078"]).selects(alert)
    assert not Match(rules=["role-*"], tags=["attack.t1078"]).selects(alert)  # every criterion must hold


def test_a_literal_loopback_http_url_is_allowed_for_local_receivers(tmp_path: Path) -> None:
    table = load_routes(routes_in(tmp_path, """
        routes:
          - name: local
            destination: {type: webhook, url: "http://127.0.0.1:8080/hook"}
        """))
    assert not table.errors
