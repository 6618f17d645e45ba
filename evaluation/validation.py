"""Model selection on what retrieval is judged by.

During training, ``ValidationHitRate`` scores the validation split the way ``tworec eval`` scores
the test split (temporal protocol: full catalog, items the user had before excluded, a repeat is
a miss) and adds HitRate@K to each epoch's logs, so checkpoints and early stopping can monitor it
instead of the sampled-softmax validation loss. That loss is a poor guide to the ranking: on
MovieLens-100K it was lowest at epoch 4 while validation HitRate@100 rose until epoch 13, and the
epoch it picks scores 0.574 test HitRate@100 (tail 0.421) against 0.600 (tail 0.475).

After training, ``fit_new_item_offset`` picks the score offset of items embedded from content
alone (no id embedding) by the same validation HitRate. Such items compete with warm items whose
id embedding sharpens their score, and how far a new item's score should be trusted against
theirs differs by catalog and by model. On one Amazon magazines model validation picked 0.025:
test HitRate@100 0.560 → 0.582, cold 0.19 → 0.50, HitRate@10 0.149 → 0.135. A second training
run gained too little on validation and kept 0. On MovieLens-100K it keeps 0: there an offset
only trades warm hits for cold ones.
"""
from __future__ import annotations

from tworec.contract import Split
from tworec.evaluation.evaluate import TestSet, retrieval_scores, two_tower_queries, two_tower_scores
from tworec.tf_setup import keras


def validation_set(data_dir: str, catalog, max_queries: int = 10_000) -> TestSet:
    """The validation split judged as eval judges test. ``max_queries`` bounds the cost on large
    datasets: the split's first examples in file order (all of them when fewer)."""
    return TestSet(data_dir, "temporal", catalog, split=Split.VALID, limit=max_queries)


class ValidationHitRate(keras.callbacks.Callback):
    """Adds ``val_hitrate@K`` on ``queries`` (a ``validation_set``) to the logs at every epoch's
    end. List it before the callbacks that read it: Keras hands every callback the same logs, in
    order."""

    def __init__(self, queries: TestSet, lookups, history_length: int, k: int = 100):
        super().__init__()
        self.k = k
        self.key = f"val_hitrate@{k}"  # what checkpoints and early stopping monitor
        self._lookups = lookups
        self._history_length = history_length
        self._queries = queries

    def hitrate(self) -> float:
        scores = two_tower_scores(self.model, self._lookups, self._history_length, self._queries)
        metrics, _ = self._queries.evaluate(scores)
        return metrics["all"][f"hitrate@{self.k}"]

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:  # the progress bar, TensorBoard and History show it too
            logs[self.key] = self.hitrate()


# In cosine units (scores are dot products of unit vectors). Not below 0: the offset is there to let
# items known only by their text compete. On MovieLens-100K a negative one scored 0.004 better on
# validation (-0.015) and the same on test, with cold HitRate@100 falling 0.24 → 0.16.
OFFSET_GRID = tuple(round(0.01 * i, 3) for i in range(11))  # 0 .. 0.10
# An offset must beat 0 by this much validation HitRate to be kept: about one standard error of a
# HitRate near 0.5 on 10,000 queries. Without it a second Amazon run kept 0.045 for +0.002 on
# validation, and test HitRate@10 fell 0.149 → 0.111 for an unchanged HitRate@100.
MIN_GAIN = 0.005


def fit_new_item_offset(model, queries: TestSet, lookups, history_length: int, k: int = 100,
                        grid=OFFSET_GRID, min_gain: float = MIN_GAIN) -> tuple[float, dict]:
    """(offset, {offset: HitRate@K on ``queries``, a ``validation_set``}): the grid's best offset,
    then half a grid step either side of it (within the grid's range); 0 unless the best beats 0 by
    ``min_gain``. Ties go to the offset nearest 0. The model's own offset plays no part."""
    if 0.0 not in grid:
        raise ValueError("the offset grid must hold 0, the model as trained")
    query, items = two_tower_queries(model, lookups, history_length, queries), model.item_embeddings()
    table = {}

    def hitrate(offset: float) -> float:
        if offset not in table:
            metrics, _ = queries.evaluate(retrieval_scores(query, items, model.score_shift(offset)))
            table[offset] = metrics["all"][f"hitrate@{k}"]
        return table[offset]

    def best() -> float:
        return max(table, key=lambda o: (table[o], -abs(o)))

    for offset in grid:
        hitrate(offset)
    half = (grid[1] - grid[0]) / 2 if len(grid) > 1 else 0.0
    centre = best()
    for offset in (centre - half, centre + half):
        if min(grid) <= offset <= max(grid):
            hitrate(round(offset, 4))
    chosen = best()
    return (chosen if table[chosen] - table[0.0] >= min_gain else 0.0), dict(sorted(table.items()))
