"""Closed-loop HTTP load generator for one scenario: `python -m bench.load --port P --scenario text-16 ...`.

Run as its own process so the clients' GIL and JSON parsing never sit in the benchmark's main process. Each
client thread owns one keep-alive `http.client` connection and sends pre-built bodies back to back. Requests
that finish during the warm-up are dropped; throughput counts the items of requests that finish inside the
measurement window. Prints one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import statistics
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from bench.workload import SCENARIOS, Scenario, image_body, read_response, text_bodies

WARMUP_LIMIT = 300.0  # seconds to wait for every client's first reply before measuring anyway


@dataclass(frozen=True)
class Sample:
    end: float  # perf_counter when the response was fully read
    latency: float  # seconds
    status: int  # HTTP status; 0 when the connection failed
    valid: bool  # 200 with vectors of the right shape
    encoders: tuple[str, ...] = ()  # the text encoders the reply names (our service's "encoder" field)


class Clients:
    """N threads, one connection each, taking the next body from a shared cycle until the deadline."""

    def __init__(self, host: str, port: int, scenario: Scenario, bodies: list[bytes], content_type: str,
                 dimension: int):
        self.host, self.port, self.scenario, self.dimension = host, port, scenario, dimension
        self.headers = {"Content-Type": content_type}
        self._bodies = itertools.cycle(bodies)
        self._lock = threading.Lock()
        self.sent = 0
        self.deadline = float("inf")  # set when the measurement window opens

    def next_body(self) -> bytes:
        with self._lock:  # cheap next to a request; keeps the "each request takes the next query" order exact
            self.sent += 1
            return next(self._bodies)

    def run(self, warmup: float, seconds: float) -> tuple[list[Sample], tuple[float, float]]:
        """Samples of every request, and the measurement window: it opens once `warmup` seconds have passed AND
        every client has had a reply (a cold first request can take longer than the warm-up), then lasts `seconds`."""
        results: list[list[Sample]] = [[] for _ in range(self.scenario.clients)]
        threads = [threading.Thread(target=self._loop, args=(out,)) for out in results]
        began = time.perf_counter()
        for thread in threads:
            thread.start()
        time.sleep(warmup)
        while not all(results) and time.perf_counter() < began + WARMUP_LIMIT:
            time.sleep(0.01)
        opened = time.perf_counter()
        window = (opened, opened + seconds)
        self.deadline = window[1]  # the threads stop sending once it has passed
        for thread in threads:
            thread.join()
        return [sample for samples in results for sample in samples], window

    def _loop(self, out: list[Sample]) -> None:
        conn: http.client.HTTPConnection | None = None
        while time.perf_counter() < self.deadline:
            body = self.next_body()
            start = time.perf_counter()
            try:
                conn = conn or http.client.HTTPConnection(self.host, self.port, timeout=300)
                conn.request("POST", self.scenario.path, body, self.headers)
                response = conn.getresponse()
                payload, status = response.read(), response.status
            except (OSError, http.client.HTTPException):
                if conn is not None:
                    conn.close()
                conn, payload, status = None, b"", 0
            end = time.perf_counter()  # before validating: parsing the reply is the client's time, not latency
            valid, encoders = read_response(self.scenario, payload, self.dimension) if status == 200 else (False, ())
            out.append(Sample(end, end - start, status, valid, encoders))
        if conn is not None:
            conn.close()


def summarize(scenario: Scenario, samples: list[Sample], window: tuple[float, float], distinct: int, sent: int) -> dict:
    """Throughput and latency of the requests that finished inside the measurement window."""
    start, end = window
    counted = [s for s in samples if start <= s.end <= end]
    ok = [s for s in counted if s.valid]
    latencies_ms = sorted(s.latency * 1000 for s in ok)
    return {
        "scenario": scenario.name,
        "clients": scenario.clients,
        "unit": scenario.unit,
        "seconds": end - start,
        "requests": len(counted),
        "items_per_s": len(ok) * scenario.items_per_request / (end - start),
        "p50_ms": _percentile(latencies_ms, 50),
        "p95_ms": _percentile(latencies_ms, 95),
        "mean_ms": statistics.fmean(latencies_ms) if latencies_ms else None,
        "non_200": dict(Counter(str(s.status) for s in counted if s.status != 200)),
        "invalid_200": sum(1 for s in counted if s.status == 200 and not s.valid),
        "encoders": dict(Counter(encoder for s in counted for encoder in s.encoders)),  # texts per encoder named
        "distinct_bodies": distinct,
        "bodies_sent": sent,  # more than distinct_bodies means bodies (texts) were repeated
    }


def _percentile(sorted_values: list[float], pct: int) -> float | None:
    if len(sorted_values) < 2:
        return sorted_values[0] if sorted_values else None
    return statistics.quantiles(sorted_values, n=100, method="inclusive")[pct - 1]


def run(args: argparse.Namespace) -> dict:
    scenario = SCENARIOS[args.scenario]
    if scenario.kind == "image":
        body, content_type = image_body(Path(args.jpeg))
        bodies = [body]
    else:
        bodies, content_type = text_bodies(scenario), "application/json"
    clients = Clients(args.host, args.port, scenario, bodies, content_type, args.dimension)
    cpu_before, began = time.process_time(), time.perf_counter()
    samples, window = clients.run(args.warmup, args.seconds)
    figures = summarize(scenario, samples, window, len(bodies), clients.sent)
    figures["warmup_s"] = window[0] - began
    # The clients share the machine with the server: how much of one core they used says how much they took.
    figures["client_cpu_pct"] = 100 * (time.process_time() - cpu_before) / (time.perf_counter() - began)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--scenario", choices=sorted(SCENARIOS), required=True)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--dimension", type=int, default=512)
    parser.add_argument("--jpeg", help="the JPEG the image scenarios upload")
    print(json.dumps(run(parser.parse_args())))


if __name__ == "__main__":
    main()
