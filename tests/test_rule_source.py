"""Rules and lists from the `rules` blob container, laid over the packaged folder, picked up without a
republish; a broken upload is refused whole and the set in use keeps running. Real blobs in Azurite."""

from __future__ import annotations

import logging
import socket
import tempfile
import textwrap
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from azure.storage.blob import BlobServiceClient, ContainerClient

from shared.cli import azurite
from shared.clients import wiring
from shared.clients.eventhubs import trigger_batch
from shared.clients.publisher import InProcessPublisher
from shared.clients.rule_store import BlobRuleStore
from shared.detect.engine import current_rules, load_pack
from shared.detect.rule_source import LayeredRules
from tests.conftest import indexed_functions
from tests.detect_fixtures import T0, deletes


def sigma_rule(title: str, operation: str, rule_id: str | None = None) -> str:
    return textwrap.dedent(f"""\
        title: {title}
        id: {rule_id or uuid.uuid4()}
        status: stable
        logsource: {{product: azure, service: activitylogs}}
        detection:
          selection: {{operationName: {operation}}}
          condition: selection
        level: high
        """)


SERVICES: dict[str, BlobServiceClient] = {}


@pytest.fixture
def container(azurite_instance: azurite.Azurite) -> Iterator[ContainerClient]:
    """A container of its own per test: the session's Azurite is shared by every test."""
    service = BlobServiceClient.from_connection_string(azurite_instance.connection_string)
    client = service.get_container_client(f"rules-{uuid.uuid4().hex[:12]}")
    client.create_container()
    SERVICES[client.url] = service
    yield client
    client.delete_container()


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def packaged(tmp_path: Path) -> Path:
    folder = tmp_path / "packaged"
    (folder / "lists").mkdir(parents=True)
    (folder / "vm-delete.yaml").write_text(sigma_rule("Packaged VM delete", "MICROSOFT.COMPUTE/VIRTUALMACHINES/DELETE"))
    return folder


def layered(packaged: Path, container: ContainerClient, clock: Clock) -> LayeredRules:
    """Checks the container at the first call, then every 60 s of `clock`."""
    return LayeredRules(packaged, BlobRuleStore(SERVICES[container.url], container.container_name), load_pack,
                        every=60, clock=clock)


def titles(rules: LayeredRules) -> list[str]:
    return sorted(rule.spec.title for rule in rules.current().pack.rules)


def test_an_uploaded_rule_runs_in_the_deployed_function_without_a_republish(
        app_env: pytest.MonkeyPatch, container: ContainerClient) -> None:
    container.upload_blob("team/storage-keys.yaml",
                          sigma_rule("Storage keys listed", "MICROSOFT.STORAGE/STORAGEACCOUNTS/LISTKEYS/ACTION"))
    app_env.setenv("STORMWATCH_RULES_CONTAINER", container.container_name)
    app_env.setenv("STORMWATCH_STATE_TABLE", f"state{uuid.uuid4().hex[:8]}")
    app_env.setenv("STORMWATCH_ALERTS_TABLE", f"alerts{uuid.uuid4().hex[:8]}")
    wiring.reset()
    operation = "Microsoft.Storage/storageAccounts/listKeys/action"
    listed = deletes(1, T0, operation=operation, action="other", raw={"operationName": operation})
    indexed_functions()["detect"].get_user_function()(trigger_batch([orjson.dumps(listed[0])], "0"))
    publisher = wiring.publisher()
    assert isinstance(publisher, InProcessPublisher)
    assert [orjson.loads(item.body)["title"] for item in publisher.hubs["alerts"]] == ["Storage keys listed"]


def test_a_change_is_picked_up_at_the_next_check_and_a_removed_blob_leaves_the_packaged_set(
        packaged: Path, container: ContainerClient) -> None:
    clock = Clock()
    rules = layered(packaged, container, clock)
    assert titles(rules) == ["Packaged VM delete"]
    container.upload_blob("keys.yaml", sigma_rule("Keys listed", "MICROSOFT.STORAGE/STORAGEACCOUNTS/LISTKEYS/ACTION"))
    assert titles(rules) == ["Packaged VM delete"], "not due yet: one listing per interval"
    clock.now = 61
    assert titles(rules) == ["Keys listed", "Packaged VM delete"]
    container.delete_blob("keys.yaml")
    clock.now = 122
    assert titles(rules) == ["Packaged VM delete"]


