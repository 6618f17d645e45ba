"""``tworec eval``: every model against popularity on the temporal and TFRS protocols.

Temporal: each test interaction is a query with the user's state at that moment (history strictly
before it, from the example); all catalog items are ranked and items the user had before are
excluded, as the gateway excludes a request's recent items. So a repeat (the user had the target
before) is a miss for every model: the product never recommends it. The summary says how many
queries are repeats. Segments: warm = target seen in train, cold = a held-out cold item, tail = a
warm item outside the 20% most popular in train.
TFRS protocol: the random 80/20 split, top-K accuracy over the whole catalog, nothing excluded
(the TFRS tutorials' numbers); only the ``all`` segment.

metrics.json: {protocol: {model: {segment: {"hitrate@10", "hitrate@50", "hitrate@100", "ndcg@10", "count"}}}}
details.npz (temporal protocol, what the report draws from): per query its target row, user id,
recent history rows and segment masks; per model the target's rank and the top ``TOP_SAVED`` rows.
"""
from __future__ import annotations

import bisect
import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tworec import contract, example_codec
from tworec.contract import PROTOCOLS, Split
from tworec.evaluation.metrics import by_segment, head_items, ranks_of_targets
from tworec.layout import DataLayout
from tworec.tfrecord_io import read_records

MODEL_NAMES = {"content": "two_tower", "id_only": "id_only"}
BATCH = 512
TOP_SAVED = 10
HISTORY_SAVED = 10


@dataclass
class Outcome:
    """One model on one test set: the target's rank per query (1 = first) and each query's top rows."""
    ranks: np.ndarray  # [queries] int
    top: np.ndarray  # [queries, TOP_SAVED] catalog rows, best first


def _decoded(layout: DataLayout, split: Split, features=(contract.USER_ID, contract.ITEM_ID, contract.TIMESTAMP)):
    return [example_codec.decode(features, r) for r in read_records(layout.split_pattern(split))]


class TestSet:
    """A protocol's test examples with what every model is judged by. ``split`` judges another
    split the same way (training judges the validation split); ``limit`` keeps its first examples
    in file order."""

    def __init__(self, data_dir: str, protocol: str, catalog, split: Split | None = None, limit: int | None = None):
        layout = DataLayout(data_dir)
        self.protocol = protocol
        self.catalog = catalog
        split = split or PROTOCOLS[protocol].test
        self.pattern = layout.split_pattern(split)  # the examples' files
        self.examples = _decoded(layout, split,
                                 (contract.USER_ID, contract.ITEM_ID, contract.TIMESTAMP,
                                  contract.HISTORY_ITEM_IDS))[:limit]
        row = catalog.row_of()
        self.recent_history = np.full((len(self.examples), HISTORY_SAVED), -1, np.int64)
        for i, e in enumerate(self.examples):  # most recent last, -1 = none
            recent = [row[h] for h in e["history_item_ids"] if h in row][-HISTORY_SAVED:]
            if recent:
                self.recent_history[i, -len(recent):] = recent
        self.targets = np.array([row[e["item_id"]] for e in self.examples])
        counts = catalog.train_counts
        warm = counts > 0
        head = head_items(counts)
        self.segments = {"all": np.ones(len(self.targets), bool)}
        self.repeats = np.zeros(len(self.targets), bool)  # the user had the target before
        if protocol == "temporal":
            self.segments.update(warm=warm[self.targets], cold=catalog.cold[self.targets],
                                 tail=(warm & ~head)[self.targets])
            self._history = self._user_histories(layout, row)
            self.repeats = np.array([self.targets[i] in self.had_before(i) for i in range(len(self.targets))], bool)
        self.popularity = counts.astype(np.float64)

    @staticmethod
    def _user_histories(layout, row):
        per_user = defaultdict(list)
        for split in contract.TEMPORAL_SPLITS:
            for e in _decoded(layout, split):
                per_user[e["user_id"]].append((e["timestamp"], row[e["item_id"]]))
        return {u: (sorted(events), [t for t, _ in sorted(events)]) for u, events in per_user.items()}

    def had_before(self, query: int) -> list:
        """Catalog rows the query's user had before its timestamp."""
        e = self.examples[query]
        events, times = self._history.get(e["user_id"], ([], []))
        return [r for _, r in events[:bisect.bisect_left(times, e["timestamp"])]]

    def excluded(self, start: int, stop: int, num_items: int) -> np.ndarray | None:
        """[stop - start, num_items] mask of items each query's user had before its timestamp."""
        if self.protocol != "temporal":
            return None
        mask = np.zeros((stop - start, num_items), bool)
        for i in range(start, stop):
            mask[i - start, self.had_before(i)] = True
        return mask

    def evaluate(self, score_batch, rerank=None) -> tuple[dict, Outcome]:
        """``score_batch(start, stop)`` → scores [stop - start, num_items]. With ``rerank(start,
        stop, rows, scores)`` → new scores for the top ``RERANK_DEPTH`` rows (a second stage),
        those rows are re-ordered by it and the rest keep the first stage's order."""
        ranks, tops = [np.zeros(0, np.int64)], [np.zeros((0, TOP_SAVED), np.int64)]
        for start in range(0, len(self.targets), BATCH):
            stop = min(start + BATCH, len(self.targets))
            scores = score_batch(start, stop).astype(np.float32, copy=True)
            excluded = self.excluded(start, stop, scores.shape[1])
            if excluded is not None:
                scores[excluded] = -np.inf
            batch_ranks = ranks_of_targets(scores, self.targets[start:stop])
            batch_ranks[self.repeats[start:stop]] = scores.shape[1] + 1  # excluded: never recommended
            if rerank is None:
                top = _top_rows(scores, TOP_SAVED)
            else:
                batch_ranks, top = _reranked(scores, self.targets[start:stop], batch_ranks,
                                             lambda rows, s: rerank(start, stop, rows, s))
            ranks.append(batch_ranks)
            tops.append(top)
        outcome = Outcome(np.concatenate(ranks), np.concatenate(tops))
        return by_segment(outcome.ranks, self.segments), outcome


