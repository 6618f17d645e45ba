"""The temporal protocol judges what the product can serve: items the user had before are never
recommended, so a repeat interaction is a miss for every model, even one that knows the answer."""
import numpy as np


def test_an_oracle_hits_every_first_time_interaction_and_no_repeat(synthetic_data):
    from tworec.contract import PROTOCOLS
    from tworec.towers.scoring import JudgedSplit
    from tworec.towers.catalog import load_catalog

    catalog = load_catalog(str(synthetic_data), PROTOCOLS["temporal"].train)
    judged = JudgedSplit(str(synthetic_data), "temporal", catalog)
    row = catalog.row_of()
    # Repeats seen from each example's own (10-item) history: the protocol must count them all.
    in_history = np.array([row[e["item_id"]] in {row[h] for h in e["history_item_ids"] if h in row}
                           for e in judged.examples])
    assert in_history.any() and not in_history.all()
    assert judged.repeats[in_history].all()

    def oracle(start, stop):
        scores = np.zeros((stop - start, catalog.size), np.float32)
        scores[np.arange(stop - start), judged.targets[start:stop]] = 1.0
        return scores

    metrics, outcome = judged.evaluate(oracle)
    assert (outcome.ranks[~judged.repeats] == 1).all()
    assert (outcome.ranks[judged.repeats] > catalog.size).all()
    assert metrics["all"]["hitrate@10"] == (~judged.repeats).mean()
    # The second stage cannot bring an excluded item back either.
    metrics, outcome = judged.evaluate(oracle, rerank=lambda start, stop, rows, scores: scores)
    assert (outcome.ranks[~judged.repeats] == 1).all() and (outcome.ranks[judged.repeats] > catalog.size).all()
    assert not (outcome.top[judged.repeats] == judged.targets[judged.repeats][:, None]).any()
