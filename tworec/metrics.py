"""Ranking metrics from the rank of each example's target item (1 = first)."""
from __future__ import annotations

import numpy as np

CUTOFFS = (10, 50, 100)
SEGMENTS = ("all", "warm", "cold", "tail")


def summarize(ranks: np.ndarray) -> dict:
    ranks = np.asarray(ranks, dtype=np.float64)
    out = {f"hitrate@{k}": float((ranks <= k).mean()) if len(ranks) else 0.0 for k in CUTOFFS}
    ndcg = np.where(ranks <= 10, 1.0 / np.log2(ranks + 1.0), 0.0)
    out["ndcg@10"] = float(ndcg.mean()) if len(ranks) else 0.0
    out["count"] = int(len(ranks))
    return out


def by_segment(ranks: np.ndarray, segments: dict) -> dict:
    """``segments`` maps a segment name to a boolean mask over the examples."""
    return {name: summarize(ranks[mask]) for name, mask in segments.items()}


def head_items(train_counts: np.ndarray, share: float = 0.2) -> np.ndarray:
    """Mask of the ``share`` most popular warm items (ties to the lower row); the tail segment is
    the warm items outside it."""
    head = np.zeros(len(train_counts), bool)
    head[np.argsort(-train_counts, kind="stable")[: max(1, int(share * (train_counts > 0).sum()))]] = True
    return head


def ranks_of_targets(scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Rank of ``targets[i]`` in ``scores[i]`` (excluded items score -inf); ties go to the lower
    row, so constant scores (e.g. popularity of unseen items) cannot flatter a model."""
    scores = scores.astype(np.float64, copy=False)
    rows = np.arange(len(targets))
    target = scores[rows, targets][:, None]
    columns = np.arange(scores.shape[1])[None, :]
    ahead = (scores > target) | ((scores == target) & (columns < targets[:, None]))
    return ahead.sum(axis=1) + 1
