"""Audit the runtime dependencies for known vulnerabilities with PyPI's JSON API; `make audit` runs it.

What is audited: the exact pins in requirements.txt (what the function app deploys) plus their dependencies
as installed in the running interpreter's environment (`.venv`), found by walking the installed metadata with
the environment markers evaluated and extras-only requirements skipped.

Why not pip-audit: it asks `/pypi/<name>/<version>/json` and OSV, and the networks this runs on (developer
machines and CI) answer that endpoint with 404 for every version and do not reach OSV at all. So each package
is asked the per-version endpoint first (the right answer wherever it works) and, on 404, the project endpoint
`/pypi/<name>/json`, whose `vulnerabilities` describe only the latest release: they are used when the
installed version is that release, and otherwise the package is reported as not auditable here, never as clean.

Exit status: 1 when a vulnerability (not withdrawn) is listed for an installed version; 0 otherwise. When the
index cannot be reached at all, a loud "NOT RUN" line is printed and the status is still 0, because a network
blip should not block a commit while a found vulnerability must; set STORMWATCH_AUDIT_STRICT=1 (e.g. in a
release pipeline) to make any unreachable package fail the audit. STORMWATCH_AUDIT_INDEX replaces the index
base URL (default https://pypi.org), which is how the tests point the script at a local fake.

Standard library only, except `packaging` (pytest's own dependency, always in the dev environment) for the
requirement and marker grammar, which is too easy to get subtly wrong by hand.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import sys
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

REPO = Path(__file__).resolve().parent.parent
DEFAULT_INDEX = "https://pypi.org"
TIMEOUT_SECONDS = 10.0
PARALLEL_REQUESTS = 4


@dataclass(frozen=True)
class Package:
    """One distribution to audit; `via` says why it is in the set (a pin, or whose dependency it is)."""

    name: str
    version: str
    via: str


@dataclass
class Result:
    """What the index said about one package: vulnerabilities, or why it could not be audited."""

    package: Package
    vulnerabilities: list[dict[str, Any]] = field(default_factory=list)
    not_auditable: str | None = None
    unreachable: str | None = None


def read_pins(requirements: Path) -> list[tuple[Requirement, str]]:
    """The `name==version` pins whose markers hold here; anything but an exact pin is an error, not a skip."""
    pins = []
    for number, raw in enumerate(requirements.read_text().splitlines(), start=1):
        line = re.split(r"\s#", raw, maxsplit=1)[0].strip()
        if not line or line.startswith("#"):
            continue
        try:
            requirement = Requirement(line)
        except InvalidRequirement as error:
            raise SystemExit(f"{requirements}:{number}: not a requirement: {line} ({error})") from None
        specifiers = list(requirement.specifier)
        if len(specifiers) != 1 or specifiers[0].operator != "==" or specifiers[0].version.endswith("*"):
            raise SystemExit(f"{requirements}:{number}: only exact pins (name==version) can be audited: {line}")
        if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
            pins.append((requirement, specifiers[0].version))
    return pins


def wanted(requirement: Requirement, extras: frozenset[str]) -> bool:
    """Whether a dependency applies here: its marker holds for this interpreter and the extras asked for."""
    if requirement.marker is None:
        return True
    return any(requirement.marker.evaluate({"extra": extra}) for extra in extras | {""})


def collect(pins: list[tuple[Requirement, str]], follow: bool = True) -> tuple[list[Package], list[str]]:
    """The pins plus (with `follow`) their installed dependency closure, and notes on what could not be walked.

    A pinned package keeps its pinned version (that is what deploys); a dependency has its installed version.
    """
    found: dict[str, Package] = {}
    notes: list[str] = []
    queue: list[tuple[str, frozenset[str], str]] = []
    for requirement, version in pins:
        key = str(canonicalize_name(requirement.name))
        found[key] = Package(key, version, "requirements.txt")
        queue.append((key, frozenset(requirement.extras), "requirements.txt"))
    walked: set[tuple[str, frozenset[str]]] = set()
    while follow and queue:
        key, extras, via = queue.pop(0)
        if (key, extras) in walked:
            continue
        walked.add((key, extras))
        try:
            distribution = metadata.distribution(key)
        except metadata.PackageNotFoundError:
            notes.append(f"{key} ({via}) is not installed here: its dependencies were not walked")
            continue
        installed = distribution.version
        if key not in found:
            found[key] = Package(key, installed, via)
        elif found[key].via == "requirements.txt" and found[key].version != installed:
            notes.append(f"{key} is pinned at {found[key].version} but {installed} is installed: run `make setup`")
        for line in distribution.requires or []:
            dependency = Requirement(line)
            if wanted(dependency, extras):
                queue.append((canonicalize_name(dependency.name), frozenset(dependency.extras), key))
    return sorted(found.values(), key=lambda package: package.name), notes


def fetch(url: str) -> tuple[int, dict[str, Any] | None]:
    """GET one JSON document: (200, body) or (HTTP status, None); connection failures raise OSError."""
    headers = {"Accept": "application/json", "User-Agent": "stormwatch-audit"}
    request = urllib.request.Request(url, headers=headers)  # noqa: S310 (main() allows only http and https)
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response:  # noqa: S310 (as above)
            body: dict[str, Any] = json.load(response)
            return response.status, body
    except urllib.error.HTTPError as error:
        return error.code, None


def same_version(left: str, right: str) -> bool:
    """Versions compared as PEP 440 versions (1.0 == 1.0.0), falling back to the strings."""
    try:
        return Version(left) == Version(right)
    except InvalidVersion:
        return left == right


def audit(package: Package, base: str) -> Result:
    """Ask the per-version endpoint, then the latest-release endpoint; never report an unanswered package clean."""
    name = urllib.parse.quote(package.name)
    try:
        status, body = fetch(f"{base}/pypi/{name}/{urllib.parse.quote(package.version)}/json")
        if status == 404:
            status, body = fetch(f"{base}/pypi/{name}/json")
            if status == 404:
                return Result(package, not_auditable="the registry does not know this package")
            if body is not None:
                latest = str((body.get("info") or {}).get("version", "?"))
                if not same_version(latest, package.version):
                    reason = f"the registry answers only for the latest release {latest}"
                    return Result(package, not_auditable=reason)
    except (OSError, http.client.HTTPException, ValueError) as error:  # URLError, timeouts; a body not JSON
        return Result(package, unreachable=f"{type(error).__name__}: {getattr(error, 'reason', error)}")
    if body is None:  # 5xx, 429, a proxy's 403: the index did not answer the question
        return Result(package, unreachable=f"HTTP {status}")
    listed = body.get("vulnerabilities") or []
    return Result(package, vulnerabilities=[entry for entry in listed if entry.get("withdrawn") is None])


def describe(vulnerability: dict[str, Any]) -> str:
    """One vulnerability as `ID (aliases) fixed in X`."""
    text = str(vulnerability.get("id", "?"))
    aliases = vulnerability.get("aliases") or []
    if aliases:
        text += f" ({', '.join(map(str, aliases))})"
    fixed = vulnerability.get("fixed_in") or []
    return text + (f" fixed in {', '.join(map(str, fixed))}" if fixed else " no fixed release listed")


def report(results: list[Result], notes: list[str], base: str, strict: bool) -> int:
    """Print the report and return the exit status."""
    reachable = [result for result in results if result.unreachable is None]
    if results and not reachable:
        print(f"dependency audit NOT RUN: cannot reach {base} ({results[0].unreachable})")
        return 1 if strict else 0
    vulnerable = [result for result in results if result.vulnerabilities]
    skipped = [result for result in results if result.not_auditable or result.unreachable]
    clean = [result.package for result in reachable if not result.vulnerabilities and not result.not_auditable]
    if clean:
        print("  no known vulnerabilities: " + ", ".join(f"{package.name} {package.version}" for package in clean))
    for result in vulnerable:
        found = "; ".join(describe(vulnerability) for vulnerability in result.vulnerabilities)
        print(f"  VULNERABLE {result.package.name} {result.package.version} (via {result.package.via}): {found}")
    if skipped:
        print("  not auditable here:")
    for result in skipped:
        why = result.not_auditable or f"cannot reach the index ({result.unreachable})"
        print(f"    {result.package.name} {result.package.version} (via {result.package.via}): {why}")
    for note in notes:
        print(f"  note: {note}")
    audited = len(results) - len(skipped)
    summary = (f"dependency audit: {len(results)} packages, {audited} audited, {len(vulnerable)} vulnerable, "
               f"{len(skipped)} not auditable here")
    if skipped:
        summary += " (" + "; ".join(
            f"{result.package.name} {result.package.version}: {result.not_auditable or 'unreachable'}"
            for result in skipped) + ")"
    print(summary)
    if vulnerable:
        return 1
    return 1 if strict and len(reachable) < len(results) else 0


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments, audit, report."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    parser.add_argument("--requirements", type=Path, default=REPO / "requirements.txt",
                        help="pinned requirements file (default: the repository's requirements.txt)")
    parser.add_argument("--no-deps", action="store_true", help="audit the pins only, not their installed dependencies")
    arguments = parser.parse_args(argv)
    base = os.environ.get("STORMWATCH_AUDIT_INDEX", DEFAULT_INDEX).rstrip("/")
    if urllib.parse.urlsplit(base).scheme not in {"http", "https"}:
        raise SystemExit(f"STORMWATCH_AUDIT_INDEX must be an http(s) URL, not {base!r}")
    strict = os.environ.get("STORMWATCH_AUDIT_STRICT", "") == "1"
    packages, notes = collect(read_pins(arguments.requirements), follow=not arguments.no_deps)
    print(f"dependency audit of {arguments.requirements.name} pins"
          f"{'' if arguments.no_deps else ' and their installed dependencies'} against {base}")
    # One package first: when the index is out of reach, that costs one timeout, not one per package.
    results = [audit(package, base) for package in packages[:1]]
    if results and results[0].unreachable is not None:
        return report(results, notes, base, strict)
    with ThreadPoolExecutor(max_workers=PARALLEL_REQUESTS) as pool:
        results += pool.map(lambda package: audit(package, base), packages[1:])
    return report(results, notes, base, strict)


if __name__ == "__main__":
    sys.exit(main())
