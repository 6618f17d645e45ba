"""Live interaction counts in retrieval and ranking, computed offline exactly as the gateway's live
state holds them (live/decay.py): each item's interactions after the model's training data and
strictly before a query, decayed with a half-life, as a share of all items' (the feature
``log(1 + SHARE_SCALE × share)``, live/decay.py share_feature).

The retrieval score adds ``weight × feature`` (``LiveTerm``), so an item that is selling now can
enter the candidates; the ranker reads the feature as its ``item_live_count``. The weight is
fitted on validation (towers/selection.py) with a guard that keeps the long tail: a global count
favours what is already popular.

Which interactions count is the caller's choice, and no leakage is its rule: the validation fit
and the ranker's lists (both on the validation split) count validation interactions only;
evaluating test counts validation and test ones, as a deployed gateway would have logged them.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from tworec.contract import Split
from tworec.layout import DataLayout
from tworec.live import decay


@dataclass
class PostTrainingEvents:
    """Interactions after the train period: their times and catalog rows."""

    times: np.ndarray  # [E] int64
    rows: np.ndarray  # [E] int64
    # Built once per half-life: every read (a validation fit reads every item per query) reuses it.
    _counts: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    @classmethod
    def of_splits(cls, data_dir: str, catalog, splits=(Split.VALID,)) -> "PostTrainingEvents":
        from tworec.towers.scoring import decoded_examples

        row = catalog.row_of()
        examples = [e for s in splits for e in decoded_examples(DataLayout(data_dir), s)]
        return cls(np.array([e["timestamp"] for e in examples], np.int64),
                   np.array([row[e["item_id"]] for e in examples], np.int64))

    @classmethod
    def none(cls) -> "PostTrainingEvents":
        return cls(np.zeros(0, np.int64), np.zeros(0, np.int64))

    def features(self, query_times: np.ndarray, rows: np.ndarray, half_life_s: float) -> np.ndarray:
        """The live-count feature of ``rows`` [Q, C] at ``query_times`` [Q] → [Q, C] float32."""
        if half_life_s not in self._counts:  # each item's counts, and the total's (every event in row 0)
            self._counts[half_life_s] = (decay.DecayedCounts(self.times, self.rows, half_life_s),
                                         decay.DecayedCounts(self.times, np.zeros_like(self.rows), half_life_s))
        items, total = self._counts[half_life_s]
        counts = items.at(query_times, rows)
        totals = total.at(query_times, np.zeros((len(counts), 1), np.int64))
        return decay.share_feature(np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0))

    def features_of_all_items(self, query_times: np.ndarray, num_items: int, half_life_s: float) -> np.ndarray:
        """``features`` of every catalog row at each of ``query_times`` [Q] → [Q, num_items]."""
        if not len(self.times):
            return np.zeros((len(query_times), num_items), np.float32)
        rows = np.broadcast_to(np.arange(num_items), (len(query_times), num_items))
        return self.features(query_times, rows, half_life_s)


@dataclass
class LiveTerm:
    """``weight ×`` the live-count feature for the items of each query, counted from ``events``."""

    events: PostTrainingEvents
    weight: float
    half_life_s: float

    def of_all_items(self, query_times: np.ndarray, num_items: int) -> np.ndarray:
        """[Q, num_items] the term for every catalog row."""
        if self.weight == 0.0:
            return np.zeros((len(query_times), num_items), np.float32)
        return self.weight * self.events.features_of_all_items(query_times, num_items, self.half_life_s)
