"""Enrichment API throughput and latency through `python -m shared serve`, warm, on 127.0.0.1 only.

Measures `ip/` (service tag index of realistic size, held in memory) and `operation/` (catalog), one
keep-alive client sending requests one after another. Two baselines from the same run put the numbers in
context: the same handlers called in-process without HTTP (what the functions themselves cost), and a
trivial http.server answering a constant (what Python's HTTP server alone costs per request).
Run: `.venv/bin/python bench/enrich.py [--requests N]`.
"""

from __future__ import annotations

import argparse
import http.client
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import azure.functions as func
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from shared.cli.serve import spawn
from shared.clients import wiring
from shared.enrich import api
from shared.normalize.catalog import load_operations

ADDRESSES = ["13.68.20.7", "20.50.1.2", "198.51.100.143", "10.10.2.4", "2603:1030:210::5", "2001:db8:c0:10::d4",
             "52.239.1.1", "40.74.146.81"]


def service_tags_file(folder: Path, tags: int = 2500, prefixes_per_tag: int = 16) -> Path:
    """A download-format file as large as the public cloud's (tens of thousands of prefixes)."""
    values = []
    for number in range(tags):
        prefixes = [f"{20 + number % 200}.{(number * 7 + index) % 256}.{index * 16 % 256}.0/{20 + index % 9}"
                    for index in range(prefixes_per_tag)]
        values.append({"name": f"Tag{number}.region{number % 60}", "id": f"Tag{number}",
                       "properties": {"region": f"region{number % 60}", "systemService": f"Service{number % 90}",
                                      "addressPrefixes": prefixes}})
    path = folder / "ServiceTags_Public_bench.json"
    path.write_bytes(orjson.dumps({"changeNumber": "1", "cloud": "Public", "values": values}))
    return path


def targets(count: int) -> dict[str, list[str]]:
    operations = [name for name in load_operations() if "/" in name]
    return {
        "ip/": [f"/enrich/ip/{ADDRESSES[index % len(ADDRESSES)]}" for index in range(count)],
        "operation/": [f"/enrich/operation/{operations[index % len(operations)]}" for index in range(count)],
    }


def timed_http(url: str, paths: Sequence[str]) -> list[float]:
    """Latency of each request over one keep-alive connection; every answer must be a 200."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=10)
    latencies = []
    try:
        for path in paths:
            started = time.perf_counter()
            connection.request("GET", parts.path + quote(path, safe="/:"))
            response = connection.getresponse()
            response.read()
            latencies.append(time.perf_counter() - started)
            assert response.status == 200, (path, response.status)
    finally:
        connection.close()
    return latencies


def timed_in_process(route: api.Route, paths: Sequence[str]) -> list[float]:
    """The same handler without HTTP: the HttpRequest is built and handled in this process."""
    latencies = []
    for path in paths:
        value = path.split("/", 3)[3]
        started = time.perf_counter()
        request = func.HttpRequest("GET", f"http://127.0.0.1/api{path}", params={},
                                   route_params={"ip" if route is api.IP else "name": value}, body=b"")
        response = api.handle(route, request)
        latencies.append(time.perf_counter() - started)
        assert response.status_code == 200, (path, response.status_code)
    return latencies


def summary(latencies: list[float]) -> dict[str, float]:
    ordered = sorted(latencies)
    return {"req/s": len(ordered) / sum(ordered), "p50 ms": statistics.median(ordered) * 1e3,
            "p99 ms": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1e3}


def constant_server() -> None:
    """Baseline server (run as `bench/enrich.py --constant-server`): a fixed JSON answer to every GET."""
    answer = orjson.dumps({"ok": True})

    class Constant(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # as in shared/cli/serve.py

        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet."""

    server = ThreadingHTTPServer(("127.0.0.1", 0), Constant)
    print(f"serving 1 HTTP functions on http://127.0.0.1:{server.server_port}/api/", file=sys.stderr, flush=True)
    server.serve_forever()


def start_constant_server() -> tuple[subprocess.Popen[bytes], str]:
    process = subprocess.Popen([sys.executable, __file__, "--constant-server"],  # noqa: S603 - this file
                               stderr=subprocess.PIPE, stdout=subprocess.DEVNULL)
    assert process.stderr is not None
    line = process.stderr.readline().decode()
    return process, line.rsplit(" on ", 1)[1].strip().rstrip("/")


def run(requests: int) -> list[tuple[str, dict[str, float]]]:
    results: list[tuple[str, dict[str, float]]] = []
    paths = targets(requests)
    warm = {route: route_paths[:200] for route, route_paths in paths.items()}
    with tempfile.TemporaryDirectory() as folder:
        env = {name: value for name, value in os.environ.items() if not name.startswith("STORMWATCH_")}
        env |= {"STORMWATCH_SERVICE_TAGS_FILE": str(service_tags_file(Path(folder))),
                "STORMWATCH_ARM_ENDPOINT": "http://127.0.0.1:9"}  # no ARM call is expected; never real Azure
        served = spawn(env)
        try:
            for route, route_paths in paths.items():
                timed_http(served.url, warm[route])
                results.append((f"{route} via serve", summary(timed_http(served.url, route_paths))))
        finally:
            served.stop()
        os.environ.update(env)
        wiring.reset()
        for route, handler in (("ip/", api.IP), ("operation/", api.OPERATION)):
            timed_in_process(handler, warm[route])
            results.append((f"{route} handler in-process", summary(timed_in_process(handler, paths[route]))))
    constant, url = start_constant_server()
    try:
        timed_http(url, ["/constant"] * 200)
        results.append(("constant http.server", summary(timed_http(url, ["/constant"] * requests))))
    finally:
        constant.terminate()
        constant.wait()
    return results


def report(results: list[tuple[str, dict[str, float]]], printer: Callable[[str], None] = print) -> None:
    by_name = dict(results)
    printer(f"{'':32}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}")
    for name, figures in results:
        printer(f"{name:32}{figures['req/s']:>10.0f}{figures['p50 ms']:>10.3f}{figures['p99 ms']:>10.3f}")
    constant = by_name["constant http.server"]["req/s"]
    for route in ("ip/", "operation/"):
        served = by_name[f"{route} via serve"]["req/s"]
        in_process = by_name[f"{route} handler in-process"]["req/s"]
        printer(f"{route:11} via serve: {served / constant:.2f}x the constant server's req/s, "
                f"{in_process / served:.1f}x slower than the handler alone")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=2000, help="per route (bounded loop)")
    parser.add_argument("--constant-server", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.constant_server:
        constant_server()
        return
    report(run(min(args.requests, 20000)))


if __name__ == "__main__":
    main()
