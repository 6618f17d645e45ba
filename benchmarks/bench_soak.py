"""Soak: Recommend at a fixed rate near capacity for 10 minutes; prints errors, p99 per minute
(its drift from the first minute to the last) and the RSS of the gateway and of Triton over time.

    python benchmarks/bench_soak.py --repo runs/demo/repo [--rate 200] [--minutes 10]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter

import numpy as np

from bench_gateway import _requests
from common import add_output_options, exit_on_sigterm, save

HERE = os.path.dirname(os.path.abspath(__file__))


def _rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def _tree_rss_mb(pid: int) -> float:
    """RSS of a process and its descendants (Triton's model stubs are child processes)."""
    total, pending = 0.0, [pid]
    while pending:
        current = pending.pop()
        total += np.nan_to_num(_rss_mb(current))
        try:
            with open(f"/proc/{current}/task/{current}/children") as handle:
                pending += [int(c) for c in handle.read().split()]
        except OSError:
            pass
    return total


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repo", default="runs/demo/repo")
    parser.add_argument("--rate", type=float, default=200.0,
                        help="requests/s: near the measured capacity (bench_gateway's QPS at 16)")
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=16)
    add_output_options(parser)
    args = parser.parse_args(argv)

    from tworec.serving.server import ServeConfig, Service

    with Service(ServeConfig(repo=args.repo)) as service:
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
            json.dump(_requests(service.bundle, 2000), handle)
        memory, stop = [], threading.Event()

        def sample():
            while not stop.wait(10):
                memory.append((time.time(), _rss_mb(os.getpid()), _tree_rss_mb(service.triton_server.process.pid)))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        done = subprocess.run([sys.executable, os.path.join(HERE, "loadgen.py"), service.address, handle.name,
                               str(args.concurrency), str(args.minutes * 60), "--rate", str(args.rate)],
                              capture_output=True, text=True, check=True)
        stop.set()
        os.unlink(handle.name)
    records = json.loads(done.stdout.strip().splitlines()[-1])["records"]
    outcomes = Counter(r[2] for r in records)
    minutes = {}
    for t, latency, _ in records:
        minutes.setdefault(int(t // 60), []).append(latency)
    p99 = {m: float(np.percentile(v, 99)) for m, v in sorted(minutes.items())}
    result = {"rate": args.rate, "minutes": args.minutes, "requests": len(records), "outcomes": dict(outcomes),
              "errors": sum(n for k, n in outcomes.items() if k not in ("ok", "degraded")),
              "p99_ms_per_minute": p99, "p99_drift_ms": p99[max(p99)] - p99[min(p99)] if p99 else 0.0,
              "rss_mb": {"gateway": [m[1] for m in memory], "triton": [m[2] for m in memory]}}
    for key in ("gateway", "triton"):
        series = result["rss_mb"][key]
        result[f"{key}_rss_growth_mb"] = (series[-1] - series[0]) if len(series) > 1 else 0.0
        # Warm-up (caches, allocator pools) grows early; a leak keeps growing in the second half too.
        result[f"{key}_rss_growth_second_half_mb"] = (series[-1] - series[len(series) // 2]) if len(series) > 1 else 0.0
    print(f"{len(records)} requests at {args.rate:.0f}/s for {args.minutes:g} min: outcomes {dict(outcomes)}")
    print("p99 per minute (ms): " + ", ".join(f"{v:.1f}" for v in p99.values()) +
          f"; drift {result['p99_drift_ms']:+.1f} ms")
    print(f"RSS growth: gateway {result['gateway_rss_growth_mb']:+.1f} MB "
          f"({result['gateway_rss_growth_second_half_mb']:+.1f} MB in the second half), Triton and its model "
          f"stubs {result['triton_rss_growth_mb']:+.1f} MB ({result['triton_rss_growth_second_half_mb']:+.1f} MB)")
    return save(result, args.json, "soak", args.results)


if __name__ == "__main__":
    exit_on_sigterm()
    main()
