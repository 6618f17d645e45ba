"""The live loop's costs: ingestion, freshness, and what live state does to Recommend latency.

    python benchmarks/bench_live.py --repo runs/demo/repo [--results bench/results.json]

- ingestion: RecordEvents in batches of 100 (durable: one fsync per batch group), events/s and
  per-call p50/p99 at concurrency 1, events/s at concurrency 4;
- freshness on one replica: from a click's RecordEvents acknowledgement to the end of the next
  Recommend that reflects it (the clicked item is the new user's history), p50/p99;
- freshness across replicas: the click recorded at replica A, Recommend polled at replica B (both
  on one real Redis, started here) until B reflects it, p50/p99;
- Recommend latency with live state and trending against the gateway without live state
  (``recorder`` off), and with the exploration slot on against off, alternating rounds of the
  closed-loop load generator at concurrency 1: medians and their ratios.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from common import add_output_options, exit_on_sigterm, save  # noqa: E402


def _percentiles(values) -> dict:
    values = np.asarray(values) * 1000
    return {"p50_ms": round(float(np.percentile(values, 50)), 3), "p99_ms": round(float(np.percentile(values, 99)), 3)}


def ingestion(client, pb, items, batches: int, concurrency: int) -> dict:
    def batch(tag, n):
        now = int(time.time())
        return pb.RecordEventsRequest(events=[
            pb.Event(event_id=f"{tag}-{n}-{j}", user_id=f"ingest-{(n * 100 + j) % 5000}", item_id=items[j % len(items)],
                     type=pb.CLICK, timestamp=now) for j in range(100)])

    latencies, lock = [], threading.Lock()

    def worker(w):
        for n in range(w, batches, concurrency):
            request = batch(f"c{concurrency}w{w}", n)
            started = time.perf_counter()
            reply = client.stub.RecordEvents(request, timeout=30)
            elapsed = time.perf_counter() - started
            assert reply.accepted == 100, reply
            with lock:
                latencies.append(elapsed)

    started = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(w,)) for w in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - started
    return {"concurrency": concurrency, "events_per_s": round(batches * 100 / seconds), **_percentiles(latencies)}


def freshness(record_client, read_client, pb, trials: int, tag: str) -> dict:
    """Seconds from each click's acknowledgement to the end of the first Recommend (at
    ``read_client``) that reflects it: a new user clicks the first item a visitor without history
    is shown, and the click is reflected once that item leaves the user's answer (what a user had
    is never recommended to them)."""
    top = read_client.recommend(f"{tag}-nobody", k=10).items[0].item_id
    waits = []
    for n in range(trials):
        user = f"{tag}-fresh-{n}-{time.time_ns()}"
        event = pb.Event(event_id=f"{user}-click", user_id=user, item_id=top, type=pb.CLICK,
                         timestamp=int(time.time()))
        record_client.stub.RecordEvents(pb.RecordEventsRequest(events=[event]), timeout=10)
        acknowledged = time.perf_counter()
        while True:
            answer = read_client.recommend(user, k=10)
            if top not in {i.item_id for i in answer.items}:
                waits.append(time.perf_counter() - acknowledged)
                break
            if time.perf_counter() - acknowledged > 10:
                raise RuntimeError("a recorded click was not reflected within 10 s")
    return _percentiles(waits)


def latency_ab(service, address: str, requests_path: str, rounds: int, seconds: float) -> dict:
    """Recommend p50 at concurrency 1 in three modes, alternating within each round: ``off`` (no
    live state), ``live_no_slot`` (live state + trending, exploration slot off) and ``live`` (with
    the slot, when the version has a click prior). Medians over rounds, and their ratios."""
    from bench_gateway import run_load

    recommender = service.recommender
    recorder, exploration = recommender.recorder, recommender.exploration
    modes = {"off": (None, None), "live_no_slot": (recorder, None), "live": (recorder, exploration)}
    runs = {mode: [] for mode in modes}
    run_load(address, requests_path, 1, 2.0)  # warm-up
    slots_before = recommender.counters["exploration"]
    for _ in range(rounds):
        for mode, (rec, slot) in modes.items():
            recommender.recorder, recommender.exploration = rec, slot
            runs[mode].append(float(np.percentile(run_load(address, requests_path, 1, seconds)["latencies_ms"], 50)))
    recommender.recorder, recommender.exploration = recorder, exploration
    out = {mode: round(statistics.median(v), 3) for mode, v in runs.items()}
    out["ratio_live_no_slot_over_off"] = round(out["live_no_slot"] / out["off"], 3)  # live state + trending's cost
    out["ratio_slot_on_over_off"] = round(out["live"] / out["live_no_slot"], 3)
    out["slot_answers"] = recommender.counters["exploration"] - slots_before  # answers that had a slot
    out["rounds"] = rounds
    return out


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_redis():
    port = _free_port()
    folder = tempfile.mkdtemp(prefix="bench-redis-")
    process = subprocess.Popen([shutil.which("redis-server") or "redis-server", "--port", str(port), "--bind",
                                "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", folder],
                               stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    import redis

    deadline = time.monotonic() + 20
    while True:
        try:
            redis.Redis(port=port).ping()
            return process, f"redis://127.0.0.1:{port}/0"
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                process.kill()
                raise
            time.sleep(0.05)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repo", default="runs/demo/repo")
    parser.add_argument("--batches", type=int, default=300, help="batches of 100 events per ingestion run")
    parser.add_argument("--trials", type=int, default=200, help="clicks per freshness measurement")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds of the latency A/B")
    parser.add_argument("--seconds", type=float, default=5.0, help="seconds per latency round")
    add_output_options(parser)
    args = parser.parse_args(argv)

    import json

    from bench_gateway import _requests
    from tworec.live.config import LiveConfig
    from tworec.serving.client import RecommenderClient, pb
    from tworec.serving.config import ServeConfig
    from tworec.serving.server import Service

    work = tempfile.mkdtemp(prefix="bench-live-")
    result = {"repo": os.path.abspath(args.repo)}
    try:
        config = ServeConfig(repo=args.repo, live=LiveConfig(event_log=os.path.join(work, "events"), replica="e"))
        with Service(config) as service, RecommenderClient(service.address, timeout_s=30) as client:
            bundle = service.bundle
            items = [i for i in bundle.popular[:200]]
            result["ingestion"] = [ingestion(client, pb, items, args.batches, c) for c in (1, 4)]
            print("ingestion:", result["ingestion"], flush=True)
            result["freshness_same_replica"] = freshness(client, client, pb, args.trials, "same")
            print("freshness, same replica:", result["freshness_same_replica"], flush=True)
            requests = _requests(bundle)
            for n, r in enumerate(requests):  # live users: their items recorded, not sent with each request
                client.stub.RecordEvents(pb.RecordEventsRequest(events=[
                    pb.Event(event_id=f"ab-{n}-{j}", user_id=r["user_id"], item_id=item, type=pb.CLICK,
                             timestamp=int(time.time()) - 60) for j, item in enumerate(r["recent_item_ids"])]),
                    timeout=30)
            with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
                json.dump(requests, handle)
            result["recommend_latency_ab"] = latency_ab(service, service.address, handle.name, args.rounds,
                                                        args.seconds)
            print("Recommend p50 ms, off / live state + trending / + exploration slot:", result["recommend_latency_ab"],
                  flush=True)
        redis_process, url = _start_redis()
        try:
            live = dict(state=url, event_log=os.path.join(work, "events"))
            with Service(ServeConfig(repo=args.repo, live=LiveConfig(replica="a", **live))) as a:
                with Service(ServeConfig(repo=args.repo, triton_address=a.models.address,
                                         live=LiveConfig(replica="b", **live))) as b, \
                        RecommenderClient(a.address, timeout_s=30) as at_a, \
                        RecommenderClient(b.address, timeout_s=30) as at_b:
                    result["freshness_across_replicas"] = freshness(at_a, at_b, pb, args.trials, "redis")
                    print("freshness, across replicas (Redis):", result["freshness_across_replicas"], flush=True)
        finally:
            redis_process.terminate()
            redis_process.wait(10)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return save(result, args.json, "live", args.results)


if __name__ == "__main__":
    exit_on_sigterm()
    main()
