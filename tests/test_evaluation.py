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


def test_a_sampled_split_judges_its_queries_as_the_whole_split_does(synthetic_data):
    """``limit`` (eval's --max-queries, training's validation sample) keeps the first queries and
    reads histories only for their users, yet judges each query exactly as the full split does."""
    from tworec.contract import PROTOCOLS
    from tworec.towers.catalog import load_catalog
    from tworec.towers.scoring import JudgedSplit

    catalog = load_catalog(str(synthetic_data), PROTOCOLS["temporal"].train)
    full = JudgedSplit(str(synthetic_data), "temporal", catalog)
    n = len(full) // 3
    sample = JudgedSplit(str(synthetic_data), "temporal", catalog, limit=n)
    assert len(sample) == n and sample.examples == full.examples[:n]
    assert len(sample._history) < len(full._history)
    assert [sample.had_before(i) for i in range(n)] == [full.had_before(i) for i in range(n)]
    assert (sample.repeats == full.repeats[:n]).all() and sample.repeats.any()
    for name, mask in sample.segments.items():
        assert (mask == full.segments[name][:n]).all()


def test_ranks_under_variants_equal_evaluating_each_variant_alone(synthetic_data):
    """The validation fits score each chunk once and vary one term (an offset, a live-count
    weight): every variant's ranks must be those of evaluating its scores on their own."""
    from tworec.contract import PROTOCOLS
    from tworec.towers.catalog import load_catalog
    from tworec.towers.scoring import JudgedSplit

    catalog = load_catalog(str(synthetic_data), PROTOCOLS["temporal"].train)
    judged = JudgedSplit(str(synthetic_data), "temporal", catalog, limit=300)
    rng = np.random.default_rng(3)
    base = rng.normal(size=(len(judged), catalog.size)).astype(np.float32)
    term = rng.random((len(judged), catalog.size)).astype(np.float32)
    weights = (0.0, 0.5, 2.0)
    seen = []

    def variants(start, stop, scores):
        seen.append(np.isneginf(scores).sum())
        return ((w, scores + np.float32(w) * term[start:stop]) for w in weights)

    ranks = judged.ranks_under(lambda start, stop: base[start:stop], variants)
    assert sorted(ranks) == sorted(weights) and sum(seen) > 0  # each user's earlier items at -inf
    for w in weights:
        _, alone = judged.evaluate(lambda start, stop: base[start:stop] + np.float32(w) * term[start:stop])
        assert (ranks[w] == alone.ranks).all()
    assert not (ranks[0.0] == ranks[2.0]).all()


def test_top_rows_of_a_large_catalog_equal_a_full_stable_sort_ties_and_exclusions_included():
    """The partitioned top-k (memory and time linear in the catalog) breaks ties to the lower
    column exactly as a stable sort, so ranks and top lists agree at any catalog size."""
    import numpy as np

    from tworec.towers.scoring import query_chunk, top_rows

    rng = np.random.default_rng(0)
    for _ in range(100):
        n, depth = int(rng.integers(50, 3000)), int(rng.integers(1, 60))
        scores = rng.integers(0, 20, (7, n)).astype(np.float32)  # many ties
        scores[rng.random((7, n)) < 0.1] = -np.inf  # excluded items
        np.testing.assert_array_equal(top_rows(scores, depth), np.argsort(-scores, axis=1, kind="stable")[:, :depth])
    assert query_chunk(10_000) == 512 and query_chunk(1_000_000) * 1_000_000 <= 1 << 25 and query_chunk(10**9) == 1
