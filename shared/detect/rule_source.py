"""Rules and lists as data in storage: the packaged `rules/` overlaid with a blob container, re-read when
the container changes, so a team ships detection content without republishing the app.

A blob `x.yaml` overrides the packaged `rules/x.yaml` (same path), any other name extends the pack, and
`lists/<name>.yaml` replaces or adds a list (the subscription catalog included). `detect_fn` looks at the
container's listing (names and ETags: one request) at most once per `STORMWATCH_RULES_REFRESH_SECONDS`
and loads the blobs again only when it changed.

A broken upload (a file that does not load, a name that is not a rule file, a blob too large) is logged
and written as a dead letter, once per change of the container. A running process then keeps the last
good set whole; a process that starts with a broken upload runs the packaged rules and every uploaded
file that loads (one bad file never disables the others). Storage being unreachable keeps the current
set and is tried again after the next period.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Protocol

from azure.core.exceptions import ResourceNotFoundError
from azure.storage.blob import ContainerClient

from shared.clients.storage import is_outage
from shared.detect.rules.errors import LoadError
from shared.detect.rules.loader import MAX_FILE_BYTES, RULE_SUFFIXES, RulePack, load_rules
from shared.detect.rules.rule import Rule

log = logging.getLogger("stormwatch.detect")

# More blobs than this in the container is a mistake (the pack has about a hundred files): refuse it.
MAX_BLOBS = 2_000
Listing = dict[str, str]  # blob name → ETag


class RuleBlobs(Protocol):
    """The container, as the rule source reads it."""

    def listing(self) -> Listing:
        """Every blob's name and ETag (empty when the container does not exist)."""

    def read(self, name: str) -> bytes:
        """One blob's content, at most MAX_FILE_BYTES + 1 bytes (enough to tell it is too large)."""


class BlobRules:
    def __init__(self, container: ContainerClient) -> None:
        self._container = container

    def listing(self) -> Listing:
        try:
            return {blob.name: str(blob.etag) for blob in self._container.list_blobs()}
        except ResourceNotFoundError:
            return {}

    def read(self, name: str) -> bytes:
        return self._container.download_blob(name, offset=0, length=MAX_FILE_BYTES + 1).readall()


Report = Callable[[Sequence[tuple[LoadError, bytes]]], None]


@dataclass
class RuleSource:
    """The rules to run: packaged, overlaid with the container's, refreshed at most once per `refresh_s`."""

    packaged: Path
    blobs: RuleBlobs
    report: Report  # broken uploads: (what is wrong, the uploaded bytes)
    statuses: Sequence[str]
    unknown_subscriptions: str
    refresh_s: float
    clock: Callable[[], float] = time.monotonic
    _listing: Listing | None = None
    _rules: list[Rule] | None = None
    _checked: float | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def refresh(self) -> list[Rule] | None:
        """The new rules when the container changed since the last look, else None (nothing to swap)."""
        with self._lock:
            now = self.clock()
            if self._checked is not None and now - self._checked < self.refresh_s:
                return None
            self._checked = now
            listing: Listing | None
            try:
                listing = self.blobs.listing()
                if listing == self._listing:
                    return None
                contents = self._contents(listing)
            except Exception as error:
                if is_outage(error):
                    log.warning("rules container unreachable (%s); running the rules at hand", error)
                else:
                    log.exception("rules container not read; running the rules at hand")
                if self._rules is not None:
                    return None
                listing, contents = None, {}  # starting: the packaged rules, and the container again next time
            pack, broken = self._load(contents)
            if broken:
                listing = self._reported(broken, listing)
                if self._rules is not None:
                    self._listing = listing
                    return None  # the last good set keeps running
            self._listing = listing
            self._rules = pack.rules
            return pack.rules

    def _reported(self, broken: list[tuple[LoadError, bytes]], listing: Listing | None) -> Listing | None:
        """Log and report a broken upload; the listing to remember (None: report it again next time)."""
        for error, _ in broken:
            log.error("uploaded rule file not loaded: %s", error)
        try:
            self.report(broken)
        except Exception:
            log.exception("broken rule upload not written as a dead letter: reported again next time")
            return None
        return listing

    def _contents(self, listing: Listing) -> dict[str, bytes]:
        if len(listing) > MAX_BLOBS:
            raise ValueError(f"the rules container holds {len(listing):,} blobs, more than {MAX_BLOBS:,}")
        return {name: self.blobs.read(name) for name in sorted(listing)}

    def _load(self, contents: dict[str, bytes]) -> tuple[RulePack, list[tuple[LoadError, bytes]]]:
        """The packaged folder with the uploads written over it, loaded as one pack; the uploads' errors."""
        broken: list[tuple[LoadError, bytes]] = []
        with tempfile.TemporaryDirectory(prefix="stormwatch-rules-") as scratch:
            folder = Path(scratch) / "rules"
            shutil.copytree(self.packaged, folder)
            uploaded: dict[Path, str] = {}
            for name, data in contents.items():
                problem = _refused(name, data)
                if problem is not None:
                    broken.append((LoadError(Path(name), None, problem), data))
                    continue
                target = folder.joinpath(*PurePosixPath(name).parts)
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
                uploaded[target] = name
            pack = load_rules(folder, self.statuses, self.unknown_subscriptions)
        for error in pack.errors:
            source = uploaded.get(error.path)
            if source is not None:
                broken.append((LoadError(Path(source), error.line, error.message), contents[source]))
        return pack, broken


def _refused(name: str, data: bytes) -> str | None:
    """Why an uploaded blob cannot be a rule or list file (None: it can)."""
    path = PurePosixPath(name)
    if path.is_absolute() or any(part in ("", ".", "..") for part in name.split("/")):
        return "not a plain relative path (no '.', '..' or empty segments)"
    if path.suffix not in RULE_SUFFIXES:
        return f"not a rule or list file (names end in {' or '.join(RULE_SUFFIXES)})"
    if len(data) > MAX_FILE_BYTES:
        return f"larger than {MAX_FILE_BYTES // 1024} KiB"
    return None
