"""Rules and lists uploaded to a blob container (Azurite's real Blob service) override or extend the
packaged ones, are picked up without a restart, and a broken upload is reported while the last good set
keeps running."""

from __future__ import annotations

import base64
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from azure.storage.blob import BlobServiceClient, ContainerClient

from shared.clients import wiring
from shared.clients.dead_letters import InMemoryDeadLetterStore
from shared.detect.engine import detector, rule_source
from shared.detect.rule_source import BlobRules, RuleSource
from shared.detect.rules.errors import LoadError
from shared.settings import get_settings
from tests.detect_fixtures import BURST_RULE, DEVELOPMENT, PRODUCTION, Tables, deletes, run, tables

__all__ = ["tables"]  # the fixture, used by name

EXTRA = textwrap.dedent("""
    title: Delete in development
    name: dev-delete
    id: 5e1f0000-0000-4000-8000-0000000000d1
    level: low
    logsource: {product: azure}
    detection: {deleted: {action: delete, subscription_id: DEV}, condition: deleted}
    """).replace("DEV", DEVELOPMENT)


@pytest.fixture
def container(tables: Tables, app_env: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[ContainerClient]:
    """A rules container of its own, checked on every batch; the packaged folder holds the burst rule."""
    packaged = tmp_path / "packaged"
    packaged.mkdir()
    (packaged / "burst.yaml").write_text(BURST_RULE)
    name = f"rules{uuid.uuid4().hex[:12]}"
    app_env.setenv("STORMWATCH_RULES_DIR", str(packaged))
    app_env.setenv("STORMWATCH_RULES_CONTAINER", name)
    app_env.setenv("STORMWATCH_RULES_REFRESH_SECONDS", "0")
    wiring.reset()
    client = BlobServiceClient.from_connection_string(tables.connection_string).get_container_client(name)
    yield client


def rule_ids() -> list[str]:
    return sorted(rule.id for rule in detector().rules)


def test_an_absent_container_leaves_the_packaged_rules(container: ContainerClient) -> None:
    assert rule_ids() == ["burst", "burst-deletes"]


def test_an_upload_extends_and_overrides_without_a_restart(container: ContainerClient) -> None:
    first = detector()
    assert run(first, deletes(3, subscription_id=DEVELOPMENT)).alerts == []
    container.create_container()
    container.upload_blob("team/dev-delete.yaml", EXTRA)
    assert detector() is first and rule_ids() == ["burst", "burst-deletes", "dev-delete"]
    assert len(run(first, deletes(3, first=10, subscription_id=DEVELOPMENT)).alerts) == 3
    container.upload_blob("burst.yaml", BURST_RULE.replace("{gte: 10}", "{gte: 2}"))  # same path: overrides
    [alert] = [item for item in run(detector(), deletes(2, first=20, actor="eve")).alerts if item.rule_id == "burst"]
    assert alert.count == 2


def test_lists_and_the_catalog_come_from_the_container_too(container: ContainerClient) -> None:
    container.create_container()
    container.upload_blob("lists/subscriptions.yaml", f"subscriptions:\n"  # the two swapped
                          f"  {DEVELOPMENT}: {{name: Now production, environment: production}}\n"
                          f"  {PRODUCTION}: {{name: Now development, environment: development}}\n")
    container.upload_blob("prod-delete.yaml", EXTRA.replace("dev-delete", "prod-delete").replace(
        f"subscription_id: {DEVELOPMENT}}}", "}").replace(
        "logsource: {product: azure}", "logsource: {product: azure}\nfilters: [{field: subscription_id, "
                                       "in: production_subscriptions}]"))
    report = run(detector(), deletes(1, subscription_id=DEVELOPMENT) + deletes(1, first=1, subscription_id=PRODUCTION))
    assert [alert.event_ids for alert in report.alerts if alert.rule_id == "prod-delete"] == [["evt-0"]]


def test_a_broken_upload_is_reported_and_the_last_good_set_keeps_running(
        container: ContainerClient, caplog: pytest.LogCaptureFixture) -> None:
    container.create_container()
    container.upload_blob("dev-delete.yaml", EXTRA)
    assert "dev-delete" in rule_ids()
    broken = EXTRA.replace("level: low", "level: urgent")
    container.upload_blob("dev-delete.yaml", broken, overwrite=True)
    container.upload_blob("notes.txt", "not a rule")
    assert "dev-delete" in rule_ids()  # the last good set, whole
    assert "uploaded rule file not loaded: dev-delete.yaml:" in caplog.text and "level:" in caplog.text
    assert "uploaded rule file not loaded: notes.txt: not a rule or list file" in caplog.text
    caplog.clear()
    assert "dev-delete" in rule_ids() and "not loaded" not in caplog.text  # reported once per change
    container.upload_blob("dev-delete.yaml", EXTRA.replace("level: low", "level: medium"), overwrite=True)
    container.delete_blob("notes.txt")
    assert [rule.spec.level for rule in detector().rules if rule.id == "dev-delete"] == ["medium"]


def test_a_broken_upload_becomes_a_dead_letter_with_its_bytes(tables: Tables, tmp_path: Path) -> None:
    container = BlobServiceClient.from_connection_string(tables.connection_string).get_container_client(
        f"rules{uuid.uuid4().hex[:12]}")
    container.create_container()
    container.upload_blob("bad.yaml", b"title: [unclosed\n")
    container.upload_blob("team//double.yaml", EXTRA.encode())
    (tmp_path / "burst.yaml").write_text(BURST_RULE)
    reported: list[tuple[LoadError, bytes]] = []
    source = RuleSource(tmp_path, BlobRules(container), reported.extend, ["stable", "test"], "production", 0)
    rules = source.refresh()
    assert rules is not None and sorted(rule.id for rule in rules) == ["burst", "burst-deletes"]  # starting: runs
    assert sorted((str(error.path), error.message.split(":")[0]) for error, _ in reported) == [
        ("bad.yaml", "not valid YAML"),
        ("team/double.yaml", "not a plain relative path (no '.', '..' or empty segments)")]
    assert dict((str(error.path), data) for error, data in reported)["bad.yaml"] == b"title: [unclosed\n"
    assert source.refresh() is None and len(reported) == 2  # unchanged: not read again, not reported again


def test_the_engine_writes_the_report_as_dead_letters(container: ContainerClient) -> None:
    container.create_container()
    container.upload_blob("bad.yaml", b"title: [unclosed\n")
    store = InMemoryDeadLetterStore()
    assert rule_source(get_settings(), store).refresh() is not None
    [letter] = store.letters
    assert letter.reason.startswith("uploaded rule file not loaded: bad.yaml:2: not valid YAML")
    assert base64.b64decode(letter.original) == b"title: [unclosed\n"
