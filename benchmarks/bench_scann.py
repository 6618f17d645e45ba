"""ScaNN vs brute force on a 1M-item, 64-dimension synthetic catalog, one query at a time.

    python benchmarks/bench_scann.py [--items 1000000] [--dim 64] [--queries 500] [--repeats 3]

Measured in one run: recall@10 of ScaNN against exact search, and queries/second of ScaNN, of
exact numpy search (matmul + partial sort: the brute-force baseline) and of ScaNN's own brute
force. Prints medians over repeats and the ratio, then the recall-vs-speed curve (one tree index
searched with more or fewer leaves) that the report draws. Anchors: the TFRS efficient-serving tutorial
reports ~15x over brute force at 1M; ScaNN's GloVe example R@10 0.90 at ~7.2k QPS batched.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np

from common import add_output_options, save


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--curve-queries", type=int, default=200, help="queries per curve point (0: no curve)")
    add_output_options(parser)
    args = parser.parse_args(argv)

    from scann import scann_ops_pybind

    from tworec.synthetic_embeddings import clustered_unit_vectors
    from tworec.towers.index import IndexConfig, ItemIndex
    from tworec.towers.index_curve import queries_per_second as _qps, recall_speed_curve

    k = 10
    items = clustered_unit_vectors(args.items, args.dim, seed=0)
    queries = clustered_unit_vectors(args.queries, args.dim, seed=1)
    started = time.perf_counter()
    config = IndexConfig(num_neighbors=k)
    index = ItemIndex.build(items, range(args.items), config)
    build_s = time.perf_counter() - started
    exact_searcher = scann_ops_pybind.builder(items, k, "dot_product").score_brute_force().build()

    def exact(q):
        scores = items @ q
        top = np.argpartition(-scores, k)[:k]
        return top[np.argsort(-scores[top])]

    truth = [set(exact(q).tolist()) for q in queries]
    found = [set(int(i) for i in index.search(q, k)[0]) for q in queries]
    recall = float(np.mean([len(a & b) / k for a, b in zip(found, truth)]))
    scann_qps, numpy_qps, scann_bf_qps = [], [], []
    for _ in range(args.repeats):
        scann_qps.append(_qps(lambda q: index.searcher.search(q, final_num_neighbors=k), queries))
        numpy_qps.append(_qps(exact, queries[: max(20, args.queries // 10)]))
        scann_bf_qps.append(_qps(lambda q: exact_searcher.search(q, final_num_neighbors=k),
                                 queries[: max(20, args.queries // 10)]))
    result = {
        "benchmark": "scann", "items": args.items, "dim": args.dim, "queries": args.queries,
        "repeats": args.repeats, "build_seconds": round(build_s, 1), "recall_at_10": round(recall, 4),
        "scann_qps_median": round(statistics.median(scann_qps), 1),
        "brute_force_numpy_qps_median": round(statistics.median(numpy_qps), 1),
        "brute_force_scann_qps_median": round(statistics.median(scann_bf_qps), 1),
        "cpus": os.cpu_count(),
    }
    result["speedup_vs_numpy_brute_force"] = round(result["scann_qps_median"] / result["brute_force_numpy_qps_median"], 1)
    result["speedup_vs_scann_brute_force"] = round(result["scann_qps_median"] / result["brute_force_scann_qps_median"], 1)
    print(f"{args.items:,} items x {args.dim} dims, single query at a time, median of {args.repeats}:")
    print(f"  ScaNN (tree + AH + reorder)  {result['scann_qps_median']:>9,.0f} QPS   recall@10 {recall:.3f}")
    print(f"  brute force, numpy           {result['brute_force_numpy_qps_median']:>9,.0f} QPS   "
          f"-> ScaNN is {result['speedup_vs_numpy_brute_force']}x")
    print(f"  brute force, ScaNN exact     {result['brute_force_scann_qps_median']:>9,.0f} QPS   "
          f"-> ScaNN is {result['speedup_vs_scann_brute_force']}x")
    print(f"  index build {build_s:.0f}s on {os.cpu_count()} cores")
    if args.curve_queries:
        # The same tree index, searched with more or fewer leaves (small catalogs are brute force:
        # the curve builds its own tree then).
        tree = index.searcher if args.items >= config.brute_force_below else None
        result["curve"] = curve = recall_speed_curve(items, queries[: args.curve_queries], k=k, config=config,
                                                     searcher=tree)
        print(f"recall-vs-speed ({curve['leaves']} leaves; brute force {curve['brute_force_qps']:,.0f} QPS):")
        for p in curve["points"]:
            print(f"  {p['leaves_to_search']:>5} leaves  recall@{k} {p['recall']:.3f}  {p['qps']:>9,.0f} QPS "
                  f"({p['speedup_vs_brute_force']:.1f}x brute force)")
    return save(result, args.json, "scann", args.results)


if __name__ == "__main__":
    main(sys.argv[1:])
