"""Normalize throughput per core over a realistic mix, against the JSON floor measured in the same run.

The floor is `orjson.loads` + `orjson.dumps` of the same bodies: no normalizer can be cheaper than
reading and writing the JSON once. Target: normalize costs at most 3x the floor.
Run: `make bench` or `.venv/bin/python bench/normalize.py [--bodies N] [--rounds R]`.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from shared.normalize import Position, normalize_bodies

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
BATCH = 100


def realistic_mix(count: int) -> list[bytes]:
    """Every good sample body, repeated to `count` bodies (Activity Log dominates, as in real tenants)."""
    bodies = [path.read_bytes() for path in sorted(SAMPLES.rglob("*.json")) if "bad" not in path.parts]
    compact = [orjson.dumps(orjson.loads(body)) for body in bodies]  # hubs carry compact JSON
    return [compact[index % len(compact)] for index in range(count)]


def records_in(bodies: list[bytes]) -> int:
    return normalize_bodies([(body, Position()) for body in bodies], include_raw=False).records_in


def best_times(rounds: int, candidates: dict[str, Callable[[], object]]) -> dict[str, float]:
    """Best time of each candidate, run round-robin so a busy moment of the machine hits all alike."""
    best = dict.fromkeys(candidates, float("inf"))
    for _ in range(rounds):
        for name, work in candidates.items():
            started = time.perf_counter()
            work()
            best[name] = min(best[name], time.perf_counter() - started)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bodies", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    bodies = realistic_mix(args.bodies)
    # Batches as the host delivers them (maxEventBatchSize in host.json), for the floor and for us alike.
    batches = [bodies[start:start + BATCH] for start in range(0, len(bodies), BATCH)]
    positioned = [[(body, Position("0", index)) for index, body in enumerate(batch)] for batch in batches]
    records = records_in(bodies)
    megabytes = sum(map(len, bodies)) / 1e6

    floor_name = "floor: orjson loads+dumps"
    best = best_times(args.rounds, {
        floor_name: lambda: [[orjson.dumps(orjson.loads(body)) for body in batch] for batch in batches],
        "normalize (raw included)": lambda: [normalize_bodies(batch, include_raw=True) for batch in positioned],
        "normalize (raw left out)": lambda: [normalize_bodies(batch, include_raw=False) for batch in positioned],
    })

    print(f"mix: {len(bodies)} bodies in batches of {BATCH}, {records} records, {megabytes:.1f} MB, one core")
    print(f"{'path':<34} {'records/s':>12} {'MB/s':>8} {'x floor':>8}")
    for name, seconds in best.items():
        print(f"{name:<34} {records / seconds:>12,.0f} {megabytes / seconds:>8.1f} {seconds / best[floor_name]:>8.2f}")


if __name__ == "__main__":
    main()
