"""The crash/redelivery soak, short: bench/soak.py over a few thousand records in two partitions, with
failures in about a third of the batches, against the session's Azurite. The long run is
`.venv/bin/python bench/soak.py` (200,000 records, four partitions)."""

from __future__ import annotations

import re
import subprocess
import sys

from shared import azurite
from tests.conftest import REPO


def test_crashes_and_redeliveries_end_exactly_where_a_clean_run_ends(azurite_instance: azurite.Azurite) -> None:
    done = subprocess.run(
        [sys.executable, "bench/soak.py", "--events", "1500", "--partitions", "2", "--crash", "0.3",
         "--rewind", "0.1", "--connection-string", azurite_instance.connection_string],
        cwd=REPO, capture_output=True, text=True, timeout=180, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "faulty run equals clean run" in done.stdout
    faulty = re.search(r"faulty: .* (\d+) failed batches, (\d+) lost checkpoints", done.stdout)
    assert faulty is not None and int(faulty.group(1)) > 0 and int(faulty.group(2)) > 0, done.stdout
