"""The deployable package (`make package`, .ci/package.py): what it holds, that it runs on its own as the
Functions host runs it, and that its compiled mappers write byte for byte what the sources write.

The package is built once for the module, as `make package` builds it (dependencies from the package
registry included). It runs under `python -S` with only the package on the path, so nothing from the
virtual env (or the repository's sources) can stand in for something the package lacks.
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from shared import __version__
from tests.conftest import CONFORMANCE_FILES, REPO, SAMPLES, conformance_bodies, indexed_functions, package_script

SCRIPT = REPO / ".ci" / "package.py"
CAN_COMPILE = (sys.platform == "linux" and platform.machine() == "x86_64" and sys.version_info[:2] == (3, 11)
               and Path(sysconfig.get_paths()["include"], "Python.h").is_file()
               and shutil.which((sysconfig.get_config_var("CC") or "cc").split()[0]) is not None)
needs_compiler = pytest.mark.skipif(not CAN_COMPILE, reason="needs Linux x86-64, CPython 3.11 headers and a C compiler")

# Values a hostile or sloppy producer writes in place of any field, times included.
HOSTILE_VALUES: list[Any] = [None, "", "  padded  ", 7, 1.5, True, [1], {"value": "v"}, {"nested": {}},
                             "2026-13-01T00:00:00Z", "1/2/2026 3:04:05 PM", "2026-11-12T14:03:11.1234567890+02:00"]


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("package") / "app"
    subprocess.run([sys.executable, str(SCRIPT), "--out", str(out)], check=True, timeout=280)
    return out


def run_in_package(package: Path, *arguments: str) -> subprocess.CompletedProcess[bytes]:
    """A Python that sees only the package and its .python_packages, as the Functions host does."""
    environment = {**os.environ, "PYTHONPATH": f"{package}{os.pathsep}{package / '.python_packages/lib/site-packages'}"}
    return subprocess.run([sys.executable, "-S", *arguments], cwd=package, env=environment, capture_output=True,
                          check=False, timeout=240)


@needs_compiler
def test_package_holds_the_app_compiled_mappers_and_dependencies_only(package: Path) -> None:
    files = {str(path.relative_to(package)) for path in package.rglob("*") if path.is_file()}
    for expected in ("function_app.py", "host.json", "requirements.txt", "normalize_fn/__init__.py",
                     "shared/normalize/batch.py", "rules/password-spray.yaml"):
        assert expected in files
    sources = sorted(path.stem for path in (REPO / "shared/normalize/mappers").glob("*.py"))
    compiled = sorted(path.name.split(".")[0] for path in (package / "shared/normalize/mappers").glob("*.so"))
    assert compiled == sources
    assert list((package / "shared").glob("values.*.so")), "the value helpers compile with the mappers"
    assert any(name.endswith("__mypyc.cpython-311-x86_64-linux-gnu.so") for name in files)  # mypyc's runtime
    assert (package / ".python_packages/lib/site-packages/orjson").is_dir()
    left_out = ("tests/", "bench/", "infra/", "samples/", ".venv/", "node_modules/", "docs/", ".ci/", "build/")
    assert not [name for name in files if name.startswith(left_out) or "__pycache__" in name
                or name in ("Makefile", "local.settings.json", "requirements-dev.txt")]
    assert not (package / "build").exists()
    archive = package.parent / f"stormwatch-{__version__}.zip"  # the release artefact, digest beside it
    assert (package.parent / f"{archive.name}.sha256").read_text().split()[0] == hashlib.sha256(
        archive.read_bytes()).hexdigest()


@needs_compiler
def test_package_indexes_every_function_on_its_own(package: Path) -> None:
    run = run_in_package(package, "-c", (
        "import function_app, shared.normalize.mappers.activity as mapper, shared.normalize.batch as normalize;"
        "print(sorted(str(f.get_function_name()) for f in function_app.app.get_functions()));"
        "print(mapper.__file__); print(normalize.MAPPERS)"))
    assert run.returncode == 0, run.stderr.decode()
    names, mapper_file, mappers = run.stdout.decode().splitlines()
    assert names == str(sorted(indexed_functions()))
    assert mapper_file.startswith(str(package)) and mapper_file.endswith(".so")
    assert mappers == "compiled", "normalize's batch line tells which build is deployed"


def variants(record: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The record with each top-level and `properties` field replaced, one at a time, by each hostile value."""
    for key in record:
        for value in HOSTILE_VALUES:
            yield {**record, key: value}
    properties = record.get("properties")
    if isinstance(properties, dict):
        for key in properties:
            for value in HOSTILE_VALUES:
                yield {**record, "properties": {**properties, key: value}}


def parity_input() -> list[bytes]:
    """JSON Lines bodies: every sample, each of its records' variants, the conformance data, and garbage."""
    bodies = [orjson.loads(path.read_bytes()) for path in sorted(SAMPLES.rglob("*.json")) if "bad" not in path.parts]
    lines = [orjson.dumps(body) for body in bodies]
    for body in bodies:
        records = body["records"] if isinstance(body, dict) and "records" in body else [body]
        lines += [orjson.dumps({"records": list(variants(record))}) for record in records if isinstance(record, dict)]
    for path in CONFORMANCE_FILES:
        for body in conformance_bodies(path):
            try:
                lines.append(orjson.dumps(orjson.loads(body)))
            except orjson.JSONDecodeError:
                continue
    return [*lines, b"{not json", b"[1, 2]", b'"text"', b"{}"]


