"""``tworec eval-policy``: a candidate exploration policy's click rate, estimated from logged
decisions before it goes live.

    tworec eval-policy --log LOG_DIR --policy POLICY.json --out DIR

The gateway logs every exploration-slot decision (live/recorder.py): the candidates with their
prior click rates, impressions and clicks (the last one the answer's item the slot would push out,
which competes for it), the action taken (a new item shown in the slot, or that item kept at its
place) and its propensity under the serving policy. A decision counts when its item's impression
came back (``RecordEvents``, with the answer's ``request_id`` and the ``position`` the decision
logged); its reward is 1 when a click on it came back the same way. For the candidate policy π,
with w = π(shown | pool) / propensity:

    IPS   mean(w · r)
    SNIPS sum(w · r) / sum(w)
    DR    mean(sum_a π(a | pool) q(a) + w · (r − q(shown))), q: each candidate's posterior mean,
          scaled to the logged click rate (``reward_model``)

each with a 95% interval, plus the effective sample size (sum w)² / sum w² and the largest
weight, which say how far the estimate can be trusted. POLICY.json names the policy
(``thompson``, ``greedy`` — the highest posterior mean — or ``uniform`` over the new items) and
any ExplorationConfig field, e.g. ``{"policy": "thompson", "prior_strength": 50}``.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tworec.artifacts import DescribedFolder
from tworec.live.event_log import read_records
from tworec.live.exploration import ExplorationConfig, Pool, thompson_probabilities

POLICIES = ("thompson", "greedy", "uniform")


@dataclass
class Decision:
    pool: Pool
    shown: int  # index in the pool
    propensity: float  # of the shown item under the logging policy
    reward: float  # 1: clicked


def logged_decisions(log_dir) -> tuple[list, dict]:
    """(decisions whose impression came back, counts of what was read)."""
    records = read_records(log_dir)
    shown, clicked, decisions = set(), set(), []
    for r in records:
        if r.get("kind", "event") == "event" and r.get("request_id") and r.get("position", -1) >= 0:
            key = (r["request_id"], r["position"], r["item_id"])
            if r["type"] == "impression":
                shown.add(key)
            elif r["type"] == "click":
                clicked.add(key)
    counts = {"decisions": 0, "without_impression": 0}
    for r in records:
        if r.get("kind") != "decision":
            continue
        counts["decisions"] += 1
        key = (r["request_id"], r["position"], r["chosen"])
        if key not in shown:
            counts["without_impression"] += 1
            continue
        pool = Pool.from_record(r)
        decisions.append(Decision(pool, pool.items.index(r["chosen"]), float(r["propensity"]), float(key in clicked)))
    counts["used"] = len(decisions)
    return decisions, counts


def target_probabilities(pool: Pool, policy: str, config: ExplorationConfig, rng: np.random.Generator,
                         draws: int) -> np.ndarray:
    """π(a | pool) for every entry of the pool (``uniform``: its new items only)."""
    if policy == "uniform":
        out = np.zeros(len(pool))
        out[: pool.new] = 1.0 / pool.new
        return out
    if policy == "greedy":
        competing = pool.competing(config)
        out = np.zeros(len(pool))
        out[competing[int(np.argmax(pool.posterior_means(config.prior_strength, competing)))]] = 1.0
        return out
    return thompson_probabilities(pool, config, rng, draws)


def estimates(rewards, propensities, target_of_shown, target_all, q_all, q_shown, mass=None) -> dict:
    """IPS, SNIPS and DR from per-decision arrays: rewards, the logging propensities and the
    target's probability of the shown item [n]; the target's probabilities and the reward model of
    every candidate (lists of [pool] arrays), and the model's value of the shown item [n]. ``mass``
    [n]: where the target's probabilities sum to less than 1 over the actions valued (the rest on
    actions worth 0), their sum per decision; SNIPS then normalises by sum(w / mass), whose
    expectation is n, as sum(w)'s is when the probabilities sum to 1."""
    r, p, t = (np.asarray(x, np.float64) for x in (rewards, propensities, target_of_shown))
    w = t / p
    # Each decision's normaliser term, expectation 1: w / mass, and 1 where the target puts no mass on
    # the actions valued (its w is 0 whatever the log shows, which would otherwise shrink the sum).
    mass = np.ones_like(w) if mass is None else np.asarray(mass, np.float64)
    unit = np.divide(w, mass, out=np.ones_like(w), where=mass > 0)
    direct = np.array([float(np.dot(pi, q)) for pi, q in zip(target_all, q_all)])
    snips = float(np.sum(w * r) / np.sum(unit)) if np.sum(w) > 0 else 0.0
    # Each estimator is a mean of per-decision terms (SNIPS by the delta method): its interval is
    # the normal one of that mean.
    terms = {"ips": w * r, "dr": direct + w * (r - np.asarray(q_shown, np.float64)),
             "snips": (w * r - snips * unit) / max(float(np.mean(unit)), 1e-12) + snips}
    out = {name: float(np.mean(x)) for name, x in terms.items()}
    out["snips"] = snips
    out["ci95"] = {name: _normal_interval(out[name], x) for name, x in terms.items()}
    return {
        **out,
        "dm": float(np.mean(direct)),
        "ess": float(np.sum(w) ** 2 / np.sum(w ** 2)) if np.sum(w ** 2) > 0 else 0.0,
        "max_weight": float(np.max(w)) if len(w) else 0.0,
        "n": int(len(r)),
        "logged_ctr": float(np.mean(r)) if len(r) else 0.0,
    }


