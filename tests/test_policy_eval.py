"""Off-policy evaluation: the estimators on a hand-computed fixture, the exploration policy's
probabilities, and ``tworec eval-policy`` on a log written the way the gateway writes it."""
import json

import numpy as np
import pytest

from tworec.evaluation.policy import Decision, estimates, evaluate_policy, logged_decisions
from tworec.live.exploration import ExplorationConfig, Pool, beta_upper_tail, choose, posteriors, \
    thompson_probabilities, winning_probability


def test_the_estimators_on_a_hand_computed_fixture():
    # Three decisions, two candidates each. Logging propensities of the shown item 0.5, 0.25, 0.8;
    # the target's probabilities of the shown item 1.0, 0.5, 0.2; rewards 1, 0, 1.
    rewards, logged, target_shown = [1, 0, 1], [0.5, 0.25, 0.8], [1.0, 0.5, 0.2]
    target_all = [np.array([1.0, 0.0]), np.array([0.5, 0.5]), np.array([0.2, 0.8])]
    q_all = [np.array([0.1, 0.3]), np.array([0.2, 0.2]), np.array([0.5, 0.1])]
    q_shown = [0.1, 0.2, 0.5]
    got = estimates(rewards, logged, target_shown, target_all, q_all, q_shown)
    w = np.array([2.0, 2.0, 0.25])  # target / logging
    assert got["ips"] == pytest.approx((2.0 * 1 + 0 + 0.25 * 1) / 3)
    assert got["snips"] == pytest.approx((2.0 + 0.25) / w.sum())
    direct = np.array([0.1, 0.2, 0.2 * 0.5 + 0.8 * 0.1])
    assert got["dm"] == pytest.approx(direct.mean())
    assert got["dr"] == pytest.approx(np.mean(direct + w * (np.array(rewards) - np.array(q_shown))))
    assert got["ess"] == pytest.approx(w.sum() ** 2 / (w ** 2).sum()) and got["max_weight"] == 2.0
    ips_terms = w * np.array(rewards)  # the IPS interval: mean ± 1.96 · sd / √n of these
    half = 1.96 * ips_terms.std(ddof=1) / np.sqrt(3)
    assert got["ci95"]["ips"] == pytest.approx([got["ips"] - half, got["ips"] + half])
    assert all(lo < got[k] < hi for k, (lo, hi) in got["ci95"].items())
    # The same policy as the logging one: every weight 1, IPS = the logged click rate.
    same = estimates(rewards, logged, logged, target_all, q_all, q_shown)
    assert same["ips"] == same["snips"] == pytest.approx(2 / 3) and same["ess"] == pytest.approx(3)


def test_thompson_probabilities_sum_to_one_over_the_candidates_and_follow_the_posteriors():
    rng = np.random.default_rng(0)
    config = ExplorationConfig(pool_size=3, prior_strength=10)
    pool = Pool(["a", "b", "c", "d"], np.array([0.02, 0.03, 0.05, 0.01]), np.array([100.0, 0, 0, 0]),
                np.array([30.0, 0, 0, 0]))
    probabilities = thompson_probabilities(pool, config, rng, draws=20_000)
    assert probabilities.sum() == pytest.approx(1.0) and probabilities[3] == 0  # "d" is outside the top 3
    assert probabilities[0] > 0.95  # 30 clicks in 100 impressions beat priors of 2-5%
    alpha, beta = posteriors(pool.prior_mean, pool.impressions, pool.clicks, 10)
    assert alpha[0] == pytest.approx(0.2 + 30) and beta[0] == pytest.approx(9.8 + 70)
    choice = choose(pool, config, rng)
    assert choice.item == "a" and choice.propensity > 0.9


