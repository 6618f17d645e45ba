"""How retrieval is judged, shared by ``tworec eval``, the validation that selects the epoch and
the new-item offset during training, and the ranker's list mining.

``JudgedSplit``  one split's examples as queries, with what each is judged by: its target, the
                 items its user had before (excluded from the ranking, as the gateway excludes a
                 request's recent items, so a repeat is a miss) and its segments (all, warm, cold,
                 tail). Temporal protocol; on the TFRS protocol nothing is excluded and only "all"
                 is reported.
``RetrievalScorer``  query · item + the item's score shift (the new-item offset on items without an
                 id embedding), exactly as the served index scores.
``JudgedSplit.evaluate(score, rerank)``  every query's target rank and top rows, and metrics by
                 segment; with ``rerank`` a second stage re-orders each query's first-stage top
                 ``RERANK_DEPTH``.
``JudgedSplit.ranks_under(score, variants)``  the target ranks under several variants of one
                 first stage (an offset, a live-count weight), each chunk scored once: what the
                 validation fits use.
"""
from __future__ import annotations

import bisect
import itertools
from collections import defaultdict
from dataclasses import dataclass
from typing import Callable, Iterable

import numpy as np

from tworec import contract, example_codec
from tworec.contract import PROTOCOLS, Split
from tworec.layout import DataLayout
from tworec.metrics import by_segment, head_items, ranks_of_targets
from tworec.tfrecord_io import iter_matching

BATCH = 512  # queries scored at once at most: the score matrix is [BATCH, items]
# Score-matrix cells held at once (128 MB of float32): large catalogs score fewer queries at a
# time, so memory does not grow with queries × items.
SCORE_BUDGET = 1 << 25
TOP_SAVED = 10  # top rows kept per query (what the report shows)
HISTORY_SAVED = 10  # recent history rows kept per query
RERANK_DEPTH = 200  # the first stage's top rows a second stage re-orders (the gateway's candidates)

# (start, stop) → scores [stop - start, items] of the queries in [start, stop)
ScoreFn = Callable[[int, int], np.ndarray]
# (start, stop, rows [queries, depth], first-stage scores of those rows) → second-stage scores
RerankFn = Callable[[int, int, np.ndarray, np.ndarray], np.ndarray]
# (start, stop, first-stage scores of the queries in [start, stop)) → (key, varied scores) pairs
VariantsFn = Callable[[int, int, np.ndarray], Iterable[tuple[object, np.ndarray]]]


@dataclass
class Outcome:
    """One model on one judged split: the target's rank per query (1 = first) and its top rows."""

    ranks: np.ndarray  # [queries] int
    top: np.ndarray  # [queries, TOP_SAVED] catalog rows, best first


def decoded_examples(layout: DataLayout, split: Split,
                     features=(contract.USER_ID, contract.ITEM_ID, contract.TIMESTAMP), limit: int | None = None,
                     users=None) -> list:
    """A split's examples, decoded to ``features``, in file order: the first ``limit``, of
    ``users`` only when given (a set of user ids)."""
    decoded = (example_codec.decode(features, r) for r in iter_matching(layout.split_pattern(split)))
    if users is not None:
        decoded = (e for e in decoded if e["user_id"] in users)
    return list(itertools.islice(decoded, limit))