@needs_compiler
def test_compiled_mappers_write_the_same_bytes_as_the_sources(package: Path, tmp_path: Path) -> None:
    data = tmp_path / "bodies.jsonl"
    data.write_bytes(b"\n".join(parity_input()) + b"\n")
    compiled = run_in_package(package, "-m", "shared", "normalize", str(data))
    interpreted = subprocess.run([sys.executable, "-m", "shared", "normalize", str(data)], cwd=REPO,
                                 capture_output=True, check=False, timeout=240)
    assert compiled.returncode == interpreted.returncode == 0, compiled.stderr.decode()[-2000:]
    events, dead_letters = interpreted.stdout.splitlines(), interpreted.stderr.splitlines()
    assert len(events) > 10_000 and len(dead_letters) > 1_000  # both outputs are exercised
    assert compiled.stdout.splitlines() == events
    assert compiled.stderr.splitlines() == dead_letters


# The suite's tests of everything that calls into the compiled modules: mappers, times, rules, detection
# state, enrichment. A compiled module can differ from its source where the parity data does not reach
# (mypyc enforces annotations at run time and its classes have no `__dict__`), so they run against both.
SUITE_ON_THE_PACKAGE = ("test_parsers.py", "test_golden.py", "test_properties.py", "test_cli.py", "test_detect.py",
                        "test_state.py", "test_rules.py", "enrich")


@needs_compiler
def test_the_suite_passes_on_the_compiled_mappers(package: Path, tmp_path: Path) -> None:
    scratch = tmp_path / "app"
    shutil.copytree(package, scratch, ignore=shutil.ignore_patterns(".python_packages"))  # the venv's are the same
    shutil.copytree(REPO / "tests", scratch / "tests", ignore=shutil.ignore_patterns("__pycache__"))
    for data in ("samples", "node_modules"):  # read-only inputs: sample bodies, Azurite
        (scratch / data).symlink_to(REPO / data)
    environment = {name: value for name, value in os.environ.items() if name != "PYTHONPATH"}
    which = subprocess.run([sys.executable, "-c", "import shared.normalize.batch as n; print(n.MAPPERS, n.__file__)"],
                           cwd=scratch, env=environment, capture_output=True, text=True, check=True)
    assert which.stdout.split()[0] == "compiled" and which.stdout.split()[1].startswith(str(scratch))
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          *(f"tests/{name}" for name in SUITE_ON_THE_PACKAGE)],
                         cwd=scratch, env=environment, capture_output=True, text=True, check=False, timeout=280)
    assert run.returncode == 0, run.stdout[-4000:]
    assert " passed" in run.stdout.splitlines()[-1] and "skipped" not in run.stdout.splitlines()[-1]


def test_glibc_newer_than_the_hosts_is_refused(tmp_path: Path) -> None:
    script = package_script()
    old, new = tmp_path / "old.so", tmp_path / "new.so"
    old.write_bytes(b"\x7fELF...GLIBC_2.2.5\x00GLIBC_2.14\x00")
    new.write_bytes(b"\x7fELF...GLIBC_2.14\x00GLIBC_2.38\x00")
    assert script.newest_glibc(old) == (2, 14)
    script.check_glibc([old])
    with pytest.raises(script.PackageError, match=r"needs glibc 2\.38"):
        script.check_glibc([old, new])


def test_other_platforms_are_told_to_use_a_remote_build(monkeypatch: pytest.MonkeyPatch) -> None:
    script = package_script()
    monkeypatch.setattr(script.sys, "platform", "darwin")
    with pytest.raises(script.PackageError, match="remote build"):
        script.check_platform()
    monkeypatch.undo()
    monkeypatch.setattr(script.platform, "python_version_tuple", lambda: ("3", "12", "1"))
    with pytest.raises(script.PackageError, match=r"CPython 3\.11"):
        script.check_platform()


def test_funcignore_patterns_leave_out_folders_and_names(tmp_path: Path) -> None:
    script = package_script()
    for relative in ("app.py", "shared/x.py", "shared/__pycache__/x.pyc", "tests/test_x.py", "shared/tests/y.py",
                     ".gitignore", "Makefile", "local.settings.json"):
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_text("")
    kept = sorted(str(path) for path in script.deployed_files(tmp_path, ["tests/", "__pycache__/", ".git*",
                                                                          "Makefile", "local.settings.json"]))
    assert kept == ["app.py", "shared/x.py"]


def test_sources_are_not_shadowed_by_extension_modules() -> None:
    """Python imports an extension module before its source: one left in the checkout would hide every edit."""
    folders = ("shared", "normalize_fn", "detect_fn", "enrich_fn", "inventory_fn", "delivery_fn")
    assert not [path for folder in folders
                for path in (REPO / folder).rglob("*.so")]
