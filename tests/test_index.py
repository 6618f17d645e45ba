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
