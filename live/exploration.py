"""The exploration slot: a position of every answer given to a new or under-exposed item, chosen by
Thompson sampling over each candidate's click rate. This module is the policy: the gateway calls
it, the exploration simulator runs it, and ``tworec eval-policy`` scores it offline.

Each candidate's click rate has a Beta posterior. Its prior comes from the content model: the
retrieval score of the item for this user, mapped to a click rate by a calibration fitted on
validation (``ClickPrior``), worth ``prior_strength`` impressions; the item's impressions and
clicks since (live state) update it. The slot shows the candidate whose posterior draw is highest.
The answer's item that the slot would push out (its last) competes too, with a posterior of its own
(prior from its score, then its impressions and clicks): where its draw wins, the answer stays as
it is, so a new item is shown where its draw beats what it displaces, and exploring costs few
clicks. The propensity (the probability the policy takes that action, given the candidates) is
P(X_w > max of the others) = E[1 - F_w(max of the others)], with the others' maximum drawn
``propensity_draws`` times and the winner's own draw integrated exactly through its Beta tail
(Rao-Blackwellised: for the same draws, a lower variance than counting wins; bench/results.md).
``thompson_probabilities`` gives every candidate's probability by counting wins, for offline use.

Candidates: items without an id embedding (the model knows them by their text only: cold, new,
upserted) with fewer than ``graduate_after`` impressions, never an item the user had, a removed
item or one the request excludes, and at most ``pool_size`` of them, the highest-scoring for the
user: scored exactly, or above ``index_above`` candidates found by a ScaNN search of them (the
gateway's bundle keeps that index).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.special

from tworec.settings import setting


@dataclass(frozen=True)
class ExplorationConfig:
    enabled: bool = setting(True, "give one position of every personalised answer to a new or under-exposed item")
    position: int = setting(0, "the slot's 0-based position: one nearer the top is seen more, so a new item's "
                               "first click needs fewer impressions, at a higher cost in clicks, which the small "
                               "pool below keeps down (bench/results.md). Answers shorter than it have no slot")
    pool_size: int = setting(5, "candidates per answer: the new items that score highest for the user. A small "
                                "pool shows a new item to the users it suits best and, with fewer optimistic draws "
                                "against the displaced item, explores only where it costs few clicks; the "
                                "propensity's cost grows with it")
    prior_strength: float = setting(20.0, "impressions the content model's prior is worth")
    graduate_after: int = setting(200, "impressions after which an item leaves exploration (its id is learnt at the "
                                       "next refresh)")
    propensity_draws: int = setting(50, "draws of the other candidates' maximum that estimate the propensity of the "
                                        "item shown (its own draw is integrated exactly)")
    displaced_competes: bool = setting(True, "the item the slot would push out of the answer competes for the slot "
                                             "with its own posterior, so a new item is shown only where its draw "
                                             "beats it (exploring where it costs the fewest clicks)")
    index_above: int = setting(20_000, "candidates up to which every one is scored per answer; above, a ScaNN index "
                                       "of them is searched (scoring all costs O(candidates) per answer)")


@dataclass(frozen=True)
class ClickPrior:
    """A retrieval score → the prior mean click rate of an item in the slot: sigmoid(slope · score
    + intercept), fitted on validation (towers/selection.py fit_click_prior)."""

    slope: float
    intercept: float

    def mean(self, scores: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-(self.slope * np.asarray(scores, np.float64) + self.intercept)))


@dataclass
class Pool:
    """The slot's eligible candidates for one answer: each one's prior click rate (from its score
    for this user) and its impressions and clicks so far."""

    items: list
    prior_mean: np.ndarray
    impressions: np.ndarray
    clicks: np.ndarray
    scores: np.ndarray | None = None  # the retrieval scores the prior came from, where known
    displaced: bool = False  # the last entry is the answer's item the slot would push out, not a new item

    @classmethod
    def of(cls, items: list, scores, impressions, clicks, prior: ClickPrior, displaced: bool = False) -> "Pool":
        """``displaced``: the last entry is the answer's item the slot would push out."""
        scores = np.asarray(scores, np.float64)
        return cls(list(items), prior.mean(scores), np.asarray(impressions, np.float64),
                   np.asarray(clicks, np.float64), scores, displaced)

    def with_displaced(self, item, score: float, impressions: float, clicks: float, prior: ClickPrior) -> "Pool":
        """This pool and, as its last entry, the answer's item that the slot would push out: choosing
        it leaves the answer as it is."""
        assert not self.displaced
        scores = np.append(self.scores if self.scores is not None else np.full(len(self), np.nan), score)
        return Pool(self.items + [item], np.append(self.prior_mean, prior.mean(np.array([score]))),
                    np.append(self.impressions, impressions), np.append(self.clicks, clicks), scores, True)

    def __len__(self) -> int:
        return len(self.items)

    @property
    def new(self) -> int:
        """How many entries are new items (all but the displaced one, where there is one)."""
        return len(self.items) - int(self.displaced)

    def is_displaced(self, index: int) -> bool:
        return self.displaced and index == len(self.items) - 1

    def new_items_only(self, values: np.ndarray) -> np.ndarray:
        """``values`` (one per entry) with the displaced item's set to 0, as a copy."""
        out = np.array(values, np.float64)
        if self.displaced:
            out[-1] = 0.0
        return out

    def beta_posteriors(self, prior_strength: float, entries=slice(None)) -> tuple[np.ndarray, np.ndarray]:
        """Beta(alpha, beta) of the click rates of ``entries`` (all by default), as ``posteriors``."""
        return posteriors(self.prior_mean[entries], self.impressions[entries], self.clicks[entries], prior_strength)

    def posterior_means(self, prior_strength: float, entries=slice(None)) -> np.ndarray:
        """The posterior mean click rate of ``entries`` (all by default)."""
        alpha, beta = self.beta_posteriors(prior_strength, entries)
        return alpha / (alpha + beta)

    def competing(self, config: "ExplorationConfig") -> np.ndarray:
        """Indices of the entries that compete under ``config``: the ``pool_size`` new items of
        highest prior, and the displaced item where there is one and ``config`` lets it compete."""
        best = np.argsort(-self.prior_mean[: self.new], kind="stable")[: config.pool_size]
        return np.append(best, self.new) if self.displaced and config.displaced_competes else best

    def record(self) -> dict:
        """What the event log keeps of the pool (``tworec eval-policy`` reads it back)."""
        return {"candidates": self.items, "prior_mean": np.round(self.prior_mean, 6).tolist(),
                "impressions": self.impressions.astype(np.int64).tolist(),
                "clicks": self.clicks.astype(np.int64).tolist(), "displaced": self.displaced}

    @classmethod
    def from_record(cls, record: dict) -> "Pool":
        return cls(list(record["candidates"]), np.asarray(record["prior_mean"], np.float64),
                   np.asarray(record["impressions"], np.float64), np.asarray(record["clicks"], np.float64),
                   displaced=bool(record.get("displaced", False)))


