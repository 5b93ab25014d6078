"""Shared fixtures: paths to samples and conformance data, and a real Azurite for the session."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from shared.cli import azurite
from shared.clients import wiring

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "samples"
CONFORMANCE = REPO.parent / "shared" / "conformance"


def sample(relative: str) -> bytes:
    return (SAMPLES / relative).read_bytes()


CONFORMANCE_FILES = sorted(path for path in CONFORMANCE.rglob("*") if path.suffix in (".log", ".json")) \
    if CONFORMANCE.is_dir() else []


def conformance_bodies(path: Path) -> list[bytes]:
    """`*.log` files hold one record per line, `*.json` files one Event Hub body."""
    data = path.read_bytes()
    if path.suffix == ".json":
        return [data]
    return [line for line in data.splitlines() if line.strip()]


@cache
def indexed_functions() -> dict[str, Any]:
    """The app's functions as the host indexes them, by name.

    `FunctionApp.get_functions()` may run only once per process (a second call reports every name as
    a duplicate), so every test reads the functions through this cache.
    """
    import function_app

    return {str(function.get_function_name()): function for function in function_app.app.get_functions()}


@cache
def package_script() -> ModuleType:
    """.ci/package.py (`make package`) as a module; `.ci` is not a package, so it is loaded by path."""
    spec = importlib.util.spec_from_file_location("package_script", REPO / ".ci" / "package.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def azurite_instance(tmp_path_factory: pytest.TempPathFactory) -> Iterator[azurite.Azurite]:
    """A real Azurite on free ports with a throw-away data folder, stopped after the session."""
    instance = azurite.start(tmp_path_factory.mktemp("azurite"))
    yield instance
    instance.stop()


@pytest.fixture
def app_env(monkeypatch: pytest.MonkeyPatch,
            azurite_instance: azurite.Azurite) -> Iterator[pytest.MonkeyPatch]:
    """App settings of a local run against the session's Azurite; clients rebuilt for each test."""
    monkeypatch.setenv("STORMWATCH_STORAGE_CONNECTION_STRING", azurite_instance.connection_string)
    monkeypatch.setenv("STORMWATCH_PUBLISHER", "memory")
    wiring.reset()
    yield monkeypatch
    wiring.reset()
