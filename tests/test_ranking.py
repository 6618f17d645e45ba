"""The ranker: mined lists, the serving signature (unknown users and items, finite scores),
SavedModel round trip, and training under MirroredStrategy with two logical CPU devices."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from tworec import contract

HELPER = Path(__file__).parent / "helpers" / "mirrored_ranker.py"


def _rows(tables, dim, n, rng, unknown=False):
    num_items = len(tables.item_row)
    rows = rng.integers(0, num_items, n)
    out = {
        "user_row": np.full(n, 10**6 if unknown else 1, np.int32),  # far outside the vocabulary
        "user_attribute_rows": np.zeros((n, contract.MAX_USER_ATTRIBUTES), np.int32),
        "query_embedding": np.tile(rng.normal(size=(1, dim)).astype(np.float32), (n, 1)),
        "history_count": np.full(n, 0.0 if unknown else 5.0, np.float32),
        "hours_since_last": np.full(n, 0.0 if unknown else 3.0, np.float32),
        "item_row": tables.item_row[rows].copy(),
        "item_category_rows": tables.item_category_rows[rows],
        "item_embedding": tables.item_embedding[rows],
        "retrieval_score": rng.uniform(-1, 1, n).astype(np.float32),
        "item_log_popularity": tables.item_log_popularity[rows],
        "item_live_count": np.log1p(rng.exponential(2.0, n)).astype(np.float32),
    }
    if unknown:
        out["item_row"][::2] = -7  # unknown / invalid item rows take the unknown path
        out["item_category_rows"][1::2] = 9999
    return out


def test_mined_lists_put_the_positive_first_and_never_use_seen_items(synthetic_data, tiny_retrieval):
    from tworec.contract import Split
    from tworec.layout import DataLayout
    from tworec.ranking.config import RankerConfig
    from tworec.ranking.lists import mine_lists, repeat_new_item_positives
    from tworec.towers.artifact import RetrievalArtifact
    from tworec.towers.queries import split_queries
    from tworec.towers.scoring import top_candidates

    restored = RetrievalArtifact.load(tiny_retrieval).restore()
    model, catalog, lookups, config = restored.model, restored.catalog, restored.lookups, restored.config
    queries = split_queries(model, lookups, DataLayout(str(synthetic_data)).split_pattern(Split.VALID),
                            config.history_length)
    items = model.item_embeddings()
    rc = RankerConfig.tiny()
    lists = mine_lists(queries, items, rc, seed=3)
    # Only examples whose positive retrieval put in its top `candidates` are kept.
    top, _ = top_candidates(queries.query, items, queries.history_rows, rc.candidates)
    inside = (top == queries.item_row[:, None]).any(1)
    assert 0 < len(lists) == inside.sum() < len(queries)
    q = lists.queries
    assert lists.candidates.shape == (len(q), rc.list_size)
    np.testing.assert_array_equal(lists.candidates[:, 0], q.item_row)
    np.testing.assert_array_equal(q.item_row, queries.item_row[inside])
    for i in range(len(q)):
        row = lists.candidates[i]
        assert len(set(row.tolist())) == rc.list_size  # no duplicates
        history = set(q.history_rows[i][q.history_rows[i] >= 0].tolist())
        assert not history & set(row[1:].tolist())
        candidates = set(top[np.nonzero(inside)[0][i]].tolist())
        assert len(set(row[1:].tolist()) & candidates) >= rc.hard_negatives  # hard ones from the top
    expected = np.einsum("nd,nld->nl", q.query, items[lists.candidates])
    np.testing.assert_allclose(lists.scores, expected, atol=1e-5)
    everything = mine_lists(queries, items, RankerConfig.tiny(positives_in_candidates=False), seed=3)
    assert len(everything) == len(queries)

    # With trending, candidates are found and scored with the live term at each list's time, and
    # the candidates carry the live feature; a live_dropout share of lists is mined as trending off.
    from tworec.towers.live_counts import LiveTerm, PostTrainingEvents

    live = LiveTerm(PostTrainingEvents.of_splits(str(synthetic_data), catalog), 0.5, 7 * 86_400.0)
    trending = mine_lists(queries, items, RankerConfig.tiny(positives_in_candidates=False), seed=3, live=live)
    on = trending.live.any(1)
    assert 0.2 < on.mean() < 0.8
    features = live.events.features(trending.queries.timestamp, trending.candidates, live.half_life_s)
    np.testing.assert_allclose(trending.live, np.where(on[:, None], features, 0.0))
    content = np.einsum("nd,nld->nl", trending.queries.query, items[trending.candidates])
    np.testing.assert_allclose(trending.scores, content + live.weight * trending.live, atol=1e-5)
    assert (trending.candidates != everything.candidates).any()  # the term changed what was found

    # Lists whose positive is a new (id-less) item are repeated; the others appear once.
    item_row = catalog.id_index.copy()
    item_row[lists.candidates[:2, 0]] = 0  # make two positives look new
    new = item_row[lists.candidates[:, 0]] == 0
    repeated = repeat_new_item_positives(lists, item_row, 3)
    assert len(repeated) == len(lists) + 2 * new.sum()
    firsts = [tuple(row) for row in repeated.candidates]
    for i, row in enumerate(lists.candidates):
        assert firsts.count(tuple(row)) == (3 if new[i] else 1) * [tuple(r) for r in lists.candidates].count(tuple(row))
    np.testing.assert_array_equal(repeated.queries.item_row, repeated.candidates[:, 0])
    assert repeat_new_item_positives(lists, item_row, 1) is lists


def test_serving_signature_accepts_unknown_users_and_items_and_survives_a_savedmodel_round_trip(tiny_ranker):
    """Both exported signatures (named rows, and the packed one Triton serves) give the in-memory
    scorer's scores."""
    from tworec.ranking.features import pack_ranker_rows
    from tworec.ranking.artifact import RankerArtifact
    from tworec.ranking.model import ROWS_SIGNATURE, serving_signature
    from tworec.tf_setup import tf

    ranker = RankerArtifact.load(tiny_ranker)
    scorer, tables = ranker.restore()
    dim = ranker.embedding_dim
    rng = np.random.default_rng(0)
    signatures = tf.saved_model.load(str(ranker.savedmodel)).signatures
    loaded, packed = signatures[ROWS_SIGNATURE], signatures["serving_default"]
    assert sorted(packed.structured_input_signature[1]) == ["ranker_float32", "ranker_int32"]
    in_memory = serving_signature(scorer, dim)
    for unknown in (False, True):
        for n in (1, 200, contract.MAX_CANDIDATES):
            rows = _rows(tables, dim, n, rng, unknown=unknown)
            saved = loaded(**{k: tf.constant(v) for k, v in rows.items()})["score"].numpy()
            fresh = in_memory({k: tf.constant(v) for k, v in rows.items()})["score"].numpy()
            via_packed = packed(**{k: tf.constant(v) for k, v in pack_ranker_rows(rows).items()})["score"].numpy()
            assert saved.shape == (n,) and np.isfinite(saved).all()
            np.testing.assert_allclose(saved, fresh, rtol=1e-5, atol=1e-5)
            np.testing.assert_allclose(via_packed, fresh, rtol=1e-5, atol=1e-5)
    # Scores depend on the candidate, not only on the retrieval score.
    rows = _rows(tables, dim, 50, rng)
    rows["retrieval_score"][:] = 0.3
    scores = loaded(**{k: tf.constant(v) for k, v in rows.items()})["score"].numpy()
    assert np.ptp(scores) > 1e-4


