"""ScaNN's recall-vs-speed trade-off against exact search, measured in one run.

One partitioned index (tree + asymmetric hashing + exact re-ranking) is built once and searched
with more or fewer leaves per query (ScaNN lets a search override ``leaves_to_search``); each
setting gives recall@k against exact dot-product search and single-query throughput. Exact
search (ScaNN's own brute force) is measured beside it so every point reads as a ratio.
"""
from __future__ import annotations

import time
from dataclasses import replace

import numpy as np

from tworec.towers.index import IndexConfig, build_searcher

LEAF_FRACTIONS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.4, 1.0)


def queries_per_second(search, queries, min_seconds: float = 0.0) -> float:
    """Single-query throughput of ``search`` over ``queries``, repeated until ``min_seconds``."""
    done, started = 0, time.perf_counter()
    while True:
        for q in queries:
            search(q)
        done += len(queries)
        elapsed = time.perf_counter() - started
        if elapsed >= min_seconds:
            return done / elapsed


def recall_speed_curve(items: np.ndarray, queries: np.ndarray, k: int = 10, fractions=LEAF_FRACTIONS,
                       min_seconds: float = 0.3, config: IndexConfig = IndexConfig(), searcher=None) -> dict:
    """{"points": [{"leaves_to_search", "fraction", "recall", "qps"}], "brute_force_qps", ...}. The
    tree, hashing and re-ranking depth are the product index's (``config``); pass ``searcher`` (a
    tree index over ``items`` with docids ``0..n-1`` built from ``config``) to reuse one."""
    from scann import scann_ops_pybind

    items = np.ascontiguousarray(items, np.float32)
    queries = np.ascontiguousarray(queries, np.float32)
    n = len(items)
    leaves = max(2, config.leaves(n))
    if searcher is None:
        searcher = build_searcher(items, range(n), replace(config, num_neighbors=k, brute_force_below=0,
                                                           num_leaves=leaves, leaves_to_search=leaves))
    exact = scann_ops_pybind.builder(items, k, "dot_product").score_brute_force().build()
    # Recall counts a found item as right when it scores at least the k-th exact score, so items
    # with identical embeddings (ties) are interchangeable rather than half of them "missed".
    kth = np.array([np.partition(items @ q, n - k)[n - k] for q in queries]) - 1e-5
    points = []
    for fraction in fractions:
        searched = max(1, round(leaves * fraction))
        if points and points[-1]["leaves_to_search"] == searched:
            continue

        def search(q, searched=searched):
            return searcher.search(q, final_num_neighbors=k, leaves_to_search=searched)

        found = [np.array([int(i) for i in search(q)[0]], np.int64) for q in queries]
        recall = float(np.mean([(items[f] @ q >= t).sum() / k for f, q, t in zip(found, queries, kth)]))
        points.append({"leaves_to_search": searched, "fraction": searched / leaves, "recall": recall,
                       "qps": queries_per_second(search, queries, min_seconds)})
    brute = queries_per_second(lambda q: exact.search(q, final_num_neighbors=k), queries, min_seconds)
    for p in points:
        p["speedup_vs_brute_force"] = p["qps"] / brute
    return {"items": n, "dim": int(items.shape[1]), "k": k, "queries": len(queries), "leaves": leaves,
            "reorder": config.reorder,
            "points": points, "brute_force_qps": brute}
