"""Model selection on what retrieval is judged by.

During training, ``ValidationHitRate`` scores the validation split the way ``tworec eval`` scores
the test split (temporal protocol: full catalog, items the user had before excluded, a repeat is
a miss) and adds HitRate@K to each epoch's logs, so checkpoints and early stopping can monitor it
instead of the sampled-softmax validation loss. That loss is a poor guide to the ranking: on
MovieLens-100K it was lowest at epoch 4 while validation HitRate@100 rose until epoch 13, and the
epoch it picks scores 0.574 test HitRate@100 (tail 0.421) against 0.600 (tail 0.475).
"""
from __future__ import annotations

from tworec.contract import Split
from tworec.evaluation.evaluate import TestSet
from tworec.layout import DataLayout
from tworec.tf_setup import keras
from tworec.towers.queries import split_queries


def hitrate_key(k: int) -> str:
    """The epoch-log name of validation HitRate@k (what checkpoints and early stopping monitor)."""
    return f"val_hitrate@{k}"


class ValidationHitRate(keras.callbacks.Callback):
    """Adds ``val_hitrate@K`` to the logs at every epoch's end. List it before the callbacks that
    read it: Keras hands every callback the same logs, in order.

    ``max_queries`` bounds the cost on large datasets: the validation split's first examples in
    file order (all of them when fewer)."""

    def __init__(self, data_dir: str, catalog, lookups, history_length: int, k: int = 100,
                 max_queries: int = 10_000):
        super().__init__()
        self.k = k
        self.key = hitrate_key(k)
        self._lookups = lookups
        self._history_length = history_length
        self._pattern = DataLayout(data_dir).split_pattern(Split.VALID)
        self._queries = TestSet(data_dir, "temporal", catalog, split=Split.VALID, limit=max_queries)

    def hitrate(self) -> float:
        model = self.model
        items = model.item_embeddings()
        queries = split_queries(model, self._lookups, self._pattern, self._history_length,
                                limit=len(self._queries.targets)).query
        if len(queries) != len(self._queries.targets):
            raise RuntimeError("validation queries and examples differ: an example's item is not in the catalog")
        metrics, _ = self._queries.evaluate(lambda start, stop: queries[start:stop] @ items.T)
        return metrics["all"][f"hitrate@{self.k}"]

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:  # the progress bar, TensorBoard and History show it too
            logs[self.key] = self.hitrate()