def test_the_displaced_item_competes_for_the_slot_and_keeping_it_is_an_action_with_a_propensity():
    from tworec.live.exploration import ClickPrior, uniform_choice

    rng = np.random.default_rng(2)
    prior = ClickPrior(0.0, float(np.log(0.03 / 0.97)))  # every prior mean 3%
    new = Pool.of(["a", "b", "c"], [0.0, 0.0, 0.0], [0, 0, 0], [0, 0, 0], prior)
    # The answer's last item has been clicked 60 times in 100 impressions: it wins nearly always.
    pool = new.with_displaced("kept", 0.0, 100, 60, prior)
    assert (pool.new, len(pool), pool.displaced, pool.items[-1]) == (3, 4, True, "kept")
    config = ExplorationConfig(pool_size=2)  # two new items compete, and the displaced one besides
    probabilities = thompson_probabilities(pool, config, rng, draws=20_000)
    assert probabilities.sum() == pytest.approx(1.0) and probabilities[2] == 0 and probabilities[3] > 0.99
    choice = choose(pool, config, rng)
    assert choice.keeps_answer and choice.item == "kept" and choice.index == 3
    assert choice.propensity == pytest.approx(probabilities[3], abs=0.01)
    # Without it competing, a new item always wins; the uniform policy never keeps the answer.
    alone = ExplorationConfig(pool_size=2, displaced_competes=False)
    assert thompson_probabilities(pool, alone, rng, draws=2000)[3] == 0
    assert not choose(pool, alone, rng).keeps_answer
    picks = {uniform_choice(pool, rng).item for _ in range(200)}
    assert picks == {"a", "b", "c"} and uniform_choice(pool, rng).propensity == pytest.approx(1 / 3)
    # The log keeps which entry was displaced.
    assert Pool.from_record(pool.record()).displaced and not Pool.from_record(new.record()).displaced
    # A log of a policy that never kept the answer estimates the new-item clicks alone: a decision
    # that kept it is worth 0 there, its click whatever it was.
    kept = Decision(pool, 3, 1.0, 1.0)
    assert evaluate_policy([kept], "thompson", config, draws=500)["ips"] > 0.9
    assert evaluate_policy([kept], "thompson", config, draws=500, new_items_only=True)["ips"] == 0


def test_drs_reward_model_is_the_posterior_mean_at_the_logged_click_rate():
    from tworec.evaluation.policy import reward_model

    config = ExplorationConfig(prior_strength=10)
    pools = [Pool(["a", "b"], np.array([0.2, 0.4]), np.array([0.0, 10.0]), np.array([0.0, 1.0])) for _ in range(4)]
    decisions = [Decision(pool, j % 2, 0.5, float(j == 0)) for j, pool in enumerate(pools)]  # 1 click in 4
    q = reward_model(decisions, [d.reward for d in decisions], config)
    alpha, beta = posteriors(pools[0].prior_mean, pools[0].impressions, pools[0].clicks, 10)
    np.testing.assert_allclose(q[0] / q[0][0], (alpha / (alpha + beta)) / (alpha[0] / (alpha[0] + beta[0])))
    assert np.mean([qi[d.shown] for qi, d in zip(q, decisions)]) == pytest.approx(0.25)


def test_snips_normalises_by_the_targets_mass_on_the_actions_valued():
    """A uniform log over three new items; a target that keeps the answer half the time (valued 0):
    its new-item click rate is 0.2·0.3 + 0.2·0.1 + 0.1·0.05 = 0.085. Plain self-normalisation by
    sum(w) would estimate it as if the target never kept the answer (twice as high)."""
    rng = np.random.default_rng(5)
    target, truth = np.array([0.2, 0.2, 0.1, 0.0]), np.array([0.3, 0.1, 0.05, 0.0])
    shown = rng.integers(0, 3, 40_000)
    rewards = (rng.random(len(shown)) < truth[shown]).astype(float)
    args = (rewards, np.full(len(shown), 1 / 3), target[shown], [target] * len(shown), [np.zeros(4)] * len(shown),
            np.zeros(len(shown)))
    with_mass = estimates(*args, mass=np.full(len(shown), 0.5))
    assert with_mass["snips"] == pytest.approx(0.085, abs=0.005) and with_mass["ips"] == pytest.approx(0.085, abs=0.005)
    lo, hi = with_mass["ci95"]["snips"]
    assert lo < 0.085 < hi
    assert estimates(*args)["snips"] == pytest.approx(0.17, abs=0.01)
    # Where the target puts no mass on the valued actions, a decision still counts once in the
    # normaliser (its weight is 0): half such decisions leave the estimate of the whole at 0.0425.
    none = np.zeros(4)
    half = estimates(rewards, np.full(len(shown), 1 / 3), np.where(np.arange(len(shown)) % 2, target[shown], 0.0),
                     [target if j % 2 else none for j in range(len(shown))], [np.zeros(4)] * len(shown),
                     np.zeros(len(shown)), mass=np.where(np.arange(len(shown)) % 2, 0.5, 0.0))
    assert half["snips"] == pytest.approx(0.0425, abs=0.004) and half["ips"] == pytest.approx(0.0425, abs=0.004)


