"""Azurite, the real local Blob/Queue/Table store, started for tests and the local demo.

Tests start their own instance on free ports with a temporary data folder; the demo starts its own on
the development ports (10000-10002, or three from `--azurite-port`), which `replay`, `serve` and
`deadletters` use by default.
"""

from __future__ import annotations

import argparse
import contextlib
import json
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

from shared.cli.usage import UsageError, port_number
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


def add_azurite_port(command: argparse.ArgumentParser) -> None:
    command.add_argument("--azurite-port", type=port_number, default=DEFAULT_PORTS["blob"], metavar="PORT",
                         help="the demo's Azurite: blob on PORT, queue on PORT+1, table on PORT+2 "
                              f"(default {DEFAULT_PORTS['blob']}; make's AZURITE_PORT)")


def ports_from(first: int) -> dict[str, int]:
    if not 0 < first <= 65533:
        raise UsageError(f"--azurite-port {first}: Azurite needs three ports from it, below 65536")
    return {"blob": first, "queue": first + 1, "table": first + 2}


def _span(ports: dict[str, int]) -> str:
    return f"127.0.0.1:{ports['blob']}-{ports['table']}"


def _recorded(data_dir: Path) -> tuple[int, dict[str, int]] | None:
    """The Azurite this demo started (pid and ports from its pid file), if that process still runs."""
    try:
        recorded = json.loads((data_dir / "azurite.pid").read_text())
        pid, ports = int(recorded["pid"]), {name: int(recorded["ports"][name]) for name in DEFAULT_PORTS}
        os.kill(pid, 0)
    except (OSError, ValueError, TypeError, KeyError):
        return None
    return pid, ports


def ensure_dev_instance(data_dir: Path, log_file: Path, ports: dict[str, int]) -> bool:
    """For the demo: a detached Azurite of its own on `ports`, started unless it already runs there.

    Anything else listening on those ports (an Azurite the demo did not start, with data of its own,
    or another program) is never used: the demo stops with a message that says how to choose ports.
    Returns True when it started one. The process outlives this command on purpose (`make stop`).
    """
    recorded = _recorded(data_dir)
    if recorded is not None and recorded[1] != ports:
        raise UsageError(f"the demo's Azurite already runs on {_span(recorded[1])}: use "
                         f"AZURITE_PORT={recorded[1]['blob']} (--azurite-port), or `make stop` it first")
    if recorded is not None and all(is_listening(port) for port in ports.values()):
        return False
    taken = [port for port in ports.values() if is_listening(port)]
    if taken:
        raise UsageError(f"port {taken[0]} of 127.0.0.1 is in use by a process the demo did not start (another "
                         f"Azurite?); stop it or choose free ports: make demo AZURITE_PORT=20000")
    data_dir.mkdir(parents=True, exist_ok=True)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    command = [executable(), "--location", str(data_dir), "--skipApiVersionCheck",
               "--disableProductStyleUrl", "--blobHost", "127.0.0.1", "--queueHost", "127.0.0.1",
               "--tableHost", "127.0.0.1", "--blobPort", str(ports["blob"]), "--queuePort", str(ports["queue"]),
               "--tablePort", str(ports["table"])]
    with log_file.open("ab") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,  # noqa: S603 - fixed command
                                   start_new_session=True)
    (data_dir / "azurite.pid").write_text(json.dumps({"pid": process.pid, "ports": ports}))
    deadline = time.monotonic() + 60
    while not all(is_listening(port) for port in ports.values()):
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"Azurite did not start; see {log_file}")
        time.sleep(0.2)
    return True


def stop_dev_instance(data_dir: Path) -> bool:
    recorded = _recorded(data_dir)
    (data_dir / "azurite.pid").unlink(missing_ok=True)
    if recorded is None:
        return False
    with contextlib.suppress(ProcessLookupError):
        os.killpg(recorded[0], signal.SIGTERM)
    return True