RERANK_DEPTH = 200


def _top_rows(scores: np.ndarray, depth: int) -> np.ndarray:
    """Each row's ``depth`` highest-scoring columns, best first, ties to the lower column (as in
    ``ranks_of_targets``, so a top list and a rank always agree)."""
    return np.argsort(-scores, axis=1, kind="stable")[:, : min(depth, scores.shape[1])]


def _reranked(scores, targets, first_ranks, rerank):
    """(ranks, top rows) after re-ordering each query's first-stage top ``RERANK_DEPTH`` by
    ``rerank``; excluded items already score -inf."""
    rows = _top_rows(scores, RERANK_DEPTH)
    second = rerank(rows, np.take_along_axis(scores, rows, 1))
    second = np.where(np.isfinite(np.take_along_axis(scores, rows, 1)), second, -np.inf)
    order = np.argsort(-second, axis=1, kind="stable")[:, :TOP_SAVED]
    ranks = first_ranks.copy()
    for i, target in enumerate(targets):
        hit = np.nonzero(rows[i] == target)[0]
        if len(hit) and np.isfinite(scores[i, target]):
            mine = second[i, hit[0]]
            ranks[i] = 1 + int((second[i] > mine).sum() + ((second[i] == mine) & (rows[i] < target)).sum())
    return ranks, np.take_along_axis(rows, order, 1)


def queries_of(model, lookups, history_length: int, test: TestSet):
    """The retrieval model's view of each of ``test``'s examples (``towers.queries.SplitQueries``),
    aligned with its targets."""
    from tworec.towers.queries import split_queries

    queries = split_queries(model, lookups, test.pattern, history_length, BATCH, limit=len(test.targets))
    if len(queries) != len(test.targets):
        raise RuntimeError("query and example counts differ: the split changed under eval, or an example's "
                           "item is not in the catalog")
    return queries


def two_tower_queries(model, lookups, history_length: int, test: TestSet) -> np.ndarray:
    """[examples, dim] the query tower's output for each of ``test``'s examples."""
    return queries_of(model, lookups, history_length, test).query


def retrieval_scores(queries: np.ndarray, items: np.ndarray, shift: np.ndarray):
    """A score function over examples: each query against every item, plus the item's score shift
    (the new-item offset on items without an id), as the served index scores them."""
    return lambda start, stop: queries[start:stop] @ items.T + shift


def two_tower_scores(model, lookups, history_length: int, test: TestSet):
    """A score function over ``test``'s examples for a two-tower model."""
    return retrieval_scores(two_tower_queries(model, lookups, history_length, test), model.item_embeddings(),
                            model.score_shift())


def model_scores(model_dir: str, data_dir: str, test: TestSet):
    """(config, score function over the test examples) for a trained two-tower model folder."""
    from tworec.towers.train import load_retrieval

    model, _, lookups, config = load_retrieval(model_dir, data_dir, catalog=test.catalog)
    return config, two_tower_scores(model, lookups, config.history_length, test)


