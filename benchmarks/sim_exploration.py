"""Does the exploration slot give new items a fair chance, and what does it cost? A simulator.

    python benchmarks/sim_exploration.py --run RUN --out FILE.json [--seeds 5]

RUN: a ``tworec pipeline`` run on MovieLens-100K (its data and its content retrieval model).

- Ground truth, hidden from the policies: a matrix factorisation (rank 32 SVD) of every rating in
  the data, users × items. A shown item is clicked with probability sigmoid(a · z + b) · bias(p):
  z the standardised cosine of the user's and the item's factors, bias(p) = 1 / log2(p + 2) for
  position p, and b set so the no-slot arm's click rate is ``--ctr`` (2-5%).
- Items launch at their first rating; items launched after the training cutoff are new, and the
  policies know them by their text only (the model has no id embedding for them).
- Requests: the test period's (user, time) pairs in time order. The answer is the model's top 10
  by retrieval score among items launched by then that the user has not had (the user's query as
  the model computes it for that moment).
- Arms: ``no_slot``; ``random_slot`` (the slot filled uniformly at random among the eligible new
  items); ``thompson_slot`` (the product's ``live.exploration.choose`` with the model's click prior,
  the answer's last item competing as the gateway lets it). Impressions and clicks update each
  item's counts after every request, as RecordEvents does. The slot's settings default to the
  product's (``ExplorationConfig``).
- Common random numbers: in every arm, an item's click at a request is decided by the same uniform
  wherever it is shown, so the arms' clicks are compared per seed (paired).

Per arm, means and 95% intervals over ``--seeds`` seeds (and for clicks the paired ratio to the
no-slot arm): clicks, new-item clicks, new items with
at least 3 clicks by the end (the discoverable set), and the median impressions to a new item's
first click (Kaplan-Meier over the new items that were shown; where an arm's curve never reaches
one half, the horizon is reported with ``reached: false``), as the mean of per-seed medians and,
steadier, pooled: one curve over every seed's new items, its interval from resampling seeds.
Off-policy: the Thompson policy's new-item click rate in the slot estimated (IPS, SNIPS, DR with
95% intervals; evaluation/policy.py) from the random arm's logs of all seeds pooled
(``--ope-seeds``: more random-arm runs, logged traffic for the estimate only), against its true
value on the same decisions, and against the new-item click rate the Thompson arm had in its slot
in its own runs.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
ARMS = ("no_slot", "random_slot", "thompson_slot")
K = 10


def load(run: str):
    """What the simulation needs from the run: queries of the test requests, item embeddings and
    shift, the click prior, launches, the new items, the users' earlier items, the ratings."""
    from tworec import contract
    from tworec.contract import Split
    from tworec.layout import DataLayout
    from tworec.towers.artifact import RetrievalArtifact
    from tworec.towers.scoring import JudgedSplit, decoded_examples

    data = os.path.join(run, "data")
    artifact = RetrievalArtifact.load(os.path.join(run, "retrieval"))
    restored = artifact.restore(data)
    catalog = restored.catalog
    test = JudgedSplit(data, "temporal", catalog)
    queries = test.queries(restored.model, restored.lookups, artifact.config.history_length).query
    row = catalog.row_of()
    layout = DataLayout(data)
    every = [e for s in contract.TEMPORAL_SPLITS for e in decoded_examples(layout, s)]
    launch = np.full(catalog.size, np.iinfo(np.int64).max)
    for e in every:
        r = row[e["item_id"]]
        launch[r] = min(launch[r], e["timestamp"])
    stats = json.load(open(layout.stats))
    cutoff = stats["time_cutoffs"]["valid_start"]
    new = (launch >= cutoff) & (restored.model.item_tower.id_index.numpy() == 0)
    users = sorted({e["user_id"] for e in every})
    user_row = {u: i for i, u in enumerate(users)}
    ratings = np.zeros((len(users), catalog.size), np.float32)
    for e in every:
        ratings[user_row[e["user_id"]], row[e["item_id"]]] = 1.0
    return {
        "queries": queries, "items": restored.model.item_embeddings(), "shift": restored.model.score_shift(),
        "prior": artifact.click_prior, "launch": launch, "new": new, "test": test,
        "request_user": np.array([user_row[e["user_id"]] for e in test.examples]), "times": test.times,
        "ratings": ratings, "item_ids": catalog.item_ids, "cutoff": cutoff,
    }


