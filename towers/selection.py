"""Model selection by what retrieval is judged on.

``ValidationHitRate`` judges the validation split the way ``tworec eval`` judges test
(towers/scoring.py: full catalog, items the user had before excluded, a repeat is a miss) and adds
HitRate@K to each epoch's logs, so checkpoints and early stopping monitor it rather than the
sampled-softmax validation loss, which tracks the ranking poorly.

``fit_new_item_offset`` picks, after training, the score offset of items embedded from content
alone (no id embedding) by the same validation HitRate: such items compete with warm items whose
id embedding sharpens their score, and how far to trust a new item's score against theirs
differs by catalog and by model.

``fit_live_weight`` picks the weight of the live-count term (towers/live_counts.py) by validation
HitRate at the ranker's candidate depth, among the weights that keep the tail's HitRate@10 above
a floor: a global count pulls every list toward what is already popular, which the long tail
cannot afford (at depth 200 the tail barely moves while its top 10 already loses). The ranker,
which reads the live count itself, orders the candidates.
"""
from __future__ import annotations

import numpy as np

from tworec.contract import Split
from tworec.live.exploration import ClickPrior
from tworec.tf_setup import keras
from tworec.towers.live_counts import PostTrainingEvents
from tworec.towers.scoring import RERANK_DEPTH, JudgedSplit, RetrievalScorer, query_chunk


def validation_split(data_dir: str, catalog, max_queries: int = 10_000) -> JudgedSplit:
    """The validation split judged as eval judges test; ``max_queries`` bounds the cost on large
    datasets: the split's first examples in file order (all of them when fewer)."""
    return JudgedSplit(data_dir, "temporal", catalog, split=Split.VALID, limit=max_queries)


class ValidationHitRate(keras.callbacks.Callback):
    """Adds ``val_hitrate@K`` on ``judged`` (a ``validation_split``) to the logs at every epoch's
    end. List it before the callbacks that read it: Keras hands every callback the same logs, in
    order."""

    def __init__(self, judged: JudgedSplit, lookups, history_length: int, k: int = 100):
        super().__init__()
        self.k = k
        self.key = f"val_hitrate@{k}"  # what checkpoints and early stopping monitor
        self._lookups = lookups
        self._history_length = history_length
        self._judged = judged

    def hitrate(self) -> float:
        scorer = RetrievalScorer.of_model(self.model, self._lookups, self._history_length, self._judged)
        metrics, _ = self._judged.evaluate(scorer)
        return metrics["all"][f"hitrate@{self.k}"]

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:  # the progress bar, TensorBoard and History show it too
            logs[self.key] = self.hitrate()


# In cosine units (scores are dot products of unit vectors). Not below 0: the offset is there to
# let items known only by their text compete, not to bury them.
OFFSET_GRID = tuple(round(0.01 * i, 3) for i in range(11))  # 0 .. 0.10
# An offset must beat 0 by this much validation HitRate to be kept: about one standard error of a
# HitRate near 0.5 on 10,000 queries, so noise does not pick one.
MIN_GAIN = 0.005


def fit_new_item_offset(model, judged: JudgedSplit, lookups, history_length: int, k: int = 100,
                        grid=OFFSET_GRID, min_gain: float = MIN_GAIN) -> tuple[float, dict]:
    """(offset, {offset: HitRate@K on ``judged``, a ``validation_split``}): the grid's best offset,
    then half a grid step either side of it (within the grid's range); 0 unless the best beats 0 by
    ``min_gain``. Ties go to the offset nearest 0. The model's own offset plays no part."""
    if 0.0 not in grid:
        raise ValueError("the offset grid must hold 0, the model as trained")
    scorer = RetrievalScorer.of_model(model, lookups, history_length, judged).with_shift(model.score_shift(0.0))
    id_less = model.score_shift(1.0)  # 1 on the items the offset moves, 0 elsewhere
    table = {}

    def measure(offsets):  # one scoring pass for all of them
        offsets = [o for o in offsets if o not in table]
        ranks = judged.ranks_under(scorer, lambda start, stop, scores: (
            (o, scores + np.float32(o) * id_less) for o in offsets))
        table.update({o: _hitrate(ranks.get(o, np.zeros(0, np.int64)), k) for o in offsets})

    def best() -> float:
        return max(table, key=lambda o: (table[o], -abs(o)))

    measure(grid)
    half = (grid[1] - grid[0]) / 2 if len(grid) > 1 else 0.0
    centre = best()
    measure([round(o, 4) for o in (centre - half, centre + half) if min(grid) <= o <= max(grid)])
    chosen = best()
    return (chosen if table[chosen] - table[0.0] >= min_gain else 0.0), dict(sorted(table.items()))


