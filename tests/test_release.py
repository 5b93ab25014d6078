"""The release is named in one place and everything that shows it agrees; the package zip is reproducible."""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
import zipfile
from pathlib import Path

from shared import __version__
from tests.conftest import REPO, package_script


def test_the_changelog_s_newest_entry_is_the_version() -> None:
    headings = re.findall(r"^## (\S+)", (REPO / "CHANGELOG.md").read_text(), re.M)
    assert headings[0] == __version__
    assert re.fullmatch(r"\d+\.\d+\.\d+", __version__)


def test_the_cli_prints_the_version() -> None:
    run = subprocess.run([sys.executable, "-m", "shared", "--version"], cwd=REPO, capture_output=True, text=True,
                         check=True)
    assert run.stdout.strip() == f"stormwatch {__version__}"


def test_the_package_builder_reads_the_same_version() -> None:
    assert package_script().release_version(REPO) == __version__


def test_the_zip_is_reproducible_and_its_digest_file_matches(tmp_path: Path) -> None:
    folder = tmp_path / "app"
    (folder / "shared").mkdir(parents=True)
    (folder / "host.json").write_text("{}")
    (folder / "shared" / "__init__.py").write_text('__version__ = "9.9.9"\n')
    builder = package_script()
    first = builder.write_zip(folder, tmp_path / "one.zip")
    (folder / "host.json").touch()  # a newer modification time must not change the bytes
    second = builder.write_zip(folder, tmp_path / "two.zip")
    assert first == second == hashlib.sha256((tmp_path / "one.zip").read_bytes()).hexdigest()
    assert (tmp_path / "one.zip.sha256").read_text() == f"{first}  one.zip\n"
    with zipfile.ZipFile(tmp_path / "one.zip") as bundle:
        assert sorted(bundle.namelist()) == ["host.json", "shared/__init__.py"]
