"""Azurite, the real local Blob/Queue/Table store, started for tests and the local demo.

Tests start their own instance on free ports with a temporary data folder; the demo and `replay` use
the fixed development ports so that `UseDevelopmentStorage=true` works as users expect.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from shared.clients.storage import DEFAULT_PORTS, emulator_connection_string

REPO = Path(__file__).resolve().parents[2]
_LISTENING = re.compile(r"Azurite (Blob|Queue|Table) service is successfully listening at http://[^:]+:(\d+)")


def executable() -> str:
    """The Azurite installed from the committed lockfile (`npm ci`), else one on PATH."""
    local = REPO / "node_modules" / ".bin" / "azurite"
    if local.exists():
        return str(local)
    found = shutil.which("azurite")
    if found is None:
        raise FileNotFoundError("Azurite is not installed: run `make setup` (npm ci) first")
    return found


@dataclass
class Azurite:
    process: subprocess.Popen[str]
    ports: dict[str, int]

    @property
    def connection_string(self) -> str:
        return emulator_connection_string(self.ports)

    def stop(self) -> None:
        """Stop the whole process group (npm's launcher and node); its data is throw-away."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=3)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def start(data_dir: Path, ports: dict[str, int] | None = None, timeout: float = 60.0) -> Azurite:
    """Start Azurite (port 0 = any free port) and wait until all three services listen."""
    wanted = ports or {"blob": 0, "queue": 0, "table": 0}
    data_dir.mkdir(parents=True, exist_ok=True)
    command = [executable(), "--location", str(data_dir), "--skipApiVersionCheck", "--disableProductStyleUrl",
               "--blobHost", "127.0.0.1", "--queueHost", "127.0.0.1", "--tableHost", "127.0.0.1",
               "--blobPort", str(wanted["blob"]), "--queuePort", str(wanted["queue"]),
               "--tablePort", str(wanted["table"])]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,  # noqa: S603 - our own fixed command
                               start_new_session=True)
    found: dict[str, int] = {}
    deadline = time.monotonic() + timeout
    if process.stdout is None:
        raise RuntimeError("Azurite's output is not readable")
    output: list[str] = []
    while len(found) < 3:
        line = process.stdout.readline()
        if not line:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise RuntimeError("Azurite did not start:\n" + "".join(output[-20:]))
            continue
        output.append(line)
        match = _LISTENING.search(line)
        if match:
            found[match.group(1).lower()] = int(match.group(2))
    _drain(process)
    return Azurite(process, found)


def _drain(process: subprocess.Popen[str]) -> None:
    """Keep reading Azurite's output so a full pipe never blocks it."""
    stream = process.stdout

    def pump() -> None:
        for _ in stream or ():
            pass

    threading.Thread(target=pump, daemon=True).start()


def is_listening(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex((host, port)) == 0


def ensure_dev_instance(data_dir: Path, log_file: Path) -> bool:
    """For the demo: start a detached Azurite on the development ports unless one already listens.

    Returns True when it started one. The process outlives this command on purpose (`make stop`).
    """
    if all(is_listening(port) for port in DEFAULT_PORTS.values()):
        return False
    data_dir.mkdir(parents=True, exist_ok=True)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    command = [executable(), "--location", str(data_dir), "--skipApiVersionCheck",
               "--disableProductStyleUrl", "--blobHost", "127.0.0.1", "--queueHost", "127.0.0.1",
               "--tableHost", "127.0.0.1"]
    with log_file.open("ab") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,  # noqa: S603 - fixed command
                                   start_new_session=True)
    (data_dir / "azurite.pid").write_text(str(process.pid))
    deadline = time.monotonic() + 60
    while not all(is_listening(port) for port in DEFAULT_PORTS.values()):
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"Azurite did not start; see {log_file}")
        time.sleep(0.2)
    return True


def stop_dev_instance(data_dir: Path) -> bool:
    pid_file = data_dir / "azurite.pid"
    if not pid_file.exists():
        return False
    with contextlib.suppress(ProcessLookupError, ValueError):
        os.killpg(int(pid_file.read_text()), signal.SIGTERM)
    pid_file.unlink()
    return True
