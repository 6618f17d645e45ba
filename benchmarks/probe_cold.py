"""Where does cold-item retrieval lose? A probe of a trained content two-tower on its test split.

    python benchmarks/probe_cold.py --run runs/ml100k_run [--model DIR]

Every number is HitRate on the temporal test split, scored as ``tworec eval`` scores it (the
user's state at that moment, the full catalog, items the user had before excluded):

1. warm and cold targets, as eval reports them;
2. content only: every item embedded from its content alone, as if it were cold. If warm targets
   keep their HitRate, the content path already tells warm items apart by their text and the id
   adds little: the cold gap is then how the content path generalises to text it never trained on;
3. cold among cold: cold targets ranked against the cold items only (the protocol of DropoutNet's
   cold-start numbers), apart from how cold items compare with warm ones;
4. a new-item offset added to every cold item's score (in place of the model's own, if it has
   one): if HitRate over all targets stays flat
   while cold rises, the offset only moves hits from warm items to cold ones;
5. an oracle: cold items' scores shifted by their popularity in the train period, which the model
   never sees (the held-out cold items' interactions there). What the text would be worth if it
   told how popular an item is.
6. live counts, which a serving system could keep: each item's interactions after the model's
   training data and strictly before the query (the validation and test splits), decayed with a
   half-life, added as ``weight × log(1 + count)`` to new items only (standing in for the
   popularity an id embedding carries) or to every item (trending). With a ranker in RUN/ranker,
   also retrieve → rank HitRate@10 with either live term in retrieval, the ranker fed either
   the scores it was trained on or the live ones.
"""
from __future__ import annotations

import argparse
import os

import numpy as np

from common import add_output_options, save


def hitrates(test, score_batch) -> dict:
    """HitRate@10 and @100 per segment, with eval's exclusions and tie rules."""
    metrics, _ = test.evaluate(score_batch)
    return {segment: {k: round(m[k], 4) for k in ("hitrate@10", "hitrate@100")} for segment, m in metrics.items()}


def hitrates_at10(test, score_batch, rerank) -> dict:
    metrics, _ = test.evaluate(score_batch, rerank)
    return {segment: round(m["hitrate@10"], 4) for segment, m in metrics.items()}


def train_period_log_popularity(data_dir: str, catalog) -> np.ndarray:
    """log(1 + interactions in the train period) per catalog row, the held-out cold items' included."""
    from tworec.contract import Split
    from tworec.evaluation.evaluate import _decoded
    from tworec.layout import DataLayout

    counts = catalog.train_counts.astype(np.float64)
    row = catalog.row_of()
    for e in _decoded(DataLayout(data_dir), Split.COLD_TRAIN_PERIOD):
        counts[row[e["item_id"]]] += 1
    return np.log1p(counts)


