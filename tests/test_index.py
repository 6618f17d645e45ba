"""The ScaNN index (real ScaNN): exact below the brute-force threshold, high recall above it,
live upsert/delete by item id, and a save/load round trip."""
import numpy as np

from tworec.synthetic_embeddings import clustered_unit_vectors
from tworec.towers.index import IndexConfig, ItemIndex


def _exact_top(embeddings, queries, k):
    return np.argsort(-(queries @ embeddings.T), axis=1)[:, :k]


def test_small_catalogs_are_searched_exactly():
    e = clustered_unit_vectors(3000, 32, clusters=50, seed=1)
    q = clustered_unit_vectors(20, 32, clusters=50, seed=2)
    index = ItemIndex.build(e, [f"i{i}" for i in range(len(e))])
    ids, scores = index.search_batched(q, 10)
    exact = _exact_top(e, q, 10)
    assert [[int(i[1:]) for i in row] for row in ids] == exact.tolist()
    assert np.all(np.diff(scores, axis=1) <= 1e-6)


def test_large_catalogs_use_a_tree_with_high_recall():
    e = clustered_unit_vectors(40_000, 32, clusters=200, seed=3)
    q = clustered_unit_vectors(100, 32, clusters=200, seed=4)
    index = ItemIndex.build(e, list(range(len(e))), IndexConfig(num_neighbors=10))
    ids, _ = index.search_batched(q, 10)
    exact = _exact_top(e, q, 10)
    recall = np.mean([len(set(map(int, a)) & set(b)) / 10 for a, b in zip(ids, exact.tolist())])
    assert recall >= 0.9, recall


def test_upsert_is_found_by_the_next_search_delete_removes_and_save_load_keeps_it(tmp_path):
    e = clustered_unit_vectors(2000, 16, clusters=20, seed=5)
    index = ItemIndex.build(e, [f"i{i}" for i in range(len(e))])
    query = clustered_unit_vectors(1, 16, clusters=20, seed=6)[0]
    index.upsert(["brand-new"], query[None, :])
    ids, scores = index.search(query, 5)
    assert ids[0] == "brand-new" and abs(scores[0] - 1.0) < 1e-4
    index.save(str(tmp_path / "index"))
    loaded = ItemIndex.load(str(tmp_path / "index"))
    assert loaded.search(query, 1)[0] == ["brand-new"] and loaded.size == 2001
    loaded.delete(["brand-new"])
    assert "brand-new" not in loaded.search(query, 5)[0]
    try:
        loaded.upsert(["bad"], np.zeros((1, 8), np.float32))
    except ValueError as err:
        assert "dimension" in str(err)
    else:
        raise AssertionError("a wrong dimension must be refused")


def test_a_score_shift_adds_to_retrieval_scores_only_and_survives_upsert_and_save_load(tmp_path):
    e = clustered_unit_vectors(1500, 16, clusters=15, seed=7)
    ids = [f"i{i}" for i in range(len(e))]
    shift = np.where(np.arange(len(e)) % 10 == 0, 0.3, 0.0).astype(np.float32)  # every tenth item is "new"
    q = clustered_unit_vectors(30, 16, clusters=15, seed=8)
    index = ItemIndex.build(e, ids, score_shift=shift)
    assert index.shifted and index.dimension == 16
    found, scores = index.search_batched(q, 20)
    exact = np.argsort(-(q @ e.T + shift), axis=1)[:, :20]
    assert [[int(i[1:]) for i in row] for row in found] == exact.tolist()
    np.testing.assert_allclose(scores, np.take_along_axis(q @ e.T + shift, exact, 1), atol=1e-5)
    # Item-to-item: the shift is left out.
    similar, _ = index.search_batched(q, 20, with_shift=False)
    assert [[int(i[1:]) for i in row] for row in similar] == _exact_top(e, q, 20).tolist()

    index.upsert(["new"], q[:1], score_shift=0.5)
    top, top_scores = index.search(q[0], 1)
    assert top == ["new"] and abs(top_scores[0] - (q[0] @ q[0] + 0.5)) < 1e-4
    index.save(str(tmp_path / "index"))
    loaded = ItemIndex.load(str(tmp_path / "index"))
    assert loaded.shifted and loaded.search(q[0], 1)[1][0] == top_scores[0]
    # No shift (or all zeros): the plain embeddings, as before.
    assert not ItemIndex.build(e, ids, score_shift=np.zeros(len(e))).shifted


