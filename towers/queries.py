"""The retrieval model's view of every example of a split: its query embedding (the user's state
at that moment, history strictly before it) and the context the ranker also reads."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tworec.towers.features import interaction_dataset

HOUR = 3600.0


@dataclass
class SplitQueries:
    query: np.ndarray  # [N, D] query-tower outputs
    user_row: np.ndarray  # [N] int32, 0 = unknown user
    item_row: np.ndarray  # [N] int32 catalog row of the target
    history_rows: np.ndarray  # [N, H] int32 catalog rows, -1 = padding
    history_count: np.ndarray  # [N] float32
    hours_since_last: np.ndarray  # [N] float32, 0 without history
    timestamp: np.ndarray  # [N] int64, the example's time

    def __len__(self) -> int:
        return len(self.item_row)

    def subset(self, rows) -> "SplitQueries":
        return SplitQueries(**{f: getattr(self, f)[rows] for f in self.__dataclass_fields__})

    @classmethod
    def concat(cls, parts) -> "SplitQueries":
        return cls(**{f: np.concatenate([getattr(p, f) for p in parts]) for f in cls.__dataclass_fields__})


def split_queries(model, lookups, pattern: str, history_length: int, batch_size: int = 512,
                  limit: int | None = None) -> SplitQueries:
    """Every example of the files matching ``pattern`` in file order, or the first ``limit``."""
    parts = {k: [] for k in ("query", "user_row", "item_row", "history_rows", "history_count", "hours_since_last",
                             "timestamp")}
    dataset = interaction_dataset(pattern, lookups, history_length, batch_size)
    if limit is not None:
        dataset = dataset.unbatch().take(limit).batch(batch_size)
    for f in dataset:
        history = f["history_rows"].numpy()
        count = (history >= 0).sum(1)
        gap = (f["timestamp"].numpy() - f["history_timestamps"].numpy()[:, 0]) / HOUR
        parts["query"].append(model.query_tower(f).numpy())
        parts["user_row"].append(f["user_row"].numpy())
        parts["item_row"].append(f["item_row"].numpy())
        parts["history_rows"].append(history)
        parts["history_count"].append(count.astype(np.float32))
        parts["hours_since_last"].append(np.where(count > 0, np.maximum(gap, 0.0), 0.0).astype(np.float32))
        parts["timestamp"].append(f["timestamp"].numpy())
    return SplitQueries(**{k: np.concatenate(v) for k, v in parts.items()})
