"""Does the request's history steer retrieval? A probe of the served query tower and index.

    python benchmarks/probe_history.py --repo runs/demo/repo [--lengths 3 10] [--trials 5]

For each of the catalog's largest categories: an unknown visitor whose recent items (random warm
items of that category, an hour to a few days old) are the history. It then asks where the
category's other items land in retrieval's full ranking, next to where random ordering would put
them (median at the 50th percentile). A model that personalises puts them near the top. It
reads the exported repository in process (the gateway's query tower and item table; no Triton)
and prints one line per category and the mean over categories.
"""
from __future__ import annotations

import argparse
import statistics

import numpy as np

from common import add_output_options, save

NOW = 1_700_000_000
HOUR = 3600


def members(bundle, category: str) -> np.ndarray:
    """[catalog items] bool: the items listing ``category``."""
    items = bundle.items
    return (items.tables.item_category_rows[:len(items.item_ids)] == bundle.categories[category]).any(axis=1)


def probe(bundle, category: str, length: int, trials: int, rng) -> dict:
    items = bundle.items
    count = len(items.item_ids)
    member = members(bundle, category)
    warm = np.flatnonzero(member & ~items.cold[:count])
    percentiles, top50 = [], []
    for _ in range(trials):
        history = [int(r) for r in rng.choice(warm, size=min(length, len(warm) - 1), replace=False)]
        ages = np.sort(rng.uniform(HOUR, 72 * HOUR, len(history))).astype(np.int64)  # most recent first
        query = bundle.query(0, history, list(NOW - ages), NOW)
        scores = items.item_embedding[:count] @ query
        rank = np.empty(count, np.int64)
        rank[np.argsort(-scores, kind="stable")] = np.arange(count)
        others = np.setdiff1d(np.flatnonzero(member), history)
        percentiles.append(100.0 * float(np.median(rank[others])) / count)
        top50.append(float(np.mean(rank[others] < 50)))
    return {"median_rank_percentile": statistics.median(percentiles), "share_in_top50": statistics.median(top50),
            "share_in_top50_if_random": min(50, count) / count, "items": int(member.sum())}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repo", default="runs/demo/repo")
    parser.add_argument("--categories", type=int, default=8, help="the largest N categories")
    parser.add_argument("--lengths", type=int, nargs="+", default=[3, 10])
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    add_output_options(parser)
    args = parser.parse_args(argv)

    from tworec.serving.bundle import Bundle, current_version

    bundle = Bundle(args.repo, current_version(args.repo))
    count = len(bundle.items.item_ids)
    sizes = {c: int(members(bundle, c).sum()) for c in bundle.categories}
    largest = sorted(sizes, key=lambda c: -sizes[c])[: args.categories]
    rng = np.random.default_rng(args.seed)
    results = {"repo": args.repo, "catalog_items": count, "lengths": {}}
    for length in args.lengths:
        per_category = {c: probe(bundle, c, length, args.trials, rng) for c in largest}
        mean = statistics.mean(r["median_rank_percentile"] for r in per_category.values())
        results["lengths"][str(length)] = {"categories": per_category, "mean_median_rank_percentile": mean}
        print(f"history of {length} items of one category, unknown visitor "
              f"(where that category's other items rank; random: 50th percentile):")
        for c, r in per_category.items():
            print(f"  {c[:28]:<28} {r['items']:>5} items  median at the {r['median_rank_percentile']:5.1f}th "
                  f"percentile  top 50 holds {r['share_in_top50']:.0%} of them "
                  f"(random {r['share_in_top50_if_random']:.0%})")
        print(f"  mean over categories: {mean:.1f}th percentile")
    return save(results, args.json, "history_probe", args.results)


if __name__ == "__main__":
    main()
