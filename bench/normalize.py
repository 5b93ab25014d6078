"""Normalize throughput per core over a realistic mix, against the JSON floor measured in the same run.

The floor is `orjson.loads` + `orjson.dumps` of the same bodies: no normalizer can be cheaper than
reading and writing the JSON once. Target: normalize costs at most 3x the floor.
Ratios are measured two ways (see `paired_times`). The last line normalizes with raw included but each
mapper replaced by a copy of its event, mapped beforehand: the rest of the pipeline's share, so the
difference to the first line is the mappers'.
The process keeps freed memory as the Functions worker does (`shared.worker_memory`); `--glibc-defaults`
measures without, where every batch takes its memory back from the kernel (the page-fault column).
It measures the `shared` package it imports: the sources, or with `PYTHONPATH=<package folder>` a package
built by .ci/package.py, whose mappers are compiled (`make bench` measures both).
Run: `make bench` or `.venv/bin/python bench/normalize.py [--bodies N] [--rounds R] [--glibc-defaults]`.
"""

from __future__ import annotations

import argparse
import importlib.util
import resource
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from unittest.mock import patch

import orjson

if importlib.util.find_spec("shared") is None:  # no package on PYTHONPATH: measure the sources
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import shared.normalize.batch
from shared.clients.eventhubs import Position
from shared.normalize.batch import normalize_bodies
from shared.normalize.mappers import map_record, split_body
from shared.worker_memory import keep_freed_memory

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
BATCH = 100


def realistic_mix(count: int) -> list[bytes]:
    """Every good sample body, repeated to `count` bodies (Activity Log dominates, as in real tenants).

    Each body is its own copy, as a hub delivers fresh bytes: none of them is already in a cache."""
    bodies = [path.read_bytes() for path in sorted(SAMPLES.rglob("*.json")) if "bad" not in path.parts]
    compact = [orjson.dumps(orjson.loads(body)) for body in bodies]  # hubs carry compact JSON
    return [bytes(bytearray(compact[index % len(compact)])) for index in range(count)]


def records_in(bodies: list[bytes]) -> int:
    return normalize_bodies([(body, Position()) for body in bodies], include_raw=False).records_in


def without_mapping(batch: list[tuple[bytes, Position]], events: list[dict[str, Any]]) -> object:
    """Normalize with each record's mapping replaced by a copy of its event, mapped beforehand: what
    parsing, encoding (the same events) and batch bookkeeping cost without the mappers."""
    ready = iter(events)
    with patch.object(shared.normalize.batch, "map_record", lambda record: next(ready).copy()):
        return normalize_bodies(batch, True)


def paired_times(rounds: int, batch_count: int, candidates: dict[str, Callable[[int], object]],
                 *, taking_turns: bool, faults: dict[str, int]) -> list[dict[str, float]]:
    """Each round's total time per candidate, the rounds' ratios to be compared pairwise.

    Taking turns batch by batch, a slow moment of a shared machine hits every candidate alike and each
    runs in the cache state the others leave, as the JSON work inside normalize does. Alone, each
    candidate runs all its batches in a row, so the floor runs warm: its best case. Both are printed: with
    glibc's defaults they differ by far more than the machine's noise (page faults); with freed memory
    kept, as the worker keeps it, they agree. Each batch's output is dropped before the
    clock stops, as one function invocation would drop it. Minor page faults are added to `faults`.
    """
    measured = []
    for _ in range(rounds):
        spent = dict.fromkeys(candidates, 0.0)
        order = [(index, name) for index in range(batch_count) for name in candidates] if taking_turns else [
            (index, name) for name in candidates for index in range(batch_count)]
        for index, name in order:
            faulted = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            started = time.perf_counter()
            candidates[name](index)
            spent[name] += time.perf_counter() - started
            faults[name] += resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faulted
        measured.append(spent)
    return measured


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bodies", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--glibc-defaults", action="store_true", help="leave malloc's settings as they are")
    args = parser.parse_args()
    kept = not args.glibc_defaults and keep_freed_memory()
    bodies = realistic_mix(args.bodies)
    # Batches as the host delivers them (maxEventBatchSize in host.json), for the floor and for us alike.
    batches = [bodies[start:start + BATCH] for start in range(0, len(bodies), BATCH)]
    positioned = [[(body, Position("0", index)) for index, body in enumerate(batch)] for batch in batches]
    records = records_in(bodies)
    mapped = [[map_record(record) for body in batch for record in split_body(body)] for batch in batches]
    megabytes = sum(map(len, bodies)) / 1e6

    floor_name = "floor: orjson loads+dumps"
    candidates: dict[str, Callable[[int], object]] = {
        floor_name: lambda index: [orjson.dumps(orjson.loads(body)) for body in batches[index]],
        "normalize (raw included)": lambda index: normalize_bodies(positioned[index], True),
        "normalize (raw left out)": lambda index: normalize_bodies(positioned[index], False),
        "  the same, mapping left out": lambda index: without_mapping(positioned[index], mapped[index]),
    }
    faults = dict.fromkeys(candidates, 0)
    turns = paired_times(args.rounds, len(batches), candidates, taking_turns=True, faults=faults)
    alone = paired_times(args.rounds, len(batches), candidates, taking_turns=False, faults=faults)

    print(f"mappers: {shared.normalize.batch.MAPPERS}, from {Path(shared.normalize.batch.__file__).parent.parent}")
    print(f"mix: {len(bodies)} bodies in batches of {BATCH}, {records} records, {megabytes:.1f} MB, one core, "
          f"{args.rounds} rounds each way, freed memory {'kept' if kept else 'returned (glibc defaults)'}")
    print(f"{'path':<34} {'records/s':>12} {'MB/s':>8} {'x floor':>8} {'alone':>7} {'faults/batch':>13}")
    per_batch = 2 * args.rounds * len(batches)
    for name in candidates:
        seconds = min(spent[name] for spent in turns)
        ratios = [statistics.median(spent[name] / spent[floor_name] for spent in way) for way in (turns, alone)]
        print(f"{name:<34} {records / seconds:>12,.0f} {megabytes / seconds:>8.1f} {ratios[0]:>8.2f} {ratios[1]:>7.2f}"
              f" {faults[name] / per_batch:>13,.0f}")
    print("records/s: best round taking turns; x floor: median ratio of rounds taking turns batch by batch;"
          " alone: the same with each candidate's batches run in a row (the floor warm); faults/batch: minor"
          " page faults, both ways")

if __name__ == "__main__":
    main()
