"""Load on `layerwise serve`: 200 estimate requests sent at once against the running server.

    .venv/bin/python bench/serve_load.py [--requests 200]

Starts `layerwise serve --port 0` in its own process (as a user would), waits for its address,
then 200 threads POST at the same moment (a barrier), a mix of the page's own questions on
llama-2-7b, each at its own batch and sequence length: /api/memory (one in four with the verdict
for every GPU, a search of a few dozen estimates), /api/flops and /api/summary. The server
memoises memory estimates (frozen spec, workload), so verdict searches of nearby requests share
points; no two requests are the same. Prints latency percentiles per endpoint and overall, and the errors
(anything but HTTP 200 with a JSON body); exits 1 if there was any error.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

LAYERWISE = str(Path(sys.executable).with_name("layerwise"))


def ask(port: int, endpoint: str, payload: dict) -> tuple[float, bool]:
    body = json.dumps(payload).encode()
    start = time.perf_counter()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        conn.request("POST", f"/api/{endpoint}", body, {"Content-Type": "application/json"})
        resp = conn.getresponse()
        ok = resp.status == 200 and isinstance(json.loads(resp.read()), dict)
        conn.close()
    except (OSError, ValueError):
        ok = False
    return time.perf_counter() - start, ok


def requests(n: int) -> list[tuple[str, dict]]:
    out = []
    for i in range(n):
        # every request a different (batch, seq): no two ask the same question
        workload = {"batch": 1 + i % 8, "seq": 128 * (1 + i // 8), "precision": "bf16-mixed"}
        endpoint = ("memory", "memory", "flops", "summary")[i % 4]
        if endpoint == "memory":
            workload["verdict"] = i % 8 == 0  # the page's question, one in four memory requests
        if endpoint == "summary":
            workload = {"batch": workload["batch"]}
        out.append((endpoint, {"model": "llama-2-7b", "workload": workload}))
    return out


def start_server() -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen([LAYERWISE, "serve", "--port", "0"], stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    match = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
    if not match:
        proc.kill()
        raise SystemExit(f"the server did not start: {line!r}")
    return proc, int(match.group(1))


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc): the work, whatever the load."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=200)
    n = parser.parse_args().requests
    proc, port = start_server()
    try:
        ask(port, "summary", {"model": "llama-2-7b"})  # warm: the first request imports the cost modules
        todo = requests(n)
        results: list[tuple[str, float, bool]] = [None] * n  # type: ignore[list-item]
        barrier = threading.Barrier(n)

        def worker(i: int) -> None:
            endpoint, payload = todo[i]
            barrier.wait()
            results[i] = (endpoint, *ask(port, endpoint, payload))

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
        cpu0, start = cpu_seconds(proc.pid), time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall, cpu = time.perf_counter() - start, cpu_seconds(proc.pid) - cpu0
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    print(f"{n} concurrent requests to layerwise serve (llama-2-7b, 1 server process): wall {wall:.2f} s, "
          f"{n / wall:.0f} requests/s; server CPU {cpu:.2f} s ({1e3 * cpu / n:.0f} ms a request); "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"{'endpoint':<10} {'n':>4} {'errors':>6} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    groups = {name: [r for r in results if r[0] == name] for name in ("memory", "flops", "summary")}
    groups["all"] = results
    for name, rows in groups.items():
        lat = [r[1] * 1e3 for r in rows]
        errors = sum(not r[2] for r in rows)
        print(f"{name:<10} {len(rows):>4} {errors:>6} {statistics.median(lat):>8.0f} {pct(lat, 0.99):>8.0f} "
              f"{max(lat):>8.0f}")
    if any(not r[2] for r in results):
        sys.exit(1)


if __name__ == "__main__":
    main()