def test_the_new_items_live_feature_moves_new_items_scores_only_and_linearly():
    """``live_feature="new_items"``: item_live_count adds one learned weight × it to new (id-less)
    items' scores and nothing to known items'; "crossed": it reaches every item's score."""
    from tworec.ranking.config import RankerConfig
    from tworec.ranking.model import RankingScorer
    from tworec.tf_setup import tf

    rng = np.random.default_rng(2)
    n, dim = 40, 8
    new, known = np.arange(n) < n // 2, np.arange(n) >= n // 2
    rows = {"user_row": np.ones(n, np.int32),
            "user_attribute_rows": np.zeros((n, contract.MAX_USER_ATTRIBUTES), np.int32),
            "query_embedding": rng.normal(size=(n, dim)).astype(np.float32),
            "history_count": np.full(n, 3.0, np.float32), "hours_since_last": np.ones(n, np.float32),
            "item_row": np.where(new, 0, np.arange(n)).astype(np.int32),
            "item_category_rows": np.ones((n, contract.MAX_ITEM_CATEGORIES), np.int32),
            "item_embedding": rng.normal(size=(n, dim)).astype(np.float32),
            "retrieval_score": rng.uniform(-1, 1, n).astype(np.float32),
            "item_log_popularity": known.astype(np.float32),
            "item_live_count": rng.uniform(0, 3, n).astype(np.float32)}
    more = dict(rows, item_live_count=rows["item_live_count"] + 1.0)
    for use in ("new_items", "crossed"):
        scorer = RankingScorer(RankerConfig.tiny(live_feature=use), 5, n, 3, 3)
        score = lambda r: scorer({k: tf.constant(v) for k, v in r.items()}).numpy()  # noqa: E731
        base = score(rows)
        if use == "new_items":
            scorer.new_item_live_weight.assign(0.7)
            gain = score(more) - score(rows)
            np.testing.assert_allclose(gain[new], 0.7, atol=1e-5)  # new items: the weight × 1
            np.testing.assert_allclose(gain[known], 0.0, atol=1e-6)  # known items: untouched
            np.testing.assert_allclose(score(dict(rows, item_live_count=np.zeros(n, np.float32)))[known],
                                       base[known], atol=1e-6)
        else:
            assert np.abs(score(more) - base)[known].max() > 1e-4


def test_ranker_trains_under_mirrored_strategy_on_two_logical_cpus(synthetic_data, tiny_retrieval, tmp_path):
    out = tmp_path / "ranker"
    done = subprocess.run([sys.executable, str(HELPER), str(synthetic_data), str(tiny_retrieval), str(out)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["replicas"] == 2 and len(summary["devices"]) == 2
    assert summary["epochs_run"] == 2 and np.isfinite(summary["loss"]).all()
    from tworec.ranking.artifact import RankerArtifact
    from tworec.ranking.features import RankerTables

    from tworec.training import TrainingFolder as T

    A = RankerArtifact
    for path in (T.WEIGHTS + ".index", RankerTables.FILE, A.SAVEDMODEL, A.DESCRIPTION, T.LOGS):
        assert (out / path).exists(), path
    assert RankerArtifact.load(out).summary["replicas"] == 2