def live_log_counts(data_dir: str, catalog, test, half_life_days: float) -> np.ndarray:
    """[queries, items] log(1 + decayed interactions after the train period, strictly before each
    query's timestamp), from the validation and test splits. Dense: for catalogs of thousands."""
    from tworec.contract import Split
    from tworec.evaluation.evaluate import _decoded
    from tworec.layout import DataLayout

    row = catalog.row_of()
    events = sorted((e["timestamp"], row[e["item_id"]]) for split in (Split.VALID, Split.TEST)
                    for e in _decoded(DataLayout(data_dir), split))
    half_life = half_life_days * 86400.0
    query_times = np.array([e["timestamp"] for e in test.examples])
    out = np.zeros((len(query_times), catalog.size), np.float32)
    counts, clock, j = np.zeros(catalog.size), None, 0
    for q in np.argsort(query_times, kind="stable"):
        while j < len(events) and events[j][0] < query_times[q]:
            t, item = events[j]
            if clock is not None:
                counts *= 0.5 ** ((t - clock) / half_life)
            clock, j = t, j + 1
            counts[item] += 1
        if clock is not None:
            out[q] = counts * 0.5 ** ((query_times[q] - clock) / half_life)
    return np.log1p(out)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", default="runs/demo", help="run folder with data/ and retrieval/")
    parser.add_argument("--model", help="content two-tower folder (default RUN/retrieval)")
    parser.add_argument("--offsets", type=float, nargs="+", default=[0.01, 0.02, 0.03, 0.04, 0.05, 0.06])
    parser.add_argument("--oracle-weights", type=float, nargs="+", default=[0.02, 0.05, 0.1])
    parser.add_argument("--live-weights", type=float, nargs="+", default=[0.01, 0.02, 0.03])
    parser.add_argument("--live-half-life-days", type=float, default=7.0)
    add_output_options(parser)
    args = parser.parse_args(argv)

    from tworec.contract import Split
    from tworec.evaluation.evaluate import TestSet, two_stage_scores, two_tower_queries
    from tworec.towers.catalog import load_catalog
    from tworec.towers.train import load_retrieval

    data_dir = os.path.join(args.run, "data")
    catalog = load_catalog(data_dir, Split.TRAIN)
    test = TestSet(data_dir, "temporal", catalog)
    model, _, lookups, config = load_retrieval(args.model or os.path.join(args.run, "retrieval"), data_dir,
                                               catalog=catalog)
    if not config.uses_content:
        parser.error("the probe needs a content model: an id-only model has no cold path")
    queries = two_tower_queries(model, lookups, config.history_length, test)
    items = model.item_embeddings()
    cold = catalog.cold.astype(np.float32)

    def scores(item_vectors, shift=None, per_query=None):
        shift = np.zeros(catalog.size, np.float32) if shift is None else shift.astype(np.float32)
        if per_query is None:
            return lambda start, stop: queries[start:stop] @ item_vectors.T + shift
        return lambda start, stop: queries[start:stop] @ item_vectors.T + shift + per_query[start:stop]

    results = {"run": args.run, "cold_items": int(catalog.cold.sum()), "catalog_items": catalog.size,
               "cold_queries": int(test.segments["cold"].sum()), "queries": len(test.targets)}
    results["model"] = hitrates(test, scores(items, model.score_shift()))  # with its new-item offset
    results["content_only"] = hitrates(test, scores(model.item_embeddings(use_ids=False)))
    only_cold = np.where(catalog.cold, 0.0, -np.inf)
    results["cold_among_cold"] = hitrates(test, scores(items, only_cold))["cold"]
    results["offsets"] = {str(o): hitrates(test, scores(items, o * cold)) for o in [0.0] + args.offsets}
    popularity = train_period_log_popularity(data_dir, catalog)
    centred = (popularity - popularity[catalog.cold].mean()) * cold
    results["oracle_popularity"] = {str(w): hitrates(test, scores(items, w * centred)) for w in args.oracle_weights}
    live = live_log_counts(data_dir, catalog, test, args.live_half_life_days)
    results["live_half_life_days"] = args.live_half_life_days
    applies_to = {"new_items": cold, "every_item": np.ones_like(cold)}  # where the live term is added
    for which, mask in applies_to.items():
        results[f"live_{which}"] = {str(w): hitrates(test, scores(items, model.score_shift(), w * live * mask))
                                    for w in args.live_weights}
    ranker_dir = os.path.join(args.run, "ranker")
    if os.path.exists(os.path.join(ranker_dir, "ranker.json")):
        first, rerank = two_stage_scores(ranker_dir, data_dir, test)

        def trained_scores(start, stop, rows, live_scores):  # what the ranker was trained on, -inf kept
            static = np.take_along_axis(first(start, stop), rows, 1)
            return rerank(start, stop, rows, np.where(np.isfinite(live_scores), static, live_scores))

        for which, mask in applies_to.items():
            results[f"two_stage_live_{which}"] = {}
            for w in [0.0] + args.live_weights:
                retrieve = lambda start, stop, w=w, mask=mask: first(start, stop) + w * live[start:stop] * mask
                results[f"two_stage_live_{which}"][str(w)] = {
                    "ranker_fed_trained_scores": hitrates_at10(test, retrieve, trained_scores),
                    "ranker_fed_live_scores": hitrates_at10(test, retrieve, rerank)}

    def line(label, r):
        hr = {segment: v["hitrate@100"] for segment, v in r.items()}
        ratio = hr["cold"] / hr["warm"] if hr["warm"] else float("nan")
        print(f"  {label:<28} all {hr['all']:.3f}  warm {hr['warm']:.3f}  cold {hr['cold']:.3f}  "
              f"(cold/warm {ratio:4.0%})  tail {hr['tail']:.3f}  all HR@10 {r['all']['hitrate@10']:.3f}")

    print(f"{results['queries']:,} test queries, {results['cold_queries']:,} with a cold target; "
          f"{results['cold_items']} cold of {results['catalog_items']:,} items.  HR@100 unless marked:")
    line("model, as eval scores it", results["model"])
    line("every item content only", results["content_only"])
    among = results["cold_among_cold"]
    print(f"  {'cold among cold items':<28} cold HR@10 {among['hitrate@10']:.3f}  HR@100 {among['hitrate@100']:.3f}")
    print("new-item offset added to every cold item's score:")
    for offset, r in results["offsets"].items():
        line(f"offset {offset}", r)
    print("oracle: cold items shifted by their unseen train-period log popularity (not available to a model):")
    for weight, r in results["oracle_popularity"].items():
        line(f"weight {weight}", r)
    print(f"live counts after the train period, half-life {args.live_half_life_days:g} days, "
          "weight × log(1 + count) added to:")
    for which in ("new_items", "every_item"):
        for weight, r in results[f"live_{which}"].items():
            line(f"{which.replace('_', ' ')}, weight {weight}", r)
    for which in applies_to:
        for weight, r in results.get(f"two_stage_live_{which}", {}).items():
            for fed, hr in r.items():
                print(f"  retrieve (live, {which.replace('_', ' ')}, weight {weight}) → rank, "
                      f"{fed.replace('_', ' ')}: HR@10 all {hr['all']:.3f}  warm {hr['warm']:.3f}  "
                      f"cold {hr['cold']:.3f}  tail {hr['tail']:.3f}")
    return save(results, args.json, "cold_probe", args.results)


if __name__ == "__main__":
    main()