def ground_truth(ratings: np.ndarray, rank: int = 32) -> np.ndarray:
    """Standardised cosine of every user's and item's rank-``rank`` factors: the hidden preference.
    The direction, not the length: an item's factor length mostly measures how many rated it, which
    would make every late-launched item unclickable by construction."""
    u, s, vt = np.linalg.svd(ratings.astype(np.float64), full_matrices=False)
    users = u[:, :rank] * np.sqrt(s[:rank])
    items = vt[:rank].T * np.sqrt(s[:rank])
    users /= np.maximum(np.linalg.norm(users, axis=1, keepdims=True), 1e-12)
    items /= np.maximum(np.linalg.norm(items, axis=1, keepdims=True), 1e-12)
    scores = users @ items.T
    return ((scores - scores.mean()) / scores.std()).astype(np.float32)


def position_bias(p) -> np.ndarray:
    return 1.0 / np.log2(np.asarray(p, np.float64) + 2.0)


def click_probability(z: np.ndarray, sharpness: float, offset: float) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-(sharpness * z + offset)))


def simulate(arm: str, world: dict, truth: np.ndarray, offset: float, args, seed: int) -> dict:
    from tworec.live import exploration

    rng = np.random.default_rng(seed)
    # Common random numbers: one uniform per request for each of the no-slot answer's items and one
    # for the slot, the same in every arm, so an item's click at a request is decided alike
    # wherever it is shown (arms then differ by what they show, not by their luck).
    luck = np.random.default_rng([seed, 1])
    config = args.slot
    n_items = len(world["item_ids"])
    impressions, clicks = np.zeros(n_items), np.zeros(n_items)
    first_click_at = np.full(n_items, -1.0)  # impressions when the first click came
    first_click_request = np.full(n_items, -1.0)  # and the request's index
    test = world["test"]
    total = new_clicks = explored = 0
    decisions = []
    for n in range(len(world["times"])):
        user, now = world["request_user"][n], world["times"][n]
        uniforms = luck.random(K + 1)
        had = test.had_before(n)
        scores = world["queries"][n] @ world["items"].T + world["shift"]
        eligible = world["launch"] <= now
        eligible[had] = False
        ranked = np.argsort(-np.where(eligible, scores, -np.inf), kind="stable")[:K]
        shown, luck_of_shown = list(ranked), list(uniforms[:K])
        choice = None
        if arm != "no_slot":
            candidates = np.flatnonzero(eligible & world["new"] & (impressions < config.graduate_after))
            candidates = candidates[~np.isin(candidates, shown)]
            pool = exploration.Pool([int(c) for c in candidates], world["prior"].mean(scores[candidates]),
                                    impressions[candidates], clicks[candidates])
            if pool.new and len(shown) == K:  # the answer's last item, which the slot would push out, competes
                last = int(ranked[-1])
                pool = pool.with_displaced(last, scores[last], impressions[last], clicks[last], world["prior"])
            choice = (exploration.choose(pool, config, rng) if arm == "thompson_slot"
                      else exploration.uniform_choice(pool, rng))
            if choice is not None and not choice.keeps_answer:
                explored += 1
                shown = shown[:config.position] + [choice.item] + shown[config.position:K - 1]
                luck_of_shown = luck_of_shown[:config.position] + [uniforms[K]] + luck_of_shown[config.position:K - 1]
        p = click_probability(truth[user, shown], args.sharpness, offset) * position_bias(np.arange(len(shown)))
        clicked = np.asarray(luck_of_shown) < p
        for item, hit in zip(shown, clicked):
            impressions[item] += 1
            if hit:
                clicks[item] += 1
                if first_click_at[item] < 0:
                    first_click_at[item] = impressions[item]
                    first_click_request[item] = n
        total += int(clicked.sum())
        new_clicks += int(clicked[world["new"][shown]].sum())
        if choice is not None:
            # The new-item clicks each action would make in the slot (keeping the answer: none).
            slot_p = choice.pool.new_items_only(click_probability(truth[user, choice.pool.items], args.sharpness,
                                                                  offset) * position_bias(config.position))
            decisions.append((choice, bool(not choice.keeps_answer and clicked[config.position]), slot_p))
    new = world["new"]
    shown_new = new & (impressions > 0)
    # Impressions to the first click, or so far where none came (censored), of each new item shown.
    first_clicks = (np.where(first_click_at > 0, first_click_at, impressions)[shown_new],
                    (first_click_at > 0)[shown_new])
    km = kaplan_meier_median(*first_clicks)
    # Time since launch, in requests: every new item launched within the stream is at risk from its
    # launch, shown or not (censored at the end).
    launched_at = np.searchsorted(world["times"], world["launch"], side="left")
    in_stream = new & (launched_at < len(world["times"]))
    waited = np.where(first_click_request >= 0, first_click_request, len(world["times"])) - launched_at
    km_time = kaplan_meier_median(waited[in_stream].astype(np.float64), (first_click_request >= 0)[in_stream])
    curve = kaplan_meier_curve(waited[in_stream].astype(np.float64), (first_click_request >= 0)[in_stream])
    slot_ctr = float(np.mean([p[c.index] for c, _, p in decisions])) if decisions else 0.0
    return {"clicks": total, "new_item_clicks": new_clicks, "slot_ctr": slot_ctr, "explored": explored,
            "discoverable_new_items": int(((clicks >= 3) & new).sum()),
            "new_items_shown": int(shown_new.sum()), "median_impressions_to_first_click": km,
            "median_requests_to_first_click": km_time, "requests": len(world["times"]), "decisions": decisions,
            "curve": curve, "first_clicks": first_clicks}