def test_a_blob_of_a_packaged_name_replaces_that_file(packaged: Path, container: ContainerClient) -> None:
    container.upload_blob("vm-delete.yaml", sigma_rule("Our VM delete", "MICROSOFT.COMPUTE/VIRTUALMACHINES/DELETE"))
    assert titles(layered(packaged, container, Clock())) == ["Our VM delete"]


def test_a_broken_upload_is_refused_whole_reported_and_the_last_good_set_keeps_running(
        packaged: Path, container: ContainerClient, caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    container.upload_blob("keys.yaml", sigma_rule("Keys listed", "MICROSOFT.STORAGE/STORAGEACCOUNTS/LISTKEYS/ACTION"))
    rules = layered(packaged, container, clock)
    assert titles(rules) == ["Keys listed", "Packaged VM delete"]
    container.upload_blob("sas.yaml", sigma_rule("SAS made", "X"))
    container.upload_blob("broken.yaml", "title: [unclosed\n")
    clock.now = 61
    with caplog.at_level(logging.ERROR, logger="stormwatch.detect"):
        assert titles(rules) == ["Keys listed", "Packaged VM delete"], "the good new file waits for the bad one"
    [line] = [orjson.loads(record.getMessage()) for record in caplog.records if "rules_refused" in record.getMessage()]
    assert line["outcome"] == "rules_refused" and line["blobs"] == 3
    assert [problem.split(":")[0] for problem in line["problems"]] == ["broken.yaml"]
    container.upload_blob("broken.yaml", sigma_rule("Fixed", "Y"), overwrite=True)
    clock.now = 122
    assert titles(rules) == ["Fixed", "Keys listed", "Packaged VM delete", "SAS made"]


def test_a_rule_id_that_clashes_with_a_packaged_rule_is_refused(packaged: Path, container: ContainerClient) -> None:
    [packaged_rule] = load_pack(packaged).rules
    container.upload_blob("copy.yaml", sigma_rule("Copy", "Z", rule_id=packaged_rule.id))
    assert titles(layered(packaged, container, Clock())) == ["Packaged VM delete"]


@pytest.mark.parametrize("name", [".hidden.yaml", "dir/.x/y.yaml", "a//b.yaml", "-flag.yaml", "spaced name.yaml",
                                  "a\u202eb.yaml"])
def test_a_blob_name_that_is_not_a_plain_relative_path_is_refused(
        packaged: Path, container: ContainerClient, name: str, caplog: pytest.LogCaptureFixture) -> None:
    container.upload_blob(name, sigma_rule("Escaped", "Z"))
    with caplog.at_level(logging.ERROR, logger="stormwatch.detect"):
        assert titles(layered(packaged, container, Clock())) == ["Packaged VM delete"]
    assert "not a usable file name" in caplog.text
    assert "\u202e" not in caplog.text, "an uploader's text cannot disguise a log line"
    assert not (packaged.parent / "escape.yaml").exists()


def test_blobs_that_are_not_yaml_are_left_alone(packaged: Path, container: ContainerClient) -> None:
    container.upload_blob("README.md", b"how we write rules")
    container.upload_blob("lists/notes.txt", b"\xff\xfe")
    assert titles(layered(packaged, container, Clock())) == ["Packaged VM delete"]


def test_an_uploaded_list_replaces_the_packaged_one_beside_the_rules(
        packaged: Path, container: ContainerClient) -> None:
    """Rules read their lists (the subscription catalog too) from the folder the set was loaded from."""
    (packaged / "lists" / "subscriptions.yaml").write_text("subscriptions: {}\n")
    catalog = b"subscriptions:\n  a1b2c3d4-1111-4111-8111-000000000001: {name: Payments, environment: production}\n"
    container.upload_blob("lists/subscriptions.yaml", catalog)
    current = layered(packaged, container, Clock()).current()
    assert (current.folder / "lists" / "subscriptions.yaml").read_bytes() == catalog
    assert (packaged / "lists" / "subscriptions.yaml").read_text() == "subscriptions: {}\n", "the package stays"
    assert not current.pack.errors


def test_an_unreachable_container_keeps_the_rules_in_use(packaged: Path, caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    service = BlobServiceClient(f"http://127.0.0.1:{closed}/devstoreaccount1", retry_total=0,
                                connection_timeout=2)
    rules = LayeredRules(packaged, BlobRuleStore(service), load_pack, clock=Clock())
    with caplog.at_level(logging.WARNING, logger="stormwatch.detect"):
        assert titles(rules) == ["Packaged VM delete"]
    assert "rules container not read (ServiceRequestError)" in caplog.text


def test_the_container_absent_means_the_packaged_rules(packaged: Path, azurite_instance: azurite.Azurite) -> None:
    service = BlobServiceClient.from_connection_string(azurite_instance.connection_string)
    rules = LayeredRules(packaged, BlobRuleStore(service, f"absent-{uuid.uuid4().hex[:8]}"), load_pack,
                         clock=Clock())
    assert titles(rules) == ["Packaged VM delete"]


def test_too_many_blobs_are_refused(packaged: Path, container: ContainerClient,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("shared.detect.rule_source.MAX_BLOBS", 2)
    for name in ("a.yaml", "b.yaml", "c.yaml"):
        container.upload_blob(name, sigma_rule(name, "Z"))
    assert titles(layered(packaged, container, Clock())) == ["Packaged VM delete"]


class NamedStore:
    """A store holding names Azurite refuses to create (dot segments), which another service might list."""

    def __init__(self, names: list[str]) -> None:
        self.names = names

    def listing(self) -> dict[str, str]:
        return {name: "etag" for name in self.names}

    def read(self, name: str, limit: int) -> bytes:
        return sigma_rule("Escaped", "Z").encode()


@pytest.mark.parametrize("name", ["../escape.yaml", "dir/../../escape.yaml", "/escape.yaml", "dir/..", ".."])
def test_dot_segments_and_absolute_names_never_leave_the_rules_folder(packaged: Path, name: str) -> None:
    rules = LayeredRules(packaged, NamedStore([name]), load_pack, clock=Clock())
    assert titles(rules) == ["Packaged VM delete"]
    escaped = [Path(tempfile.gettempdir(), "escape.yaml"), Path("/escape.yaml"), packaged.parent / "escape.yaml"]
    assert not [path for path in escaped if path.exists()]


def test_an_oversized_blob_is_refused_after_reading_one_byte_past_the_limit_and_an_empty_one_is_read(
        packaged: Path, container: ContainerClient, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr("shared.detect.rule_source.MAX_FILE_BYTES", 1_000)
    container.upload_blob("empty.yaml", b"")
    container.upload_blob("huge.yaml", b"#" * 50_000)
    store = BlobRuleStore(SERVICES[container.url], container.container_name)
    assert len(store.read("huge.yaml", 1_001)) == 1_001, "never the whole blob"
    assert store.read("empty.yaml", 1_001) == b""
    with caplog.at_level(logging.ERROR, logger="stormwatch.detect"):
        assert titles(layered(packaged, container, Clock())) == ["Packaged VM delete"]
    assert "huge.yaml: more than a rule file may hold" in caplog.text
    assert "empty.yaml:1: the file is empty" in caplog.text, "read and judged by the loader, not a failed download"


class SlowStore(NamedStore):
    """A listing that waits until the test lets it go: a container answering slowly."""

    def __init__(self) -> None:
        super().__init__(["slow.yaml"])
        self.entered, self.release = threading.Event(), threading.Event()

    def listing(self) -> dict[str, str]:
        self.entered.set()
        self.release.wait(10)
        return super().listing()


def test_a_slow_check_of_the_container_holds_no_other_batch(
        packaged: Path, app_env: pytest.MonkeyPatch) -> None:
    store = SlowStore()
    app_env.setattr("shared.detect.engine.BlobRuleStore", lambda *args: store)
    app_env.setenv("STORMWATCH_RULES_DIR", str(packaged))
    wiring.reset()
    checking = threading.Thread(target=current_rules)
    checking.start()
    assert store.entered.wait(10)
    other = threading.Thread(target=current_rules)  # another batch of the same worker meanwhile
    other.start()
    other.join(5)
    blocked = other.is_alive()
    store.release.set()
    checking.join(10)
    assert not blocked, "the other batch went on with the set in use"
    assert sorted(rule.spec.title for rule in current_rules().pack.rules) == ["Escaped", "Packaged VM delete"]
