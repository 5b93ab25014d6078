"""`python -m shared replay --rules DIR` sends the new alerts through DIR/routes.yaml as delivery_fn would."""

from __future__ import annotations

import logging
import shutil
import textwrap
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from shared.cli.main import main
from tests.conftest import SAMPLES
from tests.delivery.conftest import DeliveryTables
from tests.delivery.receiver import receiving

RULES = Path(__file__).resolve().parents[2] / "rules"


@pytest.fixture(autouse=True)
def _keep_log_levels() -> Iterator[None]:
    """replay quiets the `stormwatch` loggers for its terminal; in-process, put them back for other tests."""
    logger = logging.getLogger("stormwatch")
    level = logger.level
    yield
    logger.setLevel(level)


def test_replay_delivers_through_the_folders_routes(delivery_tables: DeliveryTables, app_env: pytest.MonkeyPatch,
                                                   tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rules = tmp_path / "myrules"
    shutil.copytree(RULES, rules)
    (rules / "routes.yaml").write_text(textwrap.dedent("""
        routes:
          - name: laptop
            match: {min_severity: medium}
            destination: {type: webhook, format: slack, url_setting: MY_HOOK}
        """))
    app_env.setenv("STORMWATCH_STATE_TABLE", f"state{delivery_tables.alerts[6:]}")
    app_env.setenv("STORMWATCH_INVENTORY_TABLE", f"inventory{delivery_tables.alerts[6:]}")
    with receiving() as receiver:
        app_env.setenv("MY_HOOK", receiver.url)
        assert main(["replay", "--rules", str(rules), str(SAMPLES / "attack/delete-spike.json")]) == 0
        out, err = capsys.readouterr()
        assert main(["replay", "--rules", str(rules), str(SAMPLES / "attack/delete-spike.json")]) == 0
        again = capsys.readouterr().err
    alerts = [orjson.loads(line) for line in out.splitlines()]
    routed = [alert for alert in alerts if alert["severity"] in ("medium", "high", "critical")]
    assert routed and len(receiver.received) == len(routed)
    assert all(item.json()["blocks"][0]["type"] == "header" for item in receiver.received)
    assert f"{len(routed)} deliveries routed, {len(routed)} delivered, 0 waiting to retry, 0 failed" in err
    assert "0 deliveries routed, 0 delivered" in again  # a replay of the same input sends nothing twice


def test_replay_without_routes_says_nothing_was_delivered(delivery_tables: DeliveryTables,
                                                          app_env: pytest.MonkeyPatch, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    rules = tmp_path / "bare"
    shutil.copytree(RULES, rules)
    (rules / "routes.yaml").unlink()
    app_env.setenv("STORMWATCH_STATE_TABLE", f"state{delivery_tables.alerts[6:]}")
    app_env.setenv("STORMWATCH_INVENTORY_TABLE", f"inventory{delivery_tables.alerts[6:]}")
    assert main(["replay", "--rules", str(rules), str(SAMPLES / "attack/delete-spike.json")]) == 0
    assert "routes.yaml: nothing delivered" in capsys.readouterr().err