def kaplan_meier_curve(durations: np.ndarray, observed: np.ndarray) -> list:
    """[[t, S(t)], ...]: the Kaplan-Meier share of items still without a click after t."""
    order = np.argsort(durations, kind="stable")
    d, o = durations[order], observed[order]
    survival, at_risk, curve = 1.0, len(d), [[0.0, 1.0]]
    for t in np.unique(d):
        here = d == t
        if at_risk:
            survival *= 1.0 - int(o[here].sum()) / at_risk
        curve.append([float(t), round(survival, 5)])
        at_risk -= int(here.sum())
    return curve


def kaplan_meier_median(durations: np.ndarray, observed: np.ndarray) -> dict:
    """The Kaplan-Meier median of ``durations`` (impressions to the first click; censored where not
    ``observed``); {"value", "reached"}, value the horizon when the survival never falls to 0.5."""
    order = np.argsort(durations, kind="stable")
    d, o = durations[order], observed[order]
    survival, at_risk = 1.0, len(d)
    for t in np.unique(d):
        here = d == t
        events = int(o[here].sum())
        if at_risk:
            survival *= 1.0 - events / at_risk
        if survival <= 0.5:
            return {"value": float(t), "reached": True}
        at_risk -= int(here.sum())
    return {"value": float(d.max()) if len(d) else 0.0, "reached": False}


def pooled_median(first_clicks: list, rng: np.random.Generator, resamples: int = 1000) -> dict:
    """The Kaplan-Meier median of every seed's new items in one curve (``first_clicks``: per seed,
    (durations, observed)), and a 95% interval from resampling whole seeds: steadier than the
    mean of per-seed medians, each of which rests on a few dozen items."""
    def median(seeds):
        return kaplan_meier_median(np.concatenate([first_clicks[i][0] for i in seeds]),
                                   np.concatenate([first_clicks[i][1] for i in seeds]))

    n = len(first_clicks)
    out = median(range(n))
    values = [median(rng.integers(0, n, n))["value"] for _ in range(resamples)]
    out["ci95"] = [float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))]
    return out


