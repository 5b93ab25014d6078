"""keep_freed_memory, judged by what it is for: page faults of a real allocation pattern.

Each case runs in a fresh interpreter, because malloc's settings are per process and cannot be undone.
Fault counts are counts, not timings: the difference is thousands against a handful.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from shared.worker_memory import runs_on_glibc

ROOT = Path(__file__).resolve().parent.parent

# A batch's life in small: 4 MiB of blocks glibc serves from its heap, freed together, fifty times over.
CHURN = """
import resource
def churn():
    blocks = [bytearray(65536) for _ in range(64)]
    del blocks
churn()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(50):
    churn()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""

glibc_only = pytest.mark.skipif(not runs_on_glibc(), reason="these malloc settings are glibc's")


def faults_after(setup: str) -> int:
    completed = subprocess.run([sys.executable, "-c", setup + CHURN], cwd=ROOT, capture_output=True, text=True,
                               check=True, timeout=120)
    return int(completed.stdout.split()[-1])


@glibc_only
def test_freed_memory_stays_in_the_process() -> None:
    kept = faults_after("from shared.worker_memory import keep_freed_memory\nassert keep_freed_memory()\n")
    default = faults_after("")
    assert default > 10_000  # glibc's defaults: each round's 4 MiB comes back from the kernel
    assert kept < 500


@glibc_only
def test_the_function_worker_keeps_freed_memory() -> None:
    """normalize_fn applies it on import, so the Functions worker that loads function_app runs with it."""
    assert faults_after("import normalize_fn\n") < 500