def test_the_served_propensity_integrates_the_winners_draw_and_agrees_with_counting_wins():
    """winning_probability (the others' maximum drawn, the winner's Beta tail exact) against
    200,000 draws of the whole choice, for every candidate of a pool with wide and narrow
    posteriors; its spread over repeats is below plain counting's with four times the draws."""
    rng = np.random.default_rng(3)
    mean = np.array([0.02, 0.03, 0.05, 0.01, 0.04, 0.03, 0.02, 0.06])
    impressions = np.array([0.0, 40, 0, 150, 10, 0, 300, 5])
    clicks = np.array([0.0, 3, 0, 2, 1, 0, 20, 0])
    alpha, beta = posteriors(mean, impressions, clicks, 20.0)
    counted = np.bincount(rng.beta(alpha, beta, size=(200_000, 8)).argmax(1), minlength=8) / 200_000
    integrated = np.array([winning_probability(alpha, beta, k, rng.beta(alpha, beta, size=(4000, 8))) for k in range(8)])
    np.testing.assert_allclose(integrated, counted, atol=0.01)
    assert integrated.sum() == pytest.approx(1.0, abs=0.02)
    k = int(np.argmax(counted))
    served = [winning_probability(alpha, beta, k, rng.beta(alpha, beta, size=(50, 8))) for _ in range(200)]
    plain = [np.mean(rng.beta(alpha, beta, size=(200, 8)).argmax(1) == k) for _ in range(200)]
    assert abs(np.mean(served) - counted[k]) < 0.01 and np.std(served) < np.std(plain)


def test_the_winners_tail_keeps_its_relative_precision_down_to_tiny_propensities():
    """beta_upper_tail (float32, on the hot path) against scipy's float64 complement, for posteriors
    like the slot's and thresholds from the bulk to far in the tail (where 1 - CDF in float32
    would round to 0)."""
    from scipy.special import betaincc

    for alpha, beta in [(0.6, 19.4), (3.0, 117.0), (20.0, 40.0)]:
        x = np.linspace(0.001, 0.6, 200)
        exact = betaincc(alpha, beta, x)
        np.testing.assert_allclose(beta_upper_tail(alpha, beta, x)[exact > 1e-30], exact[exact > 1e-30], rtol=1e-4)


def test_eval_policy_reads_decisions_joined_to_their_impressions_and_clicks(tmp_path):
    from tworec.evaluation.policy import PolicyEvaluation
    from tworec.live.event_log import EventLog

    rng = np.random.default_rng(1)
    log = EventLog(tmp_path / "log" / "r1")
    config = ExplorationConfig(pool_size=4)
    truth = {"a": 0.1, "b": 0.05, "c": 0.02, "d": 0.01}
    records = []
    for n in range(3000):  # a uniform logging policy: every target is estimable
        pool = Pool(list(truth), np.array([0.03, 0.03, 0.03, 0.03]), np.zeros(4), np.zeros(4))
        shown = pool.items[int(rng.integers(4))]
        request = f"q{n}"
        records.append({"kind": "decision", "request_id": request, "user_id": "u", "position": 4, "at": n,
                        "chosen": shown, "propensity": 0.25, **pool.record()})
        if n % 10:  # a tenth of the impressions never came back
            records.append({"kind": "event", "event_id": f"i{n}", "user_id": "u", "item_id": shown,
                            "type": "impression", "timestamp": 1_700_000_000, "request_id": request, "position": 4})
            if rng.random() < truth[shown]:
                records.append({"kind": "event", "event_id": f"c{n}", "user_id": "u", "item_id": shown,
                                "type": "click", "timestamp": 1_700_000_001, "request_id": request, "position": 4})
    log.append(records)
    log.close()
    decisions, counts = logged_decisions(tmp_path / "log")
    assert counts == {"decisions": 3000, "without_impression": 300, "used": 2700}
    uniform = evaluate_policy(decisions, "uniform", config)
    assert uniform["ips"] == pytest.approx(uniform["logged_ctr"]) and uniform["ess"] == pytest.approx(2700)
    # Greedy with equal priors and no counts picks "a" (the first): its estimate is a's click rate.
    greedy = evaluate_policy(decisions, "greedy", config)
    assert abs(greedy["snips"] - truth["a"]) < 0.03 and greedy["max_weight"] == pytest.approx(4.0)

    from tworec.cli.main import main

    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({"policy": "greedy"}))
    assert main(["eval-policy", "--log", str(tmp_path / "log"), "--policy", str(policy), "--out",
                 str(tmp_path / "out")]) == 0
    written = json.loads((tmp_path / "out" / PolicyEvaluation.DESCRIPTION).read_text())
    assert written["estimates"]["snips"] == pytest.approx(greedy["snips"])