WINDOW_MARGIN = 8  # candidates looked at beyond the pool before widening (exclusions and graduates take places)


class ExactRanking:
    """Every candidate scored: ``top(k)`` by a partial sort of ``scores`` (``ids_of(indices)`` →
    their ids). Its cost grows with the candidates, so large catalogs search an index instead."""

    def __init__(self, ids_of, scores: np.ndarray):
        self._ids_of, self._scores = ids_of, np.asarray(scores)

    def __len__(self) -> int:
        return len(self._scores)

    def top(self, k: int):
        """(ids, scores) of the ``k`` best, best first."""
        scores = self._scores
        part = np.argpartition(-scores, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
        order = part[np.argsort(-scores[part], kind="stable")]
        return self._ids_of(order), scores[order]


def candidate_pool(ranking, excluded: set, exposure, prior: ClickPrior, config: ExplorationConfig,
                   displaced: tuple | None = None) -> Pool:
    """The slot's pool for one answer: the ``pool_size`` best-scoring items for the user among the
    items without an id embedding (``ranking``: ``len`` and ``top(k)`` → (ids, scores) best first,
    an ``ExactRanking`` or an index search) that are not in ``excluded`` (what the user had, removed
    items, the request's exclusions, the answer's other items) and have not graduated
    (``exposure(ids)`` → impressions, clicks), then ``displaced`` ((item, score): the answer's item
    the slot would push out) as its last entry when there is a new item. Looks further down the
    ranking only as far as it must; the displaced item's exposure comes with the first lookup."""
    items, item_scores, item_impressions, item_clicks = [], [], [], []
    displaced_exposure = None
    # Most exclusions (the user's history) are not new items, so they rarely take a place in the
    # window: start small, and double it while the pool is short.
    looked, window = 0, config.pool_size + WINDOW_MARGIN
    while len(items) < config.pool_size and looked < len(ranking):
        window = min(len(ranking), max(window, looked + 1))
        ids, scores = ranking.top(window)
        ids, scores = ids[looked:], np.asarray(scores)[looked:]  # the next best, best first
        keep = [k for k, item in enumerate(ids) if item not in excluded]
        asked = [ids[k] for k in keep] + ([displaced[0]] if displaced and displaced_exposure is None else [])
        impressions, clicks = (np.asarray(x) for x in exposure(asked))
        if len(asked) > len(keep):
            displaced_exposure = (impressions[-1], clicks[-1])
            impressions, clicks = impressions[:-1], clicks[:-1]
        fresh = np.flatnonzero(impressions < config.graduate_after)[: config.pool_size - len(items)]
        items += [ids[keep[j]] for j in fresh]
        item_scores.append(scores[np.asarray(keep, np.int64)[fresh]])
        item_impressions.append(impressions[fresh])
        item_clicks.append(clicks[fresh])
        looked, window = window, 2 * window
    if not items:
        return Pool.of([], np.zeros(0), np.zeros(0), np.zeros(0), prior)
    if displaced:  # its entry joins the others' arrays
        items.append(displaced[0])
        item_scores.append([displaced[1]])
        item_impressions.append([displaced_exposure[0]])
        item_clicks.append([displaced_exposure[1]])
    return Pool.of(items, np.concatenate(item_scores), np.concatenate(item_impressions),
                   np.concatenate(item_clicks), prior, displaced=bool(displaced))


@dataclass
class SlotChoice:
    item: str
    propensity: float  # of the policy taking this action (showing ``item`` in the slot, or keeping it), given the pool
    pool: Pool
    index: int  # ``item``'s entry in the pool

    @property
    def keeps_answer(self) -> bool:
        """The displaced item won: the answer stays as it is."""
        return self.pool.is_displaced(self.index)


def posteriors(prior_mean: np.ndarray, impressions: np.ndarray, clicks: np.ndarray,
               prior_strength: float) -> tuple[np.ndarray, np.ndarray]:
    """Beta(alpha, beta) of each candidate's click rate: its prior mean worth ``prior_strength``
    impressions, updated by its impressions and clicks (clicks never exceed impressions here,
    whatever was logged)."""
    mean = np.clip(np.asarray(prior_mean, np.float64), 1e-4, 1 - 1e-4)
    clicks = np.minimum(np.asarray(clicks, np.float64), np.asarray(impressions, np.float64))
    misses = np.asarray(impressions, np.float64) - clicks
    return mean * prior_strength + clicks, (1.0 - mean) * prior_strength + misses


def thompson_probabilities(pool: Pool, config: ExplorationConfig, rng: np.random.Generator,
                           draws: int = 2000) -> np.ndarray:
    """The probability that each entry of ``pool`` wins the slot under Thompson sampling with
    ``config`` (``Pool.competing``), from ``draws`` draws."""
    out = np.zeros(len(pool))
    competing = pool.competing(config)
    alpha, beta = pool.beta_posteriors(config.prior_strength, competing)
    samples = rng.beta(alpha, beta, size=(draws, len(competing)))
    out[competing] = np.bincount(np.argmax(samples, axis=1), minlength=len(competing)) / draws
    return out


def choose(pool: Pool, config: ExplorationConfig, rng: np.random.Generator) -> SlotChoice | None:
    """The slot's action: one Thompson draw among the competing entries (``Pool.competing``), with
    its propensity; None when the pool has no new item."""
    if not pool.new:
        return None
    competing = pool.competing(config)
    alpha, beta = pool.beta_posteriors(config.prior_strength, competing)
    # One call: row 0 is the action's draw, the other rows (independent of it) estimate its propensity.
    draws = rng.beta(alpha, beta, size=(config.propensity_draws + 1, len(competing)))
    k = int(np.argmax(draws[0]))
    propensity = winning_probability(alpha, beta, k, draws[1:])
    return SlotChoice(pool.items[int(competing[k])], propensity, pool, int(competing[k]))


PROPENSITY_FLOOR = 1e-6  # a winner's estimate is never 0 (it won); the floor bounds its weight


def winning_probability(alpha: np.ndarray, beta: np.ndarray, k: int, draws: np.ndarray) -> float:
    """P(candidate ``k``'s Beta(alpha, beta) draw is the highest), from ``draws`` [n, candidates]
    (each row a joint draw of every candidate's posterior; column ``k`` is overwritten): the mean
    over rows of P(X_k > M), M the row's maximum over the others, through the winner's Beta tail
    (unbiased, and of lower variance than counting wins, since the winner's own draw is integrated
    out)."""
    if len(alpha) < 2:
        return 1.0
    draws[:, k] = 0.0  # its own draw is integrated exactly below (cheaper than leaving its column out)
    above = beta_upper_tail(alpha[k], beta[k], draws.max(axis=1))
    return float(max(above.mean(dtype=np.float64), PROPENSITY_FLOOR))


def beta_upper_tail(alpha, beta, x: np.ndarray) -> np.ndarray:
    """P(X > x) for X ~ Beta(alpha, beta), elementwise, to a relative 1e-4 however small: I_{1-x}(beta,
    alpha), the lower tail of the mirrored Beta, in float32 (scipy's faster loop, on the hot path;
    1 - CDF in float32 would round small tails to 0)."""
    one = np.float32(1.0)
    return scipy.special.betainc(np.float32(beta), np.float32(alpha), one - np.asarray(x, np.float32))


def uniform_choice(pool: Pool, rng: np.random.Generator) -> SlotChoice | None:
    """Any new item of the pool, equally likely; it never keeps the displaced item (the exploration
    simulator's random arm)."""
    if not pool.new:
        return None
    k = int(rng.integers(pool.new))
    return SlotChoice(pool.items[k], 1.0 / pool.new, pool, k)
