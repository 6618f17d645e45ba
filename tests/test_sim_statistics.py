"""The exploration simulator's survival statistics (benchmarks/sim_exploration.py): Kaplan-Meier
medians of impressions to a new item's first click, per seed and pooled over seeds."""
import pathlib
import sys

import numpy as np
import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "benchmarks"))

from sim_exploration import kaplan_meier_median, pooled_median  # noqa: E402


def test_the_kaplan_meier_median_uncensored_censored_and_never_reached():
    assert kaplan_meier_median(np.arange(1.0, 11.0), np.ones(10, bool)) == {"value": 5.0, "reached": True}
    # Censored items leave the risk set without an event: S(1) = 3/4, S(3) = 3/4 · 1/2 (at 2 one is censored).
    durations, observed = np.array([1.0, 2.0, 3.0, 4.0]), np.array([True, False, True, False])
    assert kaplan_meier_median(durations, observed) == {"value": 3.0, "reached": True}
    assert kaplan_meier_median(np.array([5.0, 9.0]), np.array([False, False])) == {"value": 9.0, "reached": False}


def test_the_pooled_median_is_one_curve_over_every_seed_with_an_interval_over_seeds():
    rng = np.random.default_rng(0)
    seeds = [(rng.exponential(100.0, 2000).round() + 1, rng.random(2000) < 0.8) for _ in range(6)]
    pooled = pooled_median(seeds, np.random.default_rng(1), resamples=200)
    whole = kaplan_meier_median(np.concatenate([d for d, _ in seeds]), np.concatenate([o for _, o in seeds]))
    assert (pooled["value"], pooled["reached"]) == (whole["value"], whole["reached"])
    low, high = pooled["ci95"]
    assert low <= pooled["value"] <= high and low < high
    # Exponential times (mean 100), a fifth of them censored where they stop: the clicks' hazard is
    # 0.8 / 100, so the median is 100 ln 2 / 0.8 + 1 ≈ 88 (counting censored items as clicks, or
    # leaving them out, gives 70).
    assert pooled["value"] == pytest.approx(88, rel=0.08)
