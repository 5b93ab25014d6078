"""The rules detect runs: the packaged `rules/` with a deployment's own files from blob storage laid over them.

Detection content changes more often than code. A file uploaded to the `rules` container takes effect on
every instance within `STORMWATCH_RULES_REFRESH_SECONDS`, without a republish: `lists/subscriptions.yaml`
replaces the packaged file of that name, a new name adds a rule or a list. An upload that makes any file fail
to load is refused as a whole and reported; the set in use keeps running, so a typo can never switch
detection off. Only `.yaml`/`.yml` blobs are read; anything else in the container is left alone.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import orjson
from azure.core.exceptions import AzureError

from shared.clients.rule_store import RuleStore
from shared.detect.rules.loader import MAX_FILE_BYTES, RULE_SUFFIXES, RulePack

log = logging.getLogger("stormwatch.detect")

REFRESH_SECONDS = 120
# A rules folder is tens to a few hundred files; more than this is a mistake (or an attack) to refuse.
MAX_BLOBS = 2_000
# Path segments of letters, digits, `_`, `-` and `.`, none starting with a dot (so never `..`), at most 8 deep.
_SAFE_NAME = re.compile(r"(?:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}/){0,8}[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_REPORTED_PROBLEMS = 20


@dataclass(frozen=True)
class RuleSet:
    """One loaded set of rules, the folder its files were read from, and the blobs (name → ETag) it holds."""

    pack: RulePack
    folder: Path
    blobs: dict[str, str]


class UploadRefusedError(Exception):
    """The container's files do not load together; `problems` says which and why."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems[:_REPORTED_PROBLEMS]))
        self.problems = problems


class LayeredRules:
    """The packaged rules, overlaid with the rule store's files; re-checked at most every `every` seconds.

    Never raises: an unreachable store, a broken upload or an unsafe blob name leave the set in use running
    and say why in the log. One listing request per check tells whether anything changed (ETags).
    """

    def __init__(self, packaged: Path, store: RuleStore | None, load: Callable[[Path], RulePack],
                 every: float = REFRESH_SECONDS, clock: Callable[[], float] = time.monotonic) -> None:
        self._packaged = packaged
        self._store = store
        self._load = load
        self._every = every
        self._clock = clock
        self._due: float | None = None
        packaged_pack = load(packaged)
        # Problems the packaged files have on their own are not the upload's fault (and are logged by `load`).
        self._baseline = {_relative(error, packaged) for error in packaged_pack.errors}
        self._current = RuleSet(packaged_pack, packaged, {})
        self._refused: dict[str, str] | None = None
        self._checking = threading.Lock()

    def current(self) -> RuleSet:
        """The set to run now, after a check of the store when one is due."""
        self.refresh_if_due()
        return self._current

    def refresh_if_due(self) -> None:
        """Check the store when due. One thread checks; batches on the others go on with the set in use."""
        if not self._checking.acquire(blocking=False):
            return
        try:
            self._refresh_if_due()
        finally:
            self._checking.release()

    def _refresh_if_due(self) -> None:
        now = self._clock()
        if self._store is None or (self._due is not None and now < self._due):
            return
        self._due = now + self._every
        try:
            blobs = self._store.listing()
            if blobs in (self._current.blobs, self._refused):
                return
            loaded = self._layer(self._store, blobs)
        except AzureError as error:  # an outage: the next check tries again
            log.warning("rules container not read (%s); the rules in use stay", type(error).__name__)
            return
        except Exception as error:  # what the files hold: refused until the container changes
            self._refused = blobs
            problems = error.problems if isinstance(error, UploadRefusedError) else [f"{type(error).__name__}: {error}"]
            # ASCII-escaped: blob names and file contents are an uploader's text (no forged or disguised lines).
            log.error(json.dumps({"function": "detect", "outcome": "rules_refused", "blobs": len(blobs),
                                  "problems": problems[:_REPORTED_PROBLEMS]}))
            return
        previous, self._current, self._refused = self._current, loaded, None
        if previous.folder != self._packaged:
            shutil.rmtree(previous.folder, ignore_errors=True)
        log.info(orjson.dumps({"function": "detect", "outcome": "rules_loaded", "rules": len(loaded.pack.rules),
                               "blobs": len(blobs)}).decode())

    def _layer(self, store: RuleStore, blobs: dict[str, str]) -> RuleSet:
        """The packaged files plus the store's, loaded from a fresh folder; UploadRefusedError if they do not load."""
        if len(blobs) > MAX_BLOBS:
            raise UploadRefusedError([f"{len(blobs)} blobs in the rules container, more than {MAX_BLOBS}"])
        folder = Path(tempfile.mkdtemp(prefix="stormwatch-rules-"))
        try:
            shutil.copytree(self._packaged, folder, dirs_exist_ok=True)
            problems = [problem for name in sorted(blobs) if (problem := _copy_blob(store, name, folder))]
            pack = self._load(folder)
            problems.extend(sorted({_relative(error, folder) for error in pack.errors} - self._baseline))
            if problems:
                raise UploadRefusedError(problems)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        return RuleSet(pack, folder, blobs)


def _copy_blob(store: RuleStore, name: str, folder: Path) -> str | None:
    """Write one rule blob into `folder`; the reason it cannot be used, if any."""
    if not name.endswith(RULE_SUFFIXES):
        return None
    if not _SAFE_NAME.fullmatch(name):
        return f"{name[:200]!r}: not a usable file name (letters, digits, '_', '-', '.', '/' only)"
    data = store.read(name, MAX_FILE_BYTES + 1)  # one byte more than allowed tells an oversized file
    if len(data) > MAX_FILE_BYTES:
        return f"{name}: more than a rule file may hold ({MAX_FILE_BYTES:,} bytes)"
    target = folder / name
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    except OSError as error:  # a name that is also another blob's folder, or a packaged folder
        return f"{name}: cannot be placed in the rules folder ({type(error).__name__})"
    return None


def _relative(error: object, folder: Path) -> str:
    """A load error with its path relative to the folder, so the same problem reads the same in any folder."""
    return str(error).replace(f"{folder}/", "")