def calibrate_offset(world: dict, truth: np.ndarray, args) -> float:
    """b such that the no-slot arm's click rate is ``args.ctr`` (bisection on its exact expectation)."""
    test = world["test"]
    sample = np.random.default_rng(0).choice(len(world["times"]), min(2000, len(world["times"])), replace=False)
    shown_z, positions = [], []
    for n in sample:
        scores = world["queries"][n] @ world["items"].T + world["shift"]
        eligible = world["launch"] <= world["times"][n]
        eligible[test.had_before(n)] = False
        ranked = np.argsort(-np.where(eligible, scores, -np.inf), kind="stable")[:K]
        shown_z.append(truth[world["request_user"][n], ranked])
        positions.append(np.arange(len(ranked)))
    z, bias = np.concatenate(shown_z), position_bias(np.concatenate(positions))
    low, high = -20.0, 5.0
    for _ in range(60):
        mid = (low + high) / 2
        if (click_probability(z, args.sharpness, mid) * bias).mean() > args.ctr:
            high = mid
        else:
            low = mid
    return (low + high) / 2


def off_policy(decisions: list, config, draws: int, seed: int) -> dict:
    """The Thompson slot's new-item click rate (clicks on new items in the slot per decision; keeping
    the answer counts 0, an action the random arm never takes) estimated from the random arm's
    decisions, and its true value on the same decisions (its action probabilities times the true
    click probabilities)."""
    from tworec.evaluation.policy import Decision, evaluate_policy
    from tworec.live.exploration import thompson_probabilities

    rng = np.random.default_rng(seed)
    logged = [Decision(c.pool, c.index, c.propensity, float(hit)) for c, hit, _ in decisions]
    estimate = evaluate_policy(logged, "thompson", config, draws=draws, seed=seed, new_items_only=True)
    true = float(np.mean([np.dot(thompson_probabilities(c.pool, config, rng, draws), p) for c, _, p in decisions]))
    return {**{k: estimate[k] for k in ("ips", "snips", "dr", "ess", "max_weight", "n", "ci95")}, "true": true,
            "relative_error": {k: abs(estimate[k] - true) / true for k in ("ips", "snips", "dr")},
            "true_in_ci95": {k: bool(lo <= true <= hi) for k, (lo, hi) in estimate["ci95"].items()}}


# Student's t 97.5% quantiles for 1..9 degrees of freedom (a few seeds), then the normal's.
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262)


