"""Normalize throughput per core over a realistic mix, against the JSON floor measured in the same run.

The floor is `orjson.loads` + `orjson.dumps` of the same bodies: no normalizer can be cheaper than
reading and writing the JSON once. Target: normalize costs at most 3x the floor.
Run: `make bench` or `.venv/bin/python bench/normalize.py [--bodies N] [--rounds R]`.
"""

from __future__ import annotations

import argparse
import statistics
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


def paired_times(rounds: int, batch_count: int,
                 candidates: dict[str, Callable[[int], object]]) -> list[dict[str, float]]:
    """Each round's total time per candidate, the candidates taking turns batch by batch.

    Turns per batch (not per run) mean a slow moment of a shared machine hits every candidate alike,
    so the ratio of two candidates within a round is steady even when the machine's speed is not. Each
    batch's output is dropped before the clock stops, as one function invocation would drop it.
    """
    measured = []
    for _ in range(rounds):
        spent = dict.fromkeys(candidates, 0.0)
        for index in range(batch_count):
            for name, work in candidates.items():
                started = time.perf_counter()
                work(index)
                spent[name] += time.perf_counter() - started
        measured.append(spent)
    return measured


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
    rounds = paired_times(args.rounds, len(batches), {
        floor_name: lambda index: [orjson.dumps(orjson.loads(body)) for body in batches[index]],
        "normalize (raw included)": lambda index: normalize_bodies(positioned[index], True),
        "normalize (raw left out)": lambda index: normalize_bodies(positioned[index], False),
    })

    print(f"mix: {len(bodies)} bodies in batches of {BATCH}, {records} records, {megabytes:.1f} MB, one core, "
          f"{args.rounds} rounds")
    print(f"{'path':<34} {'records/s':>12} {'MB/s':>8} {'x floor':>8}   (best round; ratio: median of rounds)")
    for name in rounds[0]:
        seconds = min(spent[name] for spent in rounds)
        ratio = statistics.median(spent[name] / spent[floor_name] for spent in rounds)
        print(f"{name:<34} {records / seconds:>12,.0f} {megabytes / seconds:>8.1f} {ratio:>8.2f}")

if __name__ == "__main__":
    main()
