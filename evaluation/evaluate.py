"""``tworec eval``: every model against popularity on the temporal and TFRS protocols.

Temporal: each test interaction is a query with the user's state at that moment (history strictly
before it, from the example); all catalog items are ranked and items the user had before are
excluded (the target itself stays rankable). Segments: warm = target seen in train, cold = a
held-out cold item, tail = a warm item outside the 20% most popular in train.
TFRS protocol: the random 80/20 split, top-K accuracy over the whole catalog, nothing excluded
(the TFRS tutorials' numbers); only the ``all`` segment.

metrics.json: {protocol: {model: {segment: {"hitrate@10", "hitrate@50", "hitrate@100", "ndcg@10", "count"}}}}
"""
from __future__ import annotations

import bisect
import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from tworec import contract, example_codec
from tworec.contract import PROTOCOLS, Split
from tworec.evaluation.metrics import by_segment, ranks_of_targets
from tworec.layout import DataLayout
from tworec.tfrecord_io import read_records

MODEL_NAMES = {"content": "two_tower", "id_only": "id_only"}
BATCH = 512


def _decoded(layout: DataLayout, split: Split):
    return [example_codec.decode((contract.USER_ID, contract.ITEM_ID, contract.TIMESTAMP), r)
            for r in read_records(layout.split_pattern(split))]


class TestSet:
    """A protocol's test examples with what every model is judged by."""

    def __init__(self, data_dir: str, protocol: str, catalog):
        layout = DataLayout(data_dir)
        self.protocol = protocol
        self.catalog = catalog
        self.examples = _decoded(layout, PROTOCOLS[protocol].test)
        row = catalog.row_of()
        self.targets = np.array([row[e["item_id"]] for e in self.examples])
        counts = catalog.train_counts
        warm = counts > 0
        top = np.argsort(-counts, kind="stable")[: max(1, int(0.2 * warm.sum()))]
        head = np.zeros(catalog.size, bool)
        head[top] = True
        self.segments = {"all": np.ones(len(self.targets), bool)}
        if protocol == "temporal":
            self.segments.update(warm=warm[self.targets], cold=catalog.cold[self.targets],
                                 tail=(warm & ~head)[self.targets])
            self._history = self._user_histories(layout, row)
        self.popularity = counts.astype(np.float64)

    @staticmethod
    def _user_histories(layout, row):
        per_user = defaultdict(list)
        for split in contract.TEMPORAL_SPLITS:
            for e in _decoded(layout, split):
                per_user[e["user_id"]].append((e["timestamp"], row[e["item_id"]]))
        return {u: (sorted(events), [t for t, _ in sorted(events)]) for u, events in per_user.items()}

    def excluded(self, start: int, stop: int, num_items: int) -> np.ndarray | None:
        """[stop - start, num_items] mask of items each query's user had before its timestamp."""
        if self.protocol != "temporal":
            return None
        mask = np.zeros((stop - start, num_items), bool)
        for i, e in enumerate(self.examples[start:stop]):
            events, times = self._history.get(e["user_id"], ([], []))
            before = bisect.bisect_left(times, e["timestamp"])
            mask[i, [r for _, r in events[:before]]] = True
            mask[i, self.targets[start + i]] = False
        return mask

    def evaluate(self, score_batch, rerank=None) -> dict:
        """``score_batch(start, stop)`` → scores [stop - start, num_items]. With ``rerank(start,
        stop, rows, scores)`` → new scores for the top ``RERANK_DEPTH`` rows (a second stage),
        those rows are re-ordered by it and the rest keep the first stage's order."""
        ranks = []
        for start in range(0, len(self.targets), BATCH):
            stop = min(start + BATCH, len(self.targets))
            scores = score_batch(start, stop)
            excluded = self.excluded(start, stop, scores.shape[1])
            batch_ranks = ranks_of_targets(scores, self.targets[start:stop], excluded)
            if rerank is not None:
                batch_ranks = _reranked(scores, excluded, self.targets[start:stop], batch_ranks,
                                        lambda rows, s: rerank(start, stop, rows, s))
            ranks.append(batch_ranks)
        ranks = np.concatenate(ranks) if ranks else np.zeros(0)
        return by_segment(ranks, self.segments), ranks


RERANK_DEPTH = 200


def _reranked(scores, excluded, targets, first_ranks, rerank):
    """Ranks after re-ordering each query's first-stage top ``RERANK_DEPTH`` by ``rerank``."""
    scores = scores.astype(np.float32, copy=True)
    if excluded is not None:
        scores[excluded] = -np.inf
    depth = min(RERANK_DEPTH, scores.shape[1])
    top = np.argpartition(-scores, depth - 1, axis=1)[:, :depth]
    order = np.argsort(-np.take_along_axis(scores, top, 1), axis=1, kind="stable")
    rows = np.take_along_axis(top, order, 1)
    second = rerank(rows, np.take_along_axis(scores, rows, 1))
    ranks = first_ranks.copy()
    for i, target in enumerate(targets):
        hit = np.nonzero(rows[i] == target)[0]
        if len(hit) and np.isfinite(scores[i, target]):
            mine = second[i, hit[0]]
            ranks[i] = 1 + int((second[i] > mine).sum() + ((second[i] == mine) & (rows[i] < target)).sum())
    return ranks