class JudgedSplit:
    """A protocol's split with what every model is judged by. ``split``: which one (the protocol's
    test split by default; training judges the validation split); ``limit`` keeps its first
    examples in file order."""

    def __init__(self, data_dir: str, protocol: str, catalog, split: Split | None = None, limit: int | None = None):
        layout = DataLayout(data_dir)
        self.protocol = protocol
        self.catalog = catalog
        split = split or PROTOCOLS[protocol].test
        self.pattern = layout.split_pattern(split)  # the examples' files
        self.examples = decoded_examples(layout, split, (contract.USER_ID, contract.ITEM_ID, contract.TIMESTAMP,
                                                         contract.HISTORY_ITEM_IDS), limit)
        row = catalog.row_of()
        self.recent_history = np.full((len(self.examples), HISTORY_SAVED), -1, np.int64)
        for i, e in enumerate(self.examples):  # most recent last, -1 = none
            recent = [row[h] for h in e["history_item_ids"] if h in row][-HISTORY_SAVED:]
            if recent:
                self.recent_history[i, -len(recent):] = recent
        self.targets = np.array([row[e["item_id"]] for e in self.examples])
        self.times = np.array([e["timestamp"] for e in self.examples], np.int64)
        counts = catalog.train_counts
        warm = counts > 0
        head = head_items(counts)
        self.segments = {"all": np.ones(len(self.targets), bool)}
        self.repeats = np.zeros(len(self.targets), bool)  # the user had the target before
        self._history = {}
        if protocol == "temporal":
            self.segments.update(warm=warm[self.targets], cold=catalog.cold[self.targets],
                                 tail=(warm & ~head)[self.targets])
            self._history = self._user_histories(layout, row, {e["user_id"] for e in self.examples})
            self.repeats = np.array([self.targets[i] in self.had_before(i) for i in range(len(self.targets))], bool)
        self.popularity = counts.astype(np.float64)

    def __len__(self) -> int:
        return len(self.targets)

    @staticmethod
    def _user_histories(layout, row, users):
        per_user = defaultdict(list)
        for split in contract.TEMPORAL_SPLITS:
            for e in decoded_examples(layout, split, users=users):
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

    def evaluate(self, score: ScoreFn, rerank: RerankFn | None = None) -> tuple[dict, Outcome]:
        """(metrics by segment, Outcome) of a model whose ``score`` scores the queries; with
        ``rerank``, the first stage's top ``RERANK_DEPTH`` rows are re-ordered by it and the rest
        keep the first stage's order."""
        ranks, tops = [np.zeros(0, np.int64)], [np.zeros((0, TOP_SAVED), np.int64)]
        for start, stop, scores in self._scored_chunks(score):
            batch_ranks = self._target_ranks(start, stop, scores)
            if rerank is None:
                top = top_rows(scores, TOP_SAVED)
            else:
                batch_ranks, top = _reranked(scores, self.targets[start:stop], batch_ranks,
                                             lambda rows, s: rerank(start, stop, rows, s))
            ranks.append(batch_ranks)
            tops.append(top)
        outcome = Outcome(np.concatenate(ranks), np.concatenate(tops))
        return by_segment(outcome.ranks, self.segments), outcome

    def ranks_under(self, score: ScoreFn, variants: VariantsFn) -> dict:
        """{key: every query's target rank [queries]} for each variant of ``score``, ranked as
        ``evaluate`` ranks a first stage: the fits that try many values of one term score each
        chunk once and vary only the term. ``variants(start, stop, scores)`` yields (key, the
        chunk's scores under that variant) from ``scores`` (excluded items already -inf; do not
        modify it)."""
        ranks: dict = defaultdict(list)
        for start, stop, scores in self._scored_chunks(score):
            for key, varied in variants(start, stop, scores):
                ranks[key].append(self._target_ranks(start, stop, varied))
        return {key: np.concatenate(r) for key, r in ranks.items()}

    def _scored_chunks(self, score: ScoreFn):
        """(start, stop, scores [stop - start, items] float32 with each user's earlier items at
        -inf) per chunk of queries, within SCORE_BUDGET."""
        chunk = query_chunk(len(self.popularity))
        for start in range(0, len(self.targets), chunk):
            stop = min(start + chunk, len(self.targets))
            scores = score(start, stop).astype(np.float32, copy=True)
            excluded = self.excluded(start, stop, scores.shape[1])
            if excluded is not None:
                scores[excluded] = -np.inf
            yield start, stop, scores

    def _target_ranks(self, start: int, stop: int, scores: np.ndarray) -> np.ndarray:
        ranks = ranks_of_targets(scores, self.targets[start:stop])
        ranks[self.repeats[start:stop]] = scores.shape[1] + 1  # excluded: never recommended
        return ranks

    def queries(self, model, lookups, history_length: int):
        """The retrieval model's view of each example (``towers.queries.SplitQueries``), aligned
        with the targets."""
        from tworec.towers.queries import split_queries

        queries = split_queries(model, lookups, self.pattern, history_length, BATCH, limit=len(self.targets))
        if len(queries) != len(self.targets):
            raise RuntimeError("query and example counts differ: the split changed under evaluation, or an "
                               "example's item is not in the catalog")
        return queries


