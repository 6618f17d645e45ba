"""Split rules: global-time cutoffs, the seeded cold-item holdout and the TFRS random split.

Time cutoffs are exact and scale: a per-day histogram finds the days holding the cut ranks, then a
per-second histogram of those days alone finds the exact timestamps. Interactions at the cutoff
timestamp and later belong to the later split, so equal timestamps never straddle two splits.
"""
from __future__ import annotations

import hashlib
from collections import Counter

import apache_beam as beam
import numpy as np

from tworec.beam.config import SplitConfig

DAY = 86_400


def cut_ranks(total: int, config: SplitConfig) -> tuple[int, int]:
    """0-based ranks, in time order, of the first valid and the first test interaction."""
    return (int(total * config.train_fraction),
            int(total * (config.train_fraction + config.valid_fraction)))


def _locate(sorted_counts, ranks):
    """For each rank: (key holding it, count of elements before that key)."""
    keys = np.array([k for k, _ in sorted_counts], dtype=np.int64)
    cumulative = np.cumsum([c for _, c in sorted_counts])
    out = []
    for rank in ranks:
        i = int(np.searchsorted(cumulative, rank, side="right"))
        if i >= len(keys):
            out.append((None, int(cumulative[-1]) if len(cumulative) else 0))
        else:
            out.append((int(keys[i]), int(cumulative[i - 1]) if i else 0))
    return out


def _coarse_plan(day_counts, config: SplitConfig):
    day_counts = sorted(day_counts)
    total = sum(c for _, c in day_counts)
    ranks = cut_ranks(total, config)
    located = _locate(day_counts, ranks)
    return {"total": total, "ranks": ranks, "days": [d for d, _ in located],
            "before": [b for _, b in located]}


def _exact_cutoffs(second_counts, plan):
    second_counts = sorted(second_counts)
    cutoffs = []
    for rank, day, before in zip(plan["ranks"], plan["days"], plan["before"]):
        if day is None:  # the rank is past the end: that split is empty
            cutoffs.append(2**62)
            continue
        in_day = [(s, c) for s, c in second_counts if s // DAY == day]
        (second, _), = _locate(in_day, [rank - before])
        cutoffs.append(second)
    return {"total": plan["total"], "valid_start": cutoffs[0], "test_start": cutoffs[1]}


class MergeCounters(beam.CombineFn):
    """Sums ``collections.Counter``s (or any key → count mappings) into one dict."""

    def create_accumulator(self):
        return Counter()

    def add_input(self, acc, counts):
        acc.update(counts)
        return acc

    def merge_accumulators(self, accs):
        out = Counter()
        for a in accs:
            out.update(a)
        return out

    def extract_output(self, acc):
        return dict(acc)


class TimeCutoffs(beam.PTransform):
    """PCollection → singleton {"total", "valid_start", "test_start"}.

    Each element is a batch of int timestamps (e.g. one user's), or, with ``read``, gives its
    batches through it (e.g. a file → the batches in it). The input is read twice (days, then the
    seconds of the days that hold a cut), so give files and a reader where an in-process runner
    should not hold the timestamps between the two reads."""

    def __init__(self, config: SplitConfig, read=None):
        super().__init__()
        self._config = config
        self._read = read or (lambda batch: (batch,))

    def expand(self, elements):
        read = self._read
        plan = (
            elements
            | "DayCounts" >> beam.Map(lambda x: Counter(t // DAY for ts in read(x) for t in ts))
            | "Days" >> beam.CombineGlobally(MergeCounters())
            | "Plan" >> beam.Map(lambda days, cfg: _coarse_plan(days.items(), cfg), self._config)
        )
        return (
            elements
            | "SecondCounts" >> beam.Map(  # reads its input itself: the stage waiting on the plan
                lambda x, p: Counter(t for ts in read(x) for t in ts if t // DAY in p["days"]),
                beam.pvalue.AsSingleton(plan))
            | "Seconds" >> beam.CombineGlobally(MergeCounters())
            | "Exact" >> beam.Map(lambda secs, p: _exact_cutoffs(secs.items(), p),
                                  beam.pvalue.AsSingleton(plan))
        )


class UnionSets(beam.CombineFn):
    def create_accumulator(self):
        return set()

    def add_input(self, acc, values):
        acc |= set(values)
        return acc

    def merge_accumulators(self, accs):
        out = set()
        for a in accs:
            out |= a
        return out

    def extract_output(self, acc):
        return acc


def select_cold_items(item_ids, config: SplitConfig) -> frozenset:
    """A seeded random ``cold_item_fraction`` of the items (rounded down), independent of order."""
    ids = sorted(item_ids)
    count = int(len(ids) * config.cold_item_fraction)
    rng = np.random.default_rng([config.seed, 17])
    return frozenset(ids[i] for i in rng.permutation(len(ids))[:count].tolist())


def unit_hash(*parts) -> float:
    """A stable hash of ``parts`` in [0, 1): the same on every worker and run (unlike ``hash``)."""
    digest = hashlib.blake2b("\x1f".join(map(str, parts)).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def in_tfrs_train(seed: int, user_id: str, item_id: str, timestamp: int, fraction: float) -> bool:
    return unit_hash(seed, user_id, item_id, timestamp) < fraction