def model_scores(model_dir: str, data_dir: str, test: TestSet):
    """A score function over the test examples for a trained two-tower model."""
    from tworec.towers.queries import split_queries
    from tworec.towers.train import load_retrieval

    model, _, lookups, config = load_retrieval(model_dir, data_dir, catalog=test.catalog)
    items = model.item_embeddings()
    queries = split_queries(model, lookups, DataLayout(data_dir).split_pattern(PROTOCOLS[config.protocol].test),
                            config.history_length, BATCH).query
    if len(queries) != len(test.targets):
        raise RuntimeError("query and example counts differ: the test split changed under eval")
    return config, lambda start, stop: queries[start:stop] @ items.T


def two_stage_scores(ranker_dir: str, data_dir: str, test: TestSet):
    """(retrieval score function, rerank function) for retrieve top 200 → rank with the ranker."""
    from tworec.ranking.features import ranker_rows
    from tworec.ranking.model import serving_signature
    from tworec.ranking.train import load_ranker
    from tworec.tf_setup import tf
    from tworec.towers.queries import split_queries
    from tworec.towers.train import load_retrieval

    scorer, tables, meta = load_ranker(ranker_dir)
    model, _, lookups, config = load_retrieval(meta["retrieval"], data_dir, catalog=test.catalog)
    if config.protocol != "temporal":
        raise ValueError("the ranker is evaluated on the temporal protocol: its retrieval model must be temporal")
    queries = split_queries(model, lookups, DataLayout(data_dir).split_pattern(PROTOCOLS["temporal"].test),
                            config.history_length, BATCH)
    if len(queries) != len(test.targets):
        raise RuntimeError("query and example counts differ: the test split changed under eval")
    items = tables.item_embedding
    serve = serving_signature(scorer, items.shape[1])

    def rerank(start, stop, rows, retrieval_scores):
        users = queries.user_row[start:stop]
        features = ranker_rows(tables, users, tables.user_attribute_rows[users], queries.query[start:stop],
                               queries.history_count[start:stop], queries.hours_since_last[start:stop],
                               rows, retrieval_scores)
        flat = {k: tf.constant(v.reshape((-1,) + v.shape[2:])) for k, v in features.items()}
        return serve(flat)["score"].numpy().reshape(rows.shape)

    return (lambda start, stop: queries.query[start:stop] @ items.T), rerank


def evaluate(data_dir: str, model_dirs, out_dir: str, ranker_dir: str | None = None) -> dict:
    from tworec.towers.catalog import load_catalog

    metrics: dict = {}
    tests = {}
    for protocol, splits in PROTOCOLS.items():
        catalog = load_catalog(data_dir, splits.train)
        tests[protocol] = test = TestSet(data_dir, protocol, catalog)
        popularity = np.broadcast_to(test.popularity, (BATCH, catalog.size))
        metrics.setdefault(protocol, {})["popularity"], _ = test.evaluate(
            lambda start, stop: popularity[: stop - start])
    for model_dir in model_dirs:
        meta = json.loads((Path(model_dir) / "model.json").read_text())
        protocol = meta.get("protocol", "temporal")
        config, scores = model_scores(model_dir, data_dir, tests[protocol])
        metrics[protocol][MODEL_NAMES[config.variant]], _ = tests[protocol].evaluate(scores)
    if ranker_dir:
        scores, rerank = two_stage_scores(ranker_dir, data_dir, tests["temporal"])
        metrics["temporal"]["two_stage"], _ = tests["temporal"].evaluate(scores, rerank)
    for protocol in metrics:
        if protocol == "tfrs":
            metrics[protocol] = {m: {"all": s["all"]} for m, s in metrics[protocol].items()}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))
    (out / "summary.md").write_text(summary_markdown(metrics))
    return metrics


def summary_markdown(metrics: dict) -> str:
    lines = ["# Retrieval evaluation", ""]
    for protocol, models in metrics.items():
        lines += [f"## {protocol}", "", "| model | segment | HR@10 | HR@50 | HR@100 | NDCG@10 | n |",
                  "|---|---|---|---|---|---|---|"]
        for model, segments in models.items():
            for segment, m in segments.items():
                lines.append(f"| {model} | {segment} | {m['hitrate@10']:.4f} | {m['hitrate@50']:.4f} | "
                             f"{m['hitrate@100']:.4f} | {m['ndcg@10']:.4f} | {m['count']} |")
        lines.append("")
    return "\n".join(lines)