def query_chunk(num_items: int, cap: int = BATCH) -> int:
    """Queries to score at once against ``num_items`` items within SCORE_BUDGET (at most ``cap``)."""
    return max(1, min(cap, SCORE_BUDGET // max(num_items, 1)))


def top_rows(scores: np.ndarray, depth: int) -> np.ndarray:
    """Each row's ``depth`` highest-scoring columns, best first, ties to the lower column (as in
    ``ranks_of_targets``, so a top list and a rank always agree)."""
    n = scores.shape[1]
    depth = min(depth, n)
    if n <= 8 * depth:
        return np.argsort(-scores, axis=1, kind="stable")[:, :depth]
    # Large catalogs: partition to the depth-th score, then order only the columns above it and
    # the lowest-column ties at it.
    kth = np.take_along_axis(scores, np.argpartition(-scores, depth - 1, axis=1)[:, depth - 1:depth], 1)[:, 0]
    out = np.empty((len(scores), depth), np.int64)
    for i, row in enumerate(scores):
        above = np.flatnonzero(row > kth[i])
        chosen = np.concatenate([above, np.flatnonzero(row == kth[i])[: depth - len(above)]])
        out[i] = chosen[np.argsort(-row[chosen], kind="stable")]
    return out


def _reranked(scores, targets, first_ranks, rerank):
    """(ranks, top rows) after re-ordering each query's first-stage top ``RERANK_DEPTH`` by
    ``rerank``; excluded items already score -inf."""
    rows = top_rows(scores, RERANK_DEPTH)
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


class RetrievalScorer:
    """Retrieval scores of queries against every item: query · item + the item's score shift (+ a
    live-count term, towers/live_counts.py, at each query's time).

    queries [Q, D], items [N, D], shift [N], query_times [Q]; ``scorer(start, stop)`` →
    [stop - start, N]."""

    def __init__(self, queries: np.ndarray, items: np.ndarray, shift: np.ndarray, live=None,
                 query_times: np.ndarray | None = None):
        self.queries, self.items, self.shift = queries, items, shift
        self.live, self.query_times = live, query_times

    def __call__(self, start: int, stop: int) -> np.ndarray:
        scores = self.queries[start:stop] @ self.items.T + self.shift
        if self.live is not None:
            scores = scores + self.live.of_all_items(self.query_times[start:stop], len(self.items))
        return scores

    def with_shift(self, shift: np.ndarray) -> "RetrievalScorer":
        return RetrievalScorer(self.queries, self.items, shift, self.live, self.query_times)

    def with_live(self, live, query_times: np.ndarray) -> "RetrievalScorer":
        """These scores plus ``live`` (a LiveTerm) at ``query_times``."""
        return RetrievalScorer(self.queries, self.items, self.shift, live, query_times)

    @classmethod
    def of_model(cls, model, lookups, history_length: int, judged: JudgedSplit) -> "RetrievalScorer":
        """A two-tower model's scores for ``judged``'s queries."""
        return cls(judged.queries(model, lookups, history_length).query, model.item_embeddings(),
                   model.score_shift())


def top_candidates(query: np.ndarray, item_embeddings: np.ndarray, history_rows: np.ndarray, k: int,
                   score_shift: np.ndarray | None = None, extra: np.ndarray | None = None):
    """Retrieval's top ``k`` catalog rows per query with the rows in ``history_rows`` (-1: none)
    excluded: (rows [Q, k], scores [Q, k]), best first. ``score_shift`` [items] and ``extra`` [Q,
    items] (a live-count term) are added to the scores, as RetrievalScorer adds them."""
    scores = query @ item_embeddings.T
    if score_shift is not None:
        scores += score_shift
    if extra is not None:
        scores += extra
    seen = history_rows >= 0
    scores[np.nonzero(seen)[0], history_rows[seen]] = -np.inf
    k = min(k, scores.shape[1])
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, top, 1), axis=1, kind="stable")
    rows = np.take_along_axis(top, order, 1)
    return rows, np.take_along_axis(scores, rows, 1)