SHOWN = 10  # the items an answer shows: the tail must keep its place there
LIVE_WEIGHT_GRID = (0.0, 0.0025, 0.005, 0.01, 0.015, 0.02, 0.03, 0.05)


def fit_live_weight(scorer: RetrievalScorer, judged: JudgedSplit, events: PostTrainingEvents, half_life_s: float,
                    tail_floor: float, grid=LIVE_WEIGHT_GRID, min_gain: float = MIN_GAIN) -> tuple[float, dict]:
    """(weight, {weight: [HitRate@R, tail HitRate@10]} on ``judged``, R the candidates a ranker
    re-orders): the grid's best weight by HitRate@R (what the term is for: trending items among the
    candidates) whose tail HitRate@10 (what answers show) is at least ``tail_floor`` × the weight-0
    model's; 0 unless it beats 0 by ``min_gain``. ``events``: the interactions counted (validation
    only: no leakage)."""
    table = {}
    tail = judged.segments.get("tail", judged.segments["all"])

    def weighted(start, stop, scores):  # the live counts of every item, read once per chunk
        live = events.features_of_all_items(judged.times[start:stop], scores.shape[1], half_life_s)
        return ((weight, scores + np.float32(weight) * live) for weight in grid)

    ranks = judged.ranks_under(scorer, weighted)
    for weight in grid:
        found = ranks.get(weight, np.zeros(0, np.int64))  # none when the split has no queries
        table[weight] = [round(_hitrate(found, RERANK_DEPTH), 5), round(_hitrate(found[tail], SHOWN), 5)]
    floor = tail_floor * table[0.0][1]
    allowed = [w for w in grid if table[w][1] >= floor]
    best = max(allowed, key=lambda w: (table[w][0], -w))
    return (best if table[best][0] - table[0.0][0] >= min_gain else 0.0), table


def _hitrate(ranks: np.ndarray, k: int) -> float:
    return float((ranks <= k).mean()) if len(ranks) else 0.0


def fit_click_prior(scorer: RetrievalScorer, judged: JudgedSplit, base_ctr: float, negatives: int = 20,
                    seed: int = 0) -> ClickPrior:
    """The exploration slot's prior: a logistic map from retrieval score to click rate, fitted on
    ``judged`` (each query's target against ``negatives`` random items), its intercept then moved
    so that a random item shown to a random query has mean rate ``base_ctr``."""
    rng = np.random.default_rng(seed)
    positive, negative = [], []
    chunk = query_chunk(len(judged.popularity))
    for start in range(0, len(judged), chunk):
        stop = min(start + chunk, len(judged))
        scores = scorer(start, stop)
        positive.append(scores[np.arange(stop - start), judged.targets[start:stop]])
        negative.append(np.take_along_axis(scores, rng.integers(0, scores.shape[1], (stop - start, negatives)), 1)
                        .ravel())
    positive, negative = np.concatenate(positive), np.concatenate(negative)
    x = np.concatenate([positive, negative]).astype(np.float64)
    y = np.concatenate([np.ones(len(positive)), np.zeros(len(negative))])
    slope, intercept = _logistic(x, y)
    # The level: solve mean sigmoid(slope * s + intercept + shift) = base_ctr over random pairs.
    low, high = -50.0, 50.0
    for _ in range(100):
        shift = (low + high) / 2
        if ClickPrior(slope, intercept + shift).mean(negative).mean() > base_ctr:
            high = shift
        else:
            low = shift
    return ClickPrior(float(slope), float(intercept + (low + high) / 2))


def _logistic(x: np.ndarray, y: np.ndarray, iterations: int = 50) -> tuple[float, float]:
    """Maximum-likelihood (slope, intercept) of P(y = 1 | x) = sigmoid(slope · x + intercept)."""
    design = np.stack([x, np.ones_like(x)], 1)
    w = np.zeros(2)
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-design @ w))
        gradient = design.T @ (y - p)
        hessian = (design * (p * (1 - p))[:, None]).T @ design + 1e-9 * np.eye(2)
        step = np.linalg.solve(hessian, gradient)
        w += step
        if np.abs(step).max() < 1e-10:
            break
    return float(w[0]), float(w[1])