def two_stage_scores(ranker_dir: str, data_dir: str, test: TestSet):
    """(retrieval score function, rerank function) for retrieve top 200 → rank with the ranker."""
    from tworec.ranking.features import ranker_rows
    from tworec.ranking.model import serving_signature
    from tworec.ranking.train import load_ranker
    from tworec.tf_setup import tf
    from tworec.towers.train import load_retrieval

    scorer, tables, meta = load_ranker(ranker_dir)
    model, _, lookups, config = load_retrieval(meta["retrieval"], data_dir, catalog=test.catalog)
    if config.protocol != "temporal":
        raise ValueError("the ranker is evaluated on the temporal protocol: its retrieval model must be temporal")
    queries = queries_of(model, lookups, config.history_length, test)
    items, shift = tables.item_embedding, model.score_shift()
    serve = serving_signature(scorer, items.shape[1])

    def rerank(start, stop, rows, retrieval_scores):
        users = queries.user_row[start:stop]
        features = ranker_rows(tables, users, tables.user_attribute_rows[users], queries.query[start:stop],
                               queries.history_count[start:stop], queries.hours_since_last[start:stop],
                               rows, retrieval_scores)
        flat = {k: tf.constant(v.reshape((-1,) + v.shape[2:])) for k, v in features.items()}
        return serve(flat)["score"].numpy().reshape(rows.shape)

    return retrieval_scores(queries.query, items, shift), rerank


def evaluate(data_dir: str, model_dirs, out_dir: str, ranker_dir: str | None = None) -> dict:
    from tworec.towers.catalog import load_catalog

    metrics: dict = {}
    outcomes: dict = {}  # temporal protocol only: what the report draws
    tests = {}

    def record(protocol, model, result):
        metrics.setdefault(protocol, {})[model], outcome = result
        if protocol == "temporal":
            outcomes[model] = outcome

    for protocol, splits in PROTOCOLS.items():
        catalog = load_catalog(data_dir, splits.train)
        tests[protocol] = test = TestSet(data_dir, protocol, catalog)
        popularity = np.broadcast_to(test.popularity, (BATCH, catalog.size))
        record(protocol, "popularity", test.evaluate(lambda start, stop: popularity[: stop - start]))
    for model_dir in model_dirs:
        meta = json.loads((Path(model_dir) / "model.json").read_text())
        protocol = meta.get("protocol", "temporal")
        config, scores = model_scores(model_dir, data_dir, tests[protocol])
        record(protocol, MODEL_NAMES[config.variant], tests[protocol].evaluate(scores))
    if ranker_dir:
        scores, rerank = two_stage_scores(ranker_dir, data_dir, tests["temporal"])
        record("temporal", "two_stage", tests["temporal"].evaluate(scores, rerank))
    for protocol in metrics:
        if protocol == "tfrs":
            metrics[protocol] = {m: {"all": s["all"]} for m, s in metrics[protocol].items()}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_details(out / DETAILS, tests["temporal"], outcomes)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))
    (out / "summary.md").write_text(summary_markdown(metrics, int(tests["temporal"].repeats.sum())))
    return metrics


DETAILS = "details.npz"


def save_details(path: Path, test: TestSet, outcomes: dict) -> None:
    arrays = {"targets": test.targets, "recent_history": test.recent_history,
              "user_ids": np.array([e["user_id"] for e in test.examples], dtype=str)}
    arrays.update({f"segment_{name}": mask for name, mask in test.segments.items()})
    for model, outcome in outcomes.items():
        arrays[f"ranks_{model}"] = outcome.ranks
        arrays[f"top_{model}"] = outcome.top
    np.savez_compressed(path, **arrays)


@dataclass
class Details:
    """``details.npz`` read back: the test queries and every model's outcome on them."""
    targets: np.ndarray
    recent_history: np.ndarray
    user_ids: np.ndarray
    segments: dict
    outcomes: dict

    @classmethod
    def load(cls, path) -> "Details":
        with np.load(path, allow_pickle=False) as f:
            return cls(f["targets"], f["recent_history"], f["user_ids"],
                       {k[len("segment_"):]: f[k] for k in f.files if k.startswith("segment_")},
                       {k[len("ranks_"):]: Outcome(f[k], f["top_" + k[len("ranks_"):]])
                        for k in f.files if k.startswith("ranks_")})


def summary_markdown(metrics: dict, repeats: int = 0) -> str:
    lines = ["# Retrieval evaluation", ""]
    if repeats:
        total = metrics["temporal"]["popularity"]["all"]["count"]
        lines += [f"{repeats:,} of {total:,} temporal test interactions ({repeats / total:.1%}) are repeats of an "
                  "item the user had before: a miss for every model, as the product never recommends those.", ""]
    for protocol, models in metrics.items():
        lines += [f"## {protocol}", "", "| model | segment | HR@10 | HR@50 | HR@100 | NDCG@10 | n |",
                  "|---|---|---|---|---|---|---|"]
        for model, segments in models.items():
            for segment, m in segments.items():
                lines.append(f"| {model} | {segment} | {m['hitrate@10']:.4f} | {m['hitrate@50']:.4f} | "
                             f"{m['hitrate@100']:.4f} | {m['ndcg@10']:.4f} | {m['count']} |")
        lines.append("")
    return "\n".join(lines)