def test_a_tree_searches_the_fewest_leaves_that_reach_the_recall_target_on_held_out_queries(tmp_path):
    e = clustered_unit_vectors(30_000, 32, clusters=300, seed=9)
    held_out = clustered_unit_vectors(400, 32, clusters=300, seed=10)
    config = IndexConfig(num_neighbors=10, brute_force_below=10_000, tuning_queries=300)
    index = ItemIndex.build(e, list(range(len(e))), config, queries=held_out)
    tuning = index.tuning
    assert index.is_tree and tuning["source"] == "held-out queries" and tuning["queries"] == 300
    target = config.recall_target + config.recall_margin
    ladder = {int(k): v for k, v in tuning["ladder"][str(tuning["reorder"])].items()}
    chosen = tuning["leaves_to_search"]
    assert ladder[chosen] >= target and all(r < target for s, r in ladder.items() if s < chosen)
    assert chosen < config.leaves(len(e))  # fewer than all of them
    # The recall holds on queries the build never saw, and survives save/load.
    fresh = clustered_unit_vectors(200, 32, clusters=300, seed=11)
    index.save(str(tmp_path / "index"))
    loaded = ItemIndex.load(str(tmp_path / "index"))
    assert (loaded.leaves_to_search, loaded.reorder) == (chosen, tuning["reorder"])
    ids, _ = loaded.search_batched(fresh, 10)
    exact = _exact_top(e, fresh, 10)
    assert np.mean([len(set(map(int, a)) & set(b)) / 10 for a, b in zip(ids, exact.tolist())]) >= 0.9


def test_int8_reorder_keeps_recall_and_churn_is_rebalanced():
    e = clustered_unit_vectors(24_000, 32, clusters=200, seed=12)
    q = clustered_unit_vectors(200, 32, clusters=200, seed=13)
    config = IndexConfig(num_neighbors=10, brute_force_below=10_000, reorder_dtype="int8", tuning_queries=200,
                         rebalance_above=0.5)
    index = ItemIndex.build(e, [f"i{i}" for i in range(len(e))], config, queries=q)
    assert index.tuning["recall@10"] >= 0.95
    before = index.health()
    assert before["partition_weighted_avg_relative_imbalance"] < 0.5 and before["rebalances"] == 0
    # Churn: a third of the catalog replaced by items from a few clusters the tree was not trained on.
    new = clustered_unit_vectors(8_000, 32, clusters=5, seed=14)
    index.delete([f"i{i}" for i in range(8_000)])
    index.upsert([f"n{i}" for i in range(8_000)], new)
    after = index.health()
    assert after["rebalances"] >= 1 and after["partition_weighted_avg_relative_imbalance"] <= 0.5
    assert index.size == len(e)
    ids, _ = index.search_batched(new[:50], 10)
    assert all(row[0].startswith("n") for row in ids)  # the new items are found after the rebalance


def test_the_search_is_the_cheapest_that_reaches_the_target_or_the_recall_ceiling(monkeypatch):
    from tworec.towers import index as index_module

    config = IndexConfig(num_leaves=1000, recall_margin=0.0, reorder=500, reorder_max=2000)
    vectors, queries = np.zeros((1_000_000, 4), np.float32), np.zeros((10, 4), np.float32)
    monkeypatch.setattr(index_module, "kth_exact_score", lambda *a: None)

    def tuned(recall_of):
        monkeypatch.setattr(index_module, "recall_at",
                            lambda s, v, q, kth, k, searched, reorder: recall_of(searched, reorder))
        return index_module.tune_search(None, vectors, queries, config)

    reached = tuned(lambda searched, reorder: 0.90 if searched < 50 else 0.96)
    assert (reached["leaves_to_search"], reached["reorder"], reached["recall@10"]) == (50, 500, 0.96)
    assert list(reached["ladder"]) == ["500"] and max(map(int, reached["ladder"]["500"])) == 50
    # Re-scoring too few candidates caps recall whatever the leaves: the list doubles until it reaches.
    rescored = tuned(lambda searched, reorder: 0.87 if reorder < 2000 else (0.93 if searched < 20 else 0.99))
    assert (rescored["leaves_to_search"], rescored["reorder"]) == (20, 2000)
    assert list(rescored["ladder"]) == ["500", "1000", "2000"]
    # int8-like: recall caps at 0.943 below the target; more leaves or candidates past the cap buy nothing.
    capped = tuned(lambda searched, reorder: {5: 0.90, 10: 0.935, 20: 0.9425}.get(searched, 0.9434))
    assert (capped["leaves_to_search"], capped["reorder"], capped["recall@10"]) == (20, 500, 0.9425)
    assert max(int(s) for s in capped["ladder"]["2000"]) == 1000
    # The margin: a search that only just reaches the target on the tuning queries is not chosen.
    config = IndexConfig(num_leaves=1000, recall_margin=0.01, reorder=500, reorder_max=500)
    margined = tuned(lambda searched, reorder: {5: 0.951, 10: 0.958}.get(searched, 0.965))
    assert margined["leaves_to_search"] == 20
