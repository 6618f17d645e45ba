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
Live interaction counts after training, the lever a serving system has, are the product's trending
now: ``tworec eval`` reports them as ``two_stage_trending`` and benchmarks/bench_replay.py serves them.
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


def train_period_log_popularity(data_dir: str, catalog) -> np.ndarray:
    """log(1 + interactions in the train period) per catalog row, the held-out cold items' included."""
    from tworec.contract import Split
    from tworec.layout import DataLayout
    from tworec.towers.scoring import decoded_examples

    counts = catalog.train_counts.astype(np.float64)
    row = catalog.row_of()
    for e in decoded_examples(DataLayout(data_dir), Split.COLD_TRAIN_PERIOD):
        counts[row[e["item_id"]]] += 1
    return np.log1p(counts)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", default="runs/demo", help="run folder with data/ and retrieval/")
    parser.add_argument("--model", help="content two-tower folder (default RUN/retrieval)")
    parser.add_argument("--offsets", type=float, nargs="+", default=[0.01, 0.02, 0.03, 0.04, 0.05, 0.06])
    parser.add_argument("--oracle-weights", type=float, nargs="+", default=[0.02, 0.05, 0.1])
    add_output_options(parser)
    args = parser.parse_args(argv)

    from tworec.contract import Split
    from tworec.towers.artifact import RetrievalArtifact
    from tworec.towers.catalog import load_catalog
    from tworec.towers.scoring import JudgedSplit

    data_dir = os.path.join(args.run, "data")
    catalog = load_catalog(data_dir, Split.TRAIN)
    test = JudgedSplit(data_dir, "temporal", catalog)
    restored = RetrievalArtifact.load(args.model or os.path.join(args.run, "retrieval")).restore(data_dir, catalog)
    model, lookups, config = restored.model, restored.lookups, restored.config
    if not config.uses_content:
        parser.error("the probe needs a content model: an id-only model has no cold path")
    queries = test.queries(model, lookups, config.history_length).query
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
    return save(results, args.json, "cold_probe", args.results)


if __name__ == "__main__":
    main()
