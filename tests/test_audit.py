"""The dependency audit (.ci/audit_deps.py) run as `make audit` runs it, against a fake of PyPI's JSON API.

The fake is a real HTTP server on 127.0.0.1 that answers the two endpoints the script asks
(`/pypi/<name>/<version>/json`, then `/pypi/<name>/json`) with canned documents: tests cannot reach PyPI, and
PyPI's real answers change whenever a release or an advisory is published. `--no-deps` keeps each audit to
the pins of a tiny requirements file; one test walks a real installed package's dependencies instead.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO

SCRIPT = REPO / ".ci" / "audit_deps.py"


class FakeIndex:
    """Canned JSON answers by path; every other path is a 404, as on PyPI for an unknown version."""

    def __init__(self) -> None:
        self.routes: dict[str, dict[str, Any]] = {}
        routes = self.routes

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = routes.get(self.path)
                payload = json.dumps(body if body is not None else {"message": "Not Found"}).encode()
                self.send_response(404 if body is None else 200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"

    def version(self, name: str, version: str, vulnerabilities: list[dict[str, Any]]) -> None:
        """The per-version document, as real PyPI serves it."""
        self.routes[f"/pypi/{name}/{version}/json"] = {"info": {"version": version}, "vulnerabilities": vulnerabilities}

    def latest(self, name: str, version: str, vulnerabilities: list[dict[str, Any]]) -> None:
        """The project document: the latest release and its vulnerabilities only."""
        self.routes[f"/pypi/{name}/json"] = {"info": {"version": version}, "vulnerabilities": vulnerabilities}


@pytest.fixture
def index() -> Iterator[FakeIndex]:
    fake = FakeIndex()
    thread = threading.Thread(target=fake.server.serve_forever, daemon=True)
    thread.start()
    yield fake
    fake.server.shutdown()
    fake.server.server_close()
    thread.join(5)


def vulnerability(identifier: str, withdrawn: str | None = None) -> dict[str, Any]:
    return {"id": identifier, "aliases": ["CVE-2099-0001"], "details": "bad", "summary": None,
            "fixed_in": ["1.0.1"], "link": f"https://osv.dev/vulnerability/{identifier}", "withdrawn": withdrawn}


def run_audit(
    base: str, tmp_path: Path, pins: str, *flags: str, strict: bool = False
) -> subprocess.CompletedProcess[str]:
    """The script as `make audit` runs it, with a throw-away requirements file and the fake index."""
    requirements = tmp_path / "requirements.txt"
    requirements.write_text(pins)
    env = {key: value for key, value in os.environ.items() if key != "STORMWATCH_AUDIT_STRICT"}
    env["STORMWATCH_AUDIT_INDEX"] = base
    if strict:
        env["STORMWATCH_AUDIT_STRICT"] = "1"
    return subprocess.run([sys.executable, str(SCRIPT), "--requirements", str(requirements), *flags],
                          capture_output=True, text=True, env=env, timeout=60, check=False)


def test_a_vulnerable_pin_fails_the_audit_and_names_the_advisory(index: FakeIndex, tmp_path: Path) -> None:
    index.version("leaky", "1.0.0", [vulnerability("GHSA-aaaa-bbbb-cccc")])
    result = run_audit(index.base, tmp_path, "leaky==1.0.0  # a comment\n", "--no-deps")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "VULNERABLE leaky 1.0.0" in result.stdout
    assert "GHSA-aaaa-bbbb-cccc (CVE-2099-0001) fixed in 1.0.1" in result.stdout
    assert "1 packages, 1 audited, 1 vulnerable, 0 not auditable here" in result.stdout


def test_the_latest_release_endpoint_audits_a_package_at_its_latest_release(index: FakeIndex, tmp_path: Path) -> None:
    index.latest("tidy", "2.0.0", [])
    clean = run_audit(index.base, tmp_path, "tidy==2.0.0\n", "--no-deps")
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "1 packages, 1 audited, 0 vulnerable, 0 not auditable here" in clean.stdout

    index.latest("tidy", "2.0.0", [vulnerability("PYSEC-2099-1")])
    vulnerable = run_audit(index.base, tmp_path, "tidy==2.0.0\n", "--no-deps")
    assert vulnerable.returncode == 1, vulnerable.stdout + vulnerable.stderr
    assert "PYSEC-2099-1" in vulnerable.stdout


def test_an_older_version_is_not_auditable_rather_than_clean(index: FakeIndex, tmp_path: Path) -> None:
    # The latest release's advisories say nothing about 1.0.0, in either direction.
    index.latest("older", "2.0.0", [vulnerability("GHSA-only-in-latest")])
    result = run_audit(index.base, tmp_path, "older==1.0.0\n", "--no-deps")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "older 1.0.0 (via requirements.txt): the registry answers only for the latest release 2.0.0" in result.stdout
    assert "1 packages, 0 audited, 0 vulnerable, 1 not auditable here (older 1.0.0:" in result.stdout
    assert "GHSA-only-in-latest" not in result.stdout


def test_a_withdrawn_advisory_is_ignored(index: FakeIndex, tmp_path: Path) -> None:
    index.version("retracted", "1.0.0", [vulnerability("GHSA-gone-gone-gone", withdrawn="2099-01-01T00:00:00Z")])
    result = run_audit(index.base, tmp_path, "retracted==1.0.0\n", "--no-deps")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "GHSA-gone-gone-gone" not in result.stdout
    assert "1 packages, 1 audited, 0 vulnerable" in result.stdout


def test_an_unreachable_index_is_reported_loudly_and_fails_only_in_strict_mode(tmp_path: Path) -> None:
    with socket.socket() as listener:  # a port that was just free and has nothing listening now
        listener.bind(("127.0.0.1", 0))
        base = f"http://127.0.0.1:{listener.getsockname()[1]}"
    relaxed = run_audit(base, tmp_path, "anything==1.0.0\n", "--no-deps")
    assert relaxed.returncode == 0, relaxed.stdout + relaxed.stderr
    assert f"dependency audit NOT RUN: cannot reach {base}" in relaxed.stdout
    strict = run_audit(base, tmp_path, "anything==1.0.0\n", "--no-deps", strict=True)
    assert strict.returncode == 1, strict.stdout + strict.stderr
    assert "dependency audit NOT RUN" in strict.stdout


def test_only_exact_pins_are_accepted(index: FakeIndex, tmp_path: Path) -> None:
    result = run_audit(index.base, tmp_path, "loose>=1.0\n", "--no-deps")
    assert result.returncode != 0
    assert "only exact pins" in result.stderr


def test_the_installed_dependencies_of_a_pin_are_audited_too(index: FakeIndex, tmp_path: Path) -> None:
    # Everything answers 404 here, so every package is listed as not auditable: the list is the closure.
    result = run_audit(index.base, tmp_path, f"requests=={metadata.version('requests')}\n")
    assert result.returncode == 0, result.stdout + result.stderr
    for dependency in ("urllib3", "idna", "charset-normalizer", "certifi"):
        assert f"    {dependency} {metadata.version(dependency)} (via requests):" in result.stdout
    assert "pysocks" not in result.stdout.lower()  # requests[socks] only: an extra nobody asked for
    assert "dependency audit: 5 packages, 0 audited" in result.stdout