def _normal_interval(value: float, terms: np.ndarray) -> list | None:
    if len(terms) < 2:
        return None  # one decision says nothing about its spread
    half = 1.96 * float(np.std(terms, ddof=1)) / np.sqrt(len(terms))
    return [value - half, value + half]


def evaluate_policy(decisions: list, policy: str, config: ExplorationConfig, draws: int = 2000, seed: int = 0,
                    new_items_only: bool = False) -> dict:
    """The estimates of ``policy`` (with ``config``) on ``decisions``: its click rate in the slot, or
    with ``new_items_only`` its clicks on new items alone (keeping the displaced item counts 0; what a
    log whose policy never kept it, such as a uniform one's, can estimate)."""
    rng = np.random.default_rng(seed)
    target_all = []
    for d in decisions:
        target = target_probabilities(d.pool, policy, config, rng, draws)
        # Keeping the answer is valued 0, so it weighs nothing.
        target_all.append(d.pool.new_items_only(target) if new_items_only else target)
    rewards = [0.0 if new_items_only and d.pool.is_displaced(d.shown) else d.reward for d in decisions]
    q_all = reward_model(decisions, rewards, config, new_items_only)
    return estimates(rewards, [d.propensity for d in decisions], [t[d.shown] for t, d in zip(target_all, decisions)],
                     target_all, q_all, [q[d.shown] for q, d in zip(q_all, decisions)],
                     mass=[float(t.sum()) for t in target_all] if new_items_only else None)


def reward_model(decisions: list, rewards: list, config: ExplorationConfig, new_items_only: bool = False) -> list:
    """DR's q(a) for every entry of every decision's pool: the posterior mean click rate, scaled so
    that its mean over the logged actions is the logged click rate (the prior's level is a random
    item's rate, not the slot's; DR is unbiased for any q fixed in advance and one fitted scale
    keeps it consistent, while q at the right level lowers its variance). With ``new_items_only``
    keeping the answer is worth 0."""
    q_all = []
    for d in decisions:
        q = d.pool.posterior_means(config.prior_strength)
        q_all.append(d.pool.new_items_only(q) if new_items_only else q)
    expected = sum(float(q[d.shown]) for q, d in zip(q_all, decisions))
    scale = float(np.sum(rewards)) / expected if expected > 0 and np.sum(rewards) > 0 else 1.0
    return [q * scale for q in q_all]


def read_policy(path) -> tuple[str, ExplorationConfig]:
    """(policy name, its ExplorationConfig) from a POLICY.json."""
    from tworec import settings

    values = json.loads(Path(path).read_text())
    policy = values.pop("policy", "thompson")
    if policy not in POLICIES:
        raise settings.SettingError(f"policy must be one of {', '.join(POLICIES)}, not {policy!r}")
    return policy, settings.from_dict(ExplorationConfig, {**settings.to_dict(ExplorationConfig()), **values})


class PolicyEvaluation(DescribedFolder):
    """An eval-policy folder: ``policy_eval.json`` (the estimates, the policy, what was read)."""

    KIND = "tworec policy evaluation"
    VERSION = 1
    REMEDY = "run `tworec eval-policy`"
    DESCRIPTION = "policy_eval.json"

    @classmethod
    def save(cls, path, estimates_: dict, policy: str, config: ExplorationConfig, counts: dict, log_dir: str) -> dict:
        Path(path).mkdir(parents=True, exist_ok=True)
        payload = {"policy": policy, "config": dataclasses.asdict(config), "log": str(log_dir), "read": counts,
                   "estimates": estimates_}
        cls.describe(path, payload)
        return payload


def eval_policy(log_dir: str, policy_path: str, out_dir: str) -> dict:
    policy, config = read_policy(policy_path)
    decisions, counts = logged_decisions(log_dir)
    if not decisions:
        from tworec.errors import UserError

        raise UserError(f"{log_dir} has no exploration decision whose impression was recorded ({counts}): send "
                        "impressions with the answer's request_id and the slot's position")
    return PolicyEvaluation.save(out_dir, evaluate_policy(decisions, policy, config), policy, config, counts, log_dir)
