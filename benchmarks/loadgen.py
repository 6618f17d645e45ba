"""Closed-loop load generator for the gateway, run as its own process (so it does not share the
gateway's GIL): ``concurrency`` threads each send Recommend back to back for ``seconds``.

    python benchmarks/loadgen.py ADDRESS REQUESTS_JSON CONCURRENCY SECONDS [--rate QPS]

REQUESTS_JSON: a list of {"user_id", "recent_item_ids", "k"}. Prints one JSON line:
{"latencies_ms": [...], "errors": {code: n}, "degraded": n, "seconds": s}. With --rate the load is
open-loop at a fixed rate instead (for the soak benchmark).
"""
from __future__ import annotations

import json
import sys
import threading
import time
from collections import Counter

import grpc

sys.path.insert(0, __import__("os").path.dirname(__file__))


def main(argv=None):
    import argparse

    from tworec.serving import protos

    pb, pb_grpc = protos.load()
    parser = argparse.ArgumentParser()
    parser.add_argument("address")
    parser.add_argument("requests")
    parser.add_argument("concurrency", type=int)
    parser.add_argument("seconds", type=float)
    parser.add_argument("--timeout", type=float, default=1.0)
    parser.add_argument("--rate", type=float, default=0.0, help="open loop at this many requests/s")
    args = parser.parse_args(argv)
    with open(args.requests) as handle:
        templates = [pb.RecommendRequest(**r) for r in json.load(handle)]
    channel = grpc.insecure_channel(args.address)
    stub = pb_grpc.RecommenderStub(channel)
    stub.Recommend(templates[0], timeout=10)  # connect before the clock starts
    latencies, errors, degraded = [], Counter(), [0]
    lock = threading.Lock()
    stop_at = time.perf_counter() + args.seconds

    def worker(offset):
        mine, bad, deg = [], Counter(), 0
        i = offset
        while time.perf_counter() < stop_at:
            request = templates[i % len(templates)]
            i += args.concurrency
            started = time.perf_counter()
            try:
                response = stub.Recommend(request, timeout=args.timeout)
                deg += response.degraded
            except grpc.RpcError as err:
                bad[err.code().name] += 1
            mine.append((time.perf_counter() - started) * 1000)
        with lock:
            latencies.extend(mine)
            errors.update(bad)
            degraded[0] += deg

    if args.rate:
        return _open_loop(stub, templates, args)
    started = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(n,)) for n in range(args.concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(json.dumps({"latencies_ms": latencies, "errors": dict(errors), "degraded": degraded[0],
                      "seconds": time.perf_counter() - started}))


def _open_loop(stub, templates, args):
    """Requests scheduled at a fixed rate; latency counts from the scheduled time, so a slow
    server shows as growing latency rather than as a slower client."""
    import queue

    schedule = queue.Queue()
    records, lock = [], threading.Lock()
    start = time.perf_counter()

    def worker():
        while True:
            item = schedule.get()
            if item is None:
                return
            n, due = item
            try:
                response = stub.Recommend(templates[n % len(templates)], timeout=args.timeout)
                outcome = "degraded" if response.degraded else "ok"
            except grpc.RpcError as err:
                outcome = err.code().name
            with lock:
                records.append((due - start, (time.perf_counter() - due) * 1000, outcome))

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(args.concurrency)]
    for t in threads:
        t.start()
    n = 0
    while True:
        due = start + n / args.rate
        if due - start >= args.seconds:
            break
        delay = due - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        schedule.put((n, due))
        n += 1
    for _ in threads:
        schedule.put(None)
    for t in threads:
        t.join()
    print(json.dumps({"records": records, "seconds": time.perf_counter() - start}))


if __name__ == "__main__":
    main()
