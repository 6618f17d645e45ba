"""``tworec eval``: every model against popularity on the temporal and TFRS protocols, written
as an ``EvalResults`` folder (evaluation/artifact.py).

Temporal protocol: each test interaction is a query with the user's state at that moment; the
whole catalog is ranked with the user's earlier items excluded, as the gateway excludes a
request's recent items, so a repeat is a miss for every model (towers/scoring.py JudgedSplit).
Segments: warm = target seen in train, cold = a held-out cold item, tail = a warm item outside the
20% most popular in train. TFRS protocol: the random 80/20 split, top-K accuracy over the whole
catalog, nothing excluded (the TFRS tutorials' numbers); only the ``all`` segment.
"""
from __future__ import annotations

import numpy as np

from tworec.contract import PROTOCOLS, Split
from tworec.evaluation.artifact import EvalResults
from tworec.evaluation.config import EvalConfig
from tworec.towers.artifact import RetrievalArtifact
from tworec.towers.live_counts import PostTrainingEvents
from tworec.towers.scoring import BATCH, JudgedSplit, RetrievalScorer

MODEL_NAMES = {"content": "two_tower", "id_only": "id_only"}


class PopularityScorer:
    """Every query scores each item by its train count."""

    def __init__(self, judged: JudgedSplit):
        self._scores = np.broadcast_to(judged.popularity, (BATCH, len(judged.popularity)))

    def __call__(self, start: int, stop: int) -> np.ndarray:
        return self._scores[: stop - start]


class TwoStageScorer:
    """Retrieve (the ranker's retrieval model) → re-rank its top candidates with the ranker:
    ``first`` scores the queries, ``rerank`` re-scores each query's top rows.

    With ``trending`` (the gateway's trending on), the ranker reads live counts and the retrieval
    score adds the model's live-count term, counted as a deployed gateway would hold them at each
    query: the validation and test interactions strictly before it. Without, neither.

    ``queries`` (towers.queries.SplitQueries) is what both stages read at each call: changing its
    arrays in place changes what both score."""

    def __init__(self, ranker_dir: str, data_dir: str, judged: JudgedSplit, trending: bool = False):
        from tworec.ranking.artifact import RankerArtifact

        ranker = RankerArtifact.load(ranker_dir)
        retrieval = RetrievalArtifact.load(ranker.retrieval)
        if retrieval.config.protocol != "temporal":
            raise ValueError("the ranker is evaluated on the temporal protocol: its retrieval model must be temporal")
        self._score, self._tables = ranker.serving()
        restored = retrieval.restore(data_dir, catalog=judged.catalog)
        self.queries = judged.queries(restored.model, restored.lookups, restored.config.history_length)
        self._events = PostTrainingEvents.of_splits(data_dir, judged.catalog, (Split.VALID, Split.TEST))
        self._half_life, self._times, self._trending = retrieval.config.live_half_life_s, judged.times, trending
        self.first = RetrievalScorer(self.queries.query, self._tables.item_embedding, restored.model.score_shift())
        if trending:
            self.first = self.first.with_live(retrieval.live_term(self._events), judged.times)

    def rerank(self, start, stop, rows, retrieval_scores):
        from tworec.ranking.features import ranker_rows

        q, tables = self.queries, self._tables
        users = q.user_row[start:stop]
        live = self._events.features(self._times[start:stop], rows, self._half_life) if self._trending else None
        features = ranker_rows(tables, users, tables.user_attribute_rows[users], q.query[start:stop],
                               q.history_count[start:stop], q.hours_since_last[start:stop], rows, retrieval_scores,
                               live)
        return self._score({k: v.reshape((-1,) + v.shape[2:]) for k, v in features.items()}).reshape(rows.shape)


def evaluate(data_dir: str, model_dirs, out_dir: str, ranker_dir: str | None = None,
             config: EvalConfig = EvalConfig()) -> EvalResults:
    from tworec.towers.catalog import load_catalog

    metrics: dict = {}
    outcomes: dict = {}  # temporal protocol only: what the report draws
    judged = {}

    def record(protocol, model, result):
        metrics.setdefault(protocol, {})[model], outcome = result
        if protocol == "temporal":
            outcomes[model] = outcome

    for protocol, splits in PROTOCOLS.items():
        catalog = load_catalog(data_dir, splits.train)
        judged[protocol] = JudgedSplit(data_dir, protocol, catalog, limit=config.max_queries or None)
        record(protocol, "popularity", judged[protocol].evaluate(PopularityScorer(judged[protocol])))
    for model_dir in model_dirs:
        artifact = RetrievalArtifact.load(model_dir)
        split = judged[artifact.config.protocol]
        restored = artifact.restore(data_dir, catalog=split.catalog)
        scorer = RetrievalScorer.of_model(restored.model, restored.lookups, artifact.config.history_length, split)
        record(artifact.config.protocol, MODEL_NAMES[artifact.config.variant], split.evaluate(scorer))
    if ranker_dir:
        for name, trending in (("two_stage", False), ("two_stage_trending", True)):
            two_stage = TwoStageScorer(ranker_dir, data_dir, judged["temporal"], trending)
            record("temporal", name, judged["temporal"].evaluate(two_stage.first, two_stage.rerank))
    for protocol in metrics:
        if protocol == "tfrs":
            metrics[protocol] = {m: {"all": s["all"]} for m, s in metrics[protocol].items()}
    temporal = judged["temporal"]
    return EvalResults.save(out_dir, metrics, summary_markdown(metrics, int(temporal.repeats.sum())), temporal,
                            outcomes, data_dir, [str(m) for m in model_dirs] + ([str(ranker_dir)] if ranker_dir else []))


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
