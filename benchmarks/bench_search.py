"""Search's costs: the gateway's Search latency, and the BM25 index's build (= rebuild) time.

    python benchmarks/bench_search.py --repo RUN/repo [--bm25-items 100000 1000000] [--json FILE]

- Search at concurrency 1 on a repository exported with ``--search``: p50/p99 of anonymous
  queries (by the query alone) and of personalised ones (a known user), interleaved in rounds,
  queries drawn from the catalog's category words and title words; SimilarItems by item too;
- bm25s: index build seconds at each ``--bm25-items`` size, over synthetic item texts (the
  synthetic source's). bm25s cannot add or delete in place, so this is also the cost of the
  background rebuild after an upsert (removals are masked at once and cost nothing).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from common import add_output_options, exit_on_sigterm, save  # noqa: E402


def _percentiles(seconds) -> dict:
    ms = np.asarray(seconds) * 1000
    return {"p50_ms": round(float(np.percentile(ms, 50)), 3), "p99_ms": round(float(np.percentile(ms, 99)), 3),
            "calls": len(ms)}


def search_latency(repo: str, rounds: int, per_round: int, seed: int = 0) -> dict:
    from tworec.serving.client import RecommenderClient
    from tworec.serving.server import ServeConfig, Service

    rng = np.random.default_rng(seed)
    with Service(ServeConfig(repo=repo)) as service, RecommenderClient(service.address, timeout_s=10) as client:
        bundle = service.bundle
        if bundle.search_engine is None:
            raise SystemExit(f"{repo}'s current version serves no search: export it with --search")
        titles = [t for t in bundle.items.titles if t]
        words = sorted({w for t in titles for w in t.split() if len(w) > 3 and w.isalpha()})
        categories = [c for c in bundle.category_names[1:] if c]
        queries = [" ".join(rng.choice(words, 2)) if j % 2 else str(rng.choice(categories)) for j in range(200)]
        users = list(bundle.user_rows)
        items = [i for i in bundle.items.item_ids[:5000] if i in bundle.search_engine.row_of]
        for q in queries[:20]:  # warm-up
            client.search(q, k=10)
        runs = {"anonymous": [], "personalised": [], "similar_items": []}
        for _ in range(rounds):
            for mode in runs:
                times = []
                for j in range(per_round):
                    q = queries[int(rng.integers(len(queries)))]
                    started = time.perf_counter()
                    if mode == "anonymous":
                        client.search(q, k=10)
                    elif mode == "personalised":
                        client.search(q, user_id=users[int(rng.integers(len(users)))], k=10)
                    else:
                        client.similar_items(item_id=items[int(rng.integers(len(items)))], k=10)
                    times.append(time.perf_counter() - started)
                runs[mode].append(_percentiles(times))
        out = {"catalog_items": len(bundle.search_engine.item_ids), "rounds": rounds}
        for mode, measured in runs.items():
            out[mode] = {k: round(statistics.median(m[k] for m in measured), 3) for k in ("p50_ms", "p99_ms")}
        return out


def bm25_build(sizes) -> list:
    from tworec.beam.config import SyntheticConfig
    from tworec.beam.sources.synthetic import item_record
    from tworec.search.lexical import LexicalIndex

    out = []
    for n in sizes:
        config = SyntheticConfig(interactions=1000, items=n)
        texts = [item_record(config, i).text for i in range(n)]
        ids = [f"i{i}" for i in range(n)]
        started = time.perf_counter()
        index = LexicalIndex.build(ids, texts)
        seconds = time.perf_counter() - started
        query = time.perf_counter()
        index.scores("space telescope")
        out.append({"items": n, "build_seconds": round(seconds, 2),
                    "scores_ms": round((time.perf_counter() - query) * 1000, 2)})
        print(out[-1], flush=True)
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repo")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--per-round", type=int, default=200)
    parser.add_argument("--bm25-items", type=int, nargs="*", default=[])
    add_output_options(parser)
    args = parser.parse_args(argv)
    result = {}
    if args.repo:
        result["search"] = search_latency(args.repo, args.rounds, args.per_round)
        print("Search / SimilarItems latency at concurrency 1:", result["search"], flush=True)
    if args.bm25_items:
        result["bm25_build"] = bm25_build(args.bm25_items)
    return save(result, args.json, "search", args.results)


if __name__ == "__main__":
    exit_on_sigterm()
    main()