def interval(values) -> list:
    """95% t-interval of the mean of a few seeds' values."""
    values = np.asarray(values, np.float64)
    if len(values) < 2:
        return [float(values.mean())] * 2
    t = _T975[len(values) - 2] if len(values) - 1 <= len(_T975) else 1.96
    half = t * values.std(ddof=1) / np.sqrt(len(values))
    return [float(values.mean() - half), float(values.mean() + half)]


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--ctr", type=float, default=0.03, help="the no-slot arm's click rate (2-5%%)")
    parser.add_argument("--sharpness", type=float, default=1.5, help="a: how much the hidden preference moves clicks")
    from tworec import settings
    from tworec.live.exploration import ExplorationConfig

    settings.add_flags(parser, ExplorationConfig, title="the slot (the product's ExplorationConfig)")
    parser.add_argument("--ope-draws", type=int, default=500)
    parser.add_argument("--ope-seeds", type=int, default=0,
                        help="random-arm seeds whose logs the off-policy estimate pools (default: --seeds); more "
                             "seeds are more logged traffic, run for the estimate only")
    parser.add_argument("--results", help="merge the result into this shared results file (the report reads it)")
    args = parser.parse_args(argv)
    args.slot = settings.from_flags(ExplorationConfig, args)

    started = time.time()
    world = load(args.run)
    truth = ground_truth(world["ratings"])
    offset = calibrate_offset(world, truth, args)
    runs = {arm: [] for arm in ARMS}
    ope, out_curves, logged, first_clicks = [], {}, [], {}
    for seed in range(args.seeds):
        for arm in ARMS:
            result = simulate(arm, world, truth, offset, args, seed)
            decisions = result.pop("decisions")
            curve = result.pop("curve")
            first_clicks.setdefault(arm, []).append(result.pop("first_clicks"))
            if seed == 0:
                out_curves[arm] = curve
            runs[arm].append(result)
            if arm == "random_slot":
                ope.append(off_policy(decisions, args.slot, args.ope_draws, seed))
                logged += decisions
            print(f"seed {seed} {arm}: clicks {result['clicks']}, new {result['new_item_clicks']}, discoverable "
                  f"{result['discoverable_new_items']}, median to first click {result['median_impressions_to_first_click']}",
                  flush=True)
    ope_seeds = max(args.ope_seeds, args.seeds)
    for seed in range(args.seeds, ope_seeds):  # more logged traffic for the estimate
        logged += simulate("random_slot", world, truth, offset, args, seed)["decisions"]
    out = {"run": os.path.abspath(args.run), "requests": len(world["times"]), "new_items": int(world["new"].sum()),
           "ctr_target": args.ctr, "seeds": args.seeds, "arms": {}}
    for arm, results in runs.items():
        summary = {}
        for key in ("clicks", "new_item_clicks", "discoverable_new_items", "explored"):
            values = [r[key] for r in results]
            summary[key] = float(np.mean(values))
            summary.setdefault("ci95", {})[key] = interval(values)
        for key in ("median_impressions_to_first_click", "median_requests_to_first_click"):
            medians = [r[key] for r in results]
            summary[key] = float(np.mean([m["value"] for m in medians]))
            summary[key.replace("median", "reached")] = all(m["reached"] for m in medians)
            summary["ci95"][key] = interval([m["value"] for m in medians])
        # A diagnostic beside the issue's statistic above: all seeds' new items in one curve.
        summary["pooled_median_impressions_to_first_click"] = pooled_median(first_clicks[arm],
                                                                            np.random.default_rng(0))
        summary["per_seed"] = results
        out["arms"][arm] = summary
    # The seeds' random-arm logs pooled (``--ope-seeds`` of them): one log of seeds × requests decisions. "true" is the
    # Thompson policy's new-item click rate on exactly those decisions; "thompson_arm" is the one the
    # Thompson arm had in its own runs (its posteriors grew from its own choices).
    out["ope"] = off_policy(logged, args.slot, args.ope_draws, 0)
    arm_ctr = float(np.mean([r["slot_ctr"] for r in runs["thompson_slot"]]))
    out["ope"]["thompson_arm"] = arm_ctr
    out["ope"]["relative_error_to_thompson_arm"] = {k: abs(out["ope"][k] - arm_ctr) / arm_ctr
                                                   for k in ("ips", "snips", "dr")}
    out["ope"]["per_seed"] = ope
    out["ope"]["seeds"] = ope_seeds
    no, ts = out["arms"]["no_slot"], out["arms"]["thompson_slot"]
    paired = [t["clicks"] / n["clicks"] for t, n in zip(runs["thompson_slot"], runs["no_slot"])]
    out["goals"] = {
        "discoverable_ratio": ts["discoverable_new_items"] / max(no["discoverable_new_items"], 1e-9),
        "median_ratio": ts["median_impressions_to_first_click"] / max(no["median_impressions_to_first_click"], 1e-9),
        "median_requests_ratio": ts["median_requests_to_first_click"] / max(no["median_requests_to_first_click"], 1e-9),
        "pooled_median_ratio": (ts["pooled_median_impressions_to_first_click"]["value"]
                                / max(no["pooled_median_impressions_to_first_click"]["value"], 1e-9)),
        # Per seed the arms met the same requests and the same luck (common random numbers), so the
        # ratio's interval is over the seeds' paired ratios; the unpaired one divides the Thompson
        # arm's interval by the no-slot mean.
        "clicks_ratio": float(np.mean(paired)),
        "clicks_ratio_lower": interval(paired)[0],
        "clicks_ratio_lower_unpaired": ts["ci95"]["clicks"][0] / no["clicks"],
    }
    out["curves"] = out_curves  # seed 0: share of new items without a click, by requests since launch
    out["seconds"] = round(time.time() - started, 1)
    with open(args.out, "w") as handle:
        json.dump(out, handle, indent=2)
    if args.results:
        from common import save

        save(out, None, "sim_exploration", args.results)
    print(json.dumps({k: out[k] for k in ("goals", "ope")}, indent=1, default=str)[:3000])
    return out


if __name__ == "__main__":
    main()