# --- the slot itself ---------------------------------------------------------------------------------
from hypothesis import given, settings, strategies as st  # noqa: E402


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.data())
def test_the_slot_never_shows_a_seen_removed_excluded_or_graduated_item(data):
    from tworec.live.exploration import ClickPrior, ExactRanking, candidate_pool

    n = data.draw(st.integers(1, 60))
    items = [f"i{j}" for j in range(n)]
    scores = np.array(data.draw(st.lists(st.floats(-1, 1), min_size=n, max_size=n)))
    seen = set(data.draw(st.lists(st.sampled_from(items), max_size=n)))
    removed = set(data.draw(st.lists(st.sampled_from(items), max_size=5)))
    excluded = set(data.draw(st.lists(st.sampled_from(items), max_size=5)))
    impressions = np.array(data.draw(st.lists(st.integers(0, 400), min_size=n, max_size=n)), float)
    clicks = np.minimum(impressions, np.array(data.draw(st.lists(st.integers(0, 50), min_size=n, max_size=n)), float))
    config = ExplorationConfig(pool_size=data.draw(st.integers(1, 10)), graduate_after=200)
    lookup = {i: (impressions[j], clicks[j]) for j, i in enumerate(items)}
    # Sometimes the answer's last item competes (it is in the answer already, so never in the ranking).
    last = ("last", data.draw(st.floats(-1, 1)), data.draw(st.integers(0, 400)), data.draw(st.integers(0, 5)))
    lookup["last"] = last[2:]
    displaced = last[:2] if data.draw(st.booleans()) else None
    pool = candidate_pool(ExactRanking(lambda js: [items[j] for j in js], scores), seen | removed | excluded,
                          lambda ids: (np.array([lookup[i][0] for i in ids]), np.array([lookup[i][1] for i in ids])),
                          ClickPrior(5.0, -3.5), config, displaced)
    forbidden = seen | removed | excluded | {i for i in items if lookup[i][0] >= 200}
    assert not set(pool.items) & forbidden
    allowed = [i for i in items if i not in forbidden]
    assert pool.new == min(config.pool_size, len(allowed))  # full whenever it can be
    assert len(pool) == pool.new + int(pool.displaced) and pool.displaced == bool(displaced and pool.new)
    if pool.displaced:  # its exposure came with the pool's
        assert pool.items[-1] == "last" and (pool.impressions[-1], pool.clicks[-1]) == last[2:]
    best = sorted(allowed, key=lambda i: -scores[items.index(i)])[:config.pool_size]
    assert sorted(scores[items.index(i)] for i in pool.items[:pool.new]) == sorted(scores[items.index(i)] for i in best)
    choice = choose(pool, config, np.random.default_rng(data.draw(st.integers(0, 1000))))
    if not allowed:
        assert choice is None
        return
    assert (choice.item in allowed or choice.keeps_answer) and 0 < choice.propensity <= 1
    assert choice.keeps_answer == (choice.item == "last")
    probabilities = thompson_probabilities(pool, config, np.random.default_rng(0), draws=500)
    assert probabilities.sum() == pytest.approx(1.0) and probabilities[choice.index] >= 0
