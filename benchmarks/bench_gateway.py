"""Gateway load: closed-loop Recommend (200 candidates, k = 10) at concurrency 1, 4 and 16.

    python benchmarks/bench_gateway.py --repo runs/demo/repo [--seconds 15] [--repeats 3]

The gateway and Triton run as in production (this process hosts the gateway, Triton is its own
process); the load generator is a separate process (benchmarks/loadgen.py) on the same machine.
Prints p50/p99 latency and QPS per concurrency (medians over repeats) and where the gateway's
time went: query tower, ScaNN, Triton (the ranker round trip), the rest (gRPC, validation,
response building). Goal on the 2-core machine: p50 ≤ 5 ms and p99 ≤ 15 ms at concurrency 1,
≥ 300 QPS at concurrency 16 with no errors.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

import numpy as np

from common import add_output_options, exit_on_sigterm, save

HERE = os.path.dirname(os.path.abspath(__file__))


def _requests(bundle, n: int = 500, seed: int = 0) -> list:
    rng = np.random.default_rng(seed)
    users = list(bundle.user_rows)
    warm = [i for i, r in bundle.items.row_of.items() if not bundle.items.cold[r]]
    out = []
    for j in range(n):
        history = list(dict.fromkeys(rng.choice(warm, size=5, replace=False).tolist()))
        user = users[rng.integers(len(users))] if j % 4 else f"new-visitor-{j}"  # a quarter unknown
        out.append({"user_id": user, "recent_item_ids": history, "k": 10})
    return out


def run_load(address: str, requests_path: str, concurrency: int, seconds: float, timeout: float = 1.0) -> dict:
    done = subprocess.run([sys.executable, os.path.join(HERE, "loadgen.py"), address, requests_path,
                           str(concurrency), str(seconds), "--timeout", str(timeout)],
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repo", default="runs/demo/repo")
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    add_output_options(parser)
    args = parser.parse_args(argv)

    from tworec.serving.server import ServeConfig, Service

    results = {"repo": os.path.abspath(args.repo), "levels": {}}
    with Service(ServeConfig(repo=args.repo)) as service:
        bundle = service.bundle
        results["catalog_items"] = bundle.index.size
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
            json.dump(_requests(bundle), handle)
        run_load(service.address, handle.name, 4, 3.0)  # warm-up
        for concurrency in args.concurrency:
            runs, shares = [], []
            for _ in range(args.repeats):
                before = service.recommender.timings.snapshot()
                r = run_load(service.address, handle.name, concurrency, args.seconds)
                after = service.recommender.timings.snapshot()
                delta = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}
                lat = np.array(r["latencies_ms"])
                runs.append({"p50_ms": float(np.percentile(lat, 50)), "p99_ms": float(np.percentile(lat, 99)),
                             "qps": len(lat) / r["seconds"], "errors": sum(r["errors"].values()),
                             "degraded": r["degraded"]})
                total = delta.get("total", 0.0) or 1.0
                shares.append({k: delta.get(k, 0.0) / total for k in ("query_tower", "scann", "triton")})
            level = {k: statistics.median(run[k] for run in runs) for k in ("p50_ms", "p99_ms", "qps")}
            level["errors"] = sum(run["errors"] for run in runs)
            level["degraded"] = sum(run["degraded"] for run in runs)
            level["time_share"] = {k: statistics.median(s[k] for s in shares) for k in shares[0]}
            level["time_share"]["other"] = 1.0 - sum(level["time_share"].values())
            results["levels"][str(concurrency)] = level
            share = ", ".join(f"{k} {v:.0%}" for k, v in level["time_share"].items())
            print(f"concurrency {concurrency:>2}: p50 {level['p50_ms']:.2f} ms  p99 {level['p99_ms']:.2f} ms  "
                  f"{level['qps']:.0f} QPS  errors {level['errors']}  degraded {level['degraded']}  "
                  f"(gateway time: {share})", flush=True)
        os.unlink(handle.name)
    one, sixteen = results["levels"].get("1"), results["levels"].get("16")
    if one and sixteen:
        print(f"goal: p50 ≤ 5 ms ({one['p50_ms']:.2f}), p99 ≤ 15 ms ({one['p99_ms']:.2f}) at 1; "
              f"≥ 300 QPS at 16 ({sixteen['qps']:.0f}) with no errors ({sixteen['errors']})")
    return save(results, args.json, "gateway", args.results)


if __name__ == "__main__":
    exit_on_sigterm()
    main()
