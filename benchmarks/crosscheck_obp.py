"""The off-policy estimators (evaluation/policy.py) against the Open Bandit Pipeline's, on the same
logged decisions. obp does not install beside the pinned stack, so this runs in two steps:

    .venv/bin/python benchmarks/crosscheck_obp.py write FILE      # decisions + tworec's estimates
    OBP_VENV/bin/python benchmarks/crosscheck_obp.py compare FILE # obp's estimates on them, compared

The decisions: a uniform logging policy over pools of 2-12 candidates with known click rates, a
Thompson target (live/exploration.py) — the shape of the exploration slot's logs.
"""
from __future__ import annotations

import json
import sys

import numpy as np


def write(path: str, decisions: int = 5000, seed: int = 0) -> None:
    from tworec.evaluation.policy import Decision, evaluate_policy, reward_model, target_probabilities
    from tworec.live.exploration import ExplorationConfig, Pool

    rng = np.random.default_rng(seed)
    config = ExplorationConfig()
    logged, rows = [], []
    for _ in range(decisions):
        n = int(rng.integers(2, 13))
        pool = Pool([f"i{j}" for j in range(n)], rng.uniform(0.01, 0.08, n), rng.integers(0, 60, n).astype(float),
                    np.zeros(n))
        pool.clicks = np.floor(pool.impressions * rng.uniform(0, 0.1, n))
        shown = int(rng.integers(n))
        reward = float(rng.random() < pool.prior_mean[shown] * 1.5)
        logged.append(Decision(pool, shown, 1.0 / n, reward))
    ours = evaluate_policy(logged, "thompson", config, draws=4000, seed=seed)
    target_rng = np.random.default_rng(seed)  # the same draws evaluate_policy made
    q_all = reward_model(logged, [d.reward for d in logged], config)  # the same reward model
    for d, q in zip(logged, q_all):
        rows.append({"n": len(d.pool), "shown": d.shown, "propensity": d.propensity, "reward": d.reward,
                     "target": target_probabilities(d.pool, "thompson", config, target_rng, 4000).tolist(),
                     "q": q.tolist()})
    with open(path, "w") as handle:
        json.dump({"ours": ours, "decisions": rows}, handle)
    print(json.dumps(ours, indent=1))


def compare(path: str) -> dict:
    from obp.ope import DoublyRobust, InverseProbabilityWeighting, SelfNormalizedInverseProbabilityWeighting

    data = json.load(open(path))
    rows = data["decisions"]
    width = max(r["n"] for r in rows)
    action_dist = np.zeros((len(rows), width, 1))
    q = np.zeros((len(rows), width, 1))
    for i, r in enumerate(rows):
        action_dist[i, :r["n"], 0] = r["target"]
        q[i, :r["n"], 0] = r["q"]
    common = dict(reward=np.array([r["reward"] for r in rows]), action=np.array([r["shown"] for r in rows]),
                  pscore=np.array([r["propensity"] for r in rows]), action_dist=action_dist,
                  position=np.zeros(len(rows), int))
    theirs = {"ips": InverseProbabilityWeighting().estimate_policy_value(**common),
              "snips": SelfNormalizedInverseProbabilityWeighting().estimate_policy_value(**common),
              "dr": DoublyRobust().estimate_policy_value(**common, estimated_rewards_by_reg_model=q)}
    out = {k: {"tworec": data["ours"][k], "obp": float(v), "difference": abs(data["ours"][k] - float(v))}
           for k, v in theirs.items()}
    print(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    {"write": write, "compare": compare}[sys.argv[1]](sys.argv[2])
