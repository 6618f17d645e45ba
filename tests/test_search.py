"""Search on a hand-made catalog, with the real MiniLM and bm25s: a match only BM25 can make, one
only the sentence space can make, a filter that removes everything, an upsert that becomes
searchable by both legs, a removal, the fitted fusion and personal re-ranking, and the search
folder's save/load."""
from types import SimpleNamespace

import numpy as np
import pytest

from tworec.search.engine import LEXICAL, SEMANTIC, Fusion, Ranking, UserScores
from tworec.text import compose_item_text

ITEMS = [  # id, title, description, categories
    ("i1", "The Zorblax Almanac", "A yearly almanac of zorblax facts.", ("Reference",)),
    ("i2", "Starship Voyages", "Crews travel between galaxies aboard vessels that cross the stars.", ("Sci-Fi",)),
    ("i3", "Country Bread", "Sourdough loaves, rye and baguettes from a village oven.", ("Cooking",)),
    ("i4", "Soup Kitchen", "Broths, stocks and stews for winter evenings.", ("Cooking",)),
    ("i5", "Garden Year", "Planting vegetables, pruning roses and composting.", ("Gardening",)),
    ("i6", "Mountain Trails", "Hiking routes across alpine passes and valleys.", ("Travel",)),
]


@pytest.fixture(scope="module")
def engine():
    from tworec.search.fit import build_engine
    from tworec.search.semantic import item_vectors

    categories = sorted({c for *_, cats in ITEMS for c in cats})
    catalog = SimpleNamespace(
        item_ids=[i for i, *_ in ITEMS], size=len(ITEMS), categories=categories,
        texts=[compose_item_text(t, d, c) for _, t, d, c in ITEMS],
        category_ids=np.array([[categories.index(c[0]) + 1, 0] for *_, c in ITEMS], np.int32))
    return build_engine(catalog, item_vectors(catalog.texts), Fusion("weighted", 0.5), depth=5)


@pytest.fixture(scope="module")
def encode():
    from tworec.search.semantic import QueryEncoder

    return QueryEncoder()


def _answer(engine, encode, query, allowed=None):
    found = engine.candidates(query, encode(query), allowed)
    order = np.argsort(-engine.rank(found, np.zeros(len(found.ids))), kind="stable")
    return [(found.ids[j], found.legs(j)) for j in order]


def test_a_word_only_the_lexical_leg_knows_finds_its_item(engine, encode):
    answer = _answer(engine, encode, "zorblax")
    assert answer[0][0] == "i1" and LEXICAL in answer[0][1]
    lexical_hits = [i for i, legs in answer if LEXICAL in legs]
    assert lexical_hits == ["i1"]  # no other item has the word


def test_a_meaning_without_a_shared_word_is_found_by_the_semantic_leg_only(engine, encode):
    answer = _answer(engine, encode, "spaceship adventures in outer space")
    assert answer[0] == ("i2", [SEMANTIC])  # no query word (after stemming) is in its text
    assert not [i for i, legs in answer if LEXICAL in legs]


def test_a_filter_that_removes_everything_answers_nothing(engine, encode):
    assert _answer(engine, encode, "bread", allowed=lambda item: False) == []
    only_cooking = _answer(engine, encode, "bread", allowed=lambda item: item in {"i3", "i4"})
    assert only_cooking[0][0] == "i3" and {i for i, _ in only_cooking} <= {"i3", "i4"}


def test_an_upserted_item_becomes_searchable_and_a_removed_one_disappears(engine, encode):
    from tworec.search.engine import category_tokens
    from tworec.search.semantic import item_vectors

    text = compose_item_text("Quokka Island", "A photo book of quokkas on Rottnest.", ("Travel",))
    engine.upsert(["new"], [text], item_vectors([text]), [category_tokens(["Travel"])])
    assert "new" in [i for i, _ in _answer(engine, encode, "smiling marsupials of australia")]  # semantic at once
    assert engine.lexical.wait(60) and engine.lexical.rebuilds >= 1
    assert _answer(engine, encode, "quokka")[0] == ("new", [LEXICAL, SEMANTIC])
    engine.remove(["new"])
    assert "new" not in [i for i, _ in _answer(engine, encode, "quokka")]


def test_fusion_forms_and_the_personal_ranker_score_as_documented():
    lexical, semantic = np.array([4.0, 2.0, 0.0]), np.array([0.1, 0.5, 0.9])
    lexical_rank, semantic_rank = np.array([1, 2, 0]), np.array([3, 2, 1])
    weighted = Fusion("weighted", 0.25)(lexical, semantic, lexical_rank, semantic_rank)
    np.testing.assert_allclose(weighted, 0.25 * lexical / 4.0 + 0.75 * semantic)
    rrf = Fusion("rrf", 0.5, rrf_k=60)(lexical, semantic, lexical_rank, semantic_rank)
    np.testing.assert_allclose(rrf, [0.5 / 61 + 0.5 / 63, 0.5 / 62 + 0.5 / 62, 0.5 / 61])
    from tworec.search.engine import Candidates

    c = Candidates(ids=["a"], lexical=np.array([3.0]), semantic=np.array([0.2]), lexical_rank=np.array([1]),
                   semantic_rank=np.array([0]), category_match=np.array([0.5]), fused=np.array([1.0]))
    # Without a user: the query features and the prior; with one also the user's two-tower score
    # beyond the prior and the ranker's score.
    np.testing.assert_allclose(c.features(np.array([0.7])), [[1.0, 1.0, 0.2, 0.5, 0.7]])
    user = UserScores(np.array([2.0]), np.array([-0.4]))
    np.testing.assert_allclose(c.features(np.array([0.7]), user), [[1.0, 1.0, 0.2, 0.5, 0.7, 1.3, -0.4]])
    ranking = Ranking((1.0, 0.0, 0.0, 0.0, 2.0, 0.5, 1.0))
    assert ranking(c.features(np.array([0.7]), user))[0] == pytest.approx(1.0 + 1.4 + 0.65 - 0.4)


def _tied_lists(marks_target, seed=0, lists=60, n=8):
    """Lists where the query cannot tell the candidates apart (equal fused scores) and
    ``marks_target(target, rng)`` gives (prior, affinity, ranker score) per candidate."""
    from tworec.search.engine import Candidates
    from tworec.search.fit import QueryCandidates

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(lists):
        c = Candidates(ids=list(range(n)), lexical=np.ones(n), semantic=np.full(n, 0.5),
                       lexical_rank=np.arange(1, n + 1), semantic_rank=np.arange(1, n + 1), category_match=np.zeros(n))
        target = int(rng.integers(n))
        prior, affinity, ranker = marks_target(target, rng)
        out.append(QueryCandidates(c, target, prior, UserScores(affinity, ranker)))
    return out


def _marked(target, rng, n=8):
    x = rng.normal(0, 0.1, n)
    x[target] += 1.0
    return x


@pytest.mark.parametrize("signal", ["affinity", "ranker"])
def test_the_personal_ranking_follows_the_user_when_the_query_and_the_prior_cannot_tell(signal):
    """The user's two-tower affinity (or the ranker's score) marks the target and the prior says
    nothing: the personal ranking weighs that signal and finds the targets; the anonymous one cannot."""
    from tworec.search.engine import USER_FEATURES
    from tworec.search.fit import fit_ranking, ranks

    def marks(target, rng):
        mark = _marked(target, rng)
        return np.zeros(8), (mark if signal == "affinity" else np.zeros(8)), (mark if signal == "ranker" else np.zeros(8))

    gathered = _tied_lists(marks)
    fusion = Fusion("weighted", 0.5)
    anonymous, personal = fit_ranking(gathered, fusion, with_user=False), fit_ranking(gathered, fusion, with_user=True)
    assert personal.weights[USER_FEATURES.index(signal)] > 0
    assert (ranks(gathered, "fused_personal", fusion, anonymous, personal) == 1).mean() > 0.9
    assert (ranks(gathered, "fused", fusion, anonymous, personal) == 1).mean() < 0.5


def test_without_a_user_the_item_prior_ranks_what_the_query_cannot_tell_apart():
    """The population's score marks the target and the user adds nothing beyond it: both rankings
    weigh the prior and find the targets, and the paired difference between them is 0."""
    from tworec.search.fit import fit_ranking, paired_difference, ranks

    def marks(target, rng):
        prior = _marked(target, rng)
        return prior, prior.copy(), np.zeros(8)

    gathered = _tied_lists(marks)
    fusion = Fusion("weighted", 0.5)
    anonymous, personal = fit_ranking(gathered, fusion, with_user=False), fit_ranking(gathered, fusion, with_user=True)
    assert anonymous.weights[4] > 0 and personal.weights[6] == 0.0  # a constant ranker score teaches nothing
    found = ranks(gathered, "fused", fusion, anonymous, personal)
    legs = ranks(gathered, "fused_legs", fusion)
    assert (found == 1).mean() > 0.9 and (legs == 1).mean() < 0.5
    users = [f"u{i % 20}" for i in range(len(gathered))]
    everyone = np.ones(len(gathered), bool)
    same = paired_difference(ranks(gathered, "fused_personal", fusion, anonymous, personal), found, users, everyone)
    assert same["ndcg@10"] == 0.0 and same["ci95_ndcg@10"] == [0.0, 0.0]
    better = paired_difference(found, legs, users, everyone)
    assert better["ndcg@10"] > 0.3 and better["ci95_ndcg@10"][0] > 0


def test_eval_search_writes_every_arm_and_paired_differences_that_agree_with_the_arms(
        synthetic_data, tiny_retrieval, tiny_search, tmp_path):
    """``tworec eval-search`` on the synthetic data: the issue's metrics.json shape, each paired
    difference equal to the difference of its arms' NDCG@10 and inside its own interval."""
    import json

    from tworec.evaluation.search import eval_search
    from tworec.search.fit import ARMS, COMPARED

    eval_search(str(synthetic_data), str(tmp_path), str(tiny_retrieval), str(tiny_search), max_queries=300,
                log=lambda *_: None)
    results = json.loads((tmp_path / "metrics.json").read_text())
    protocol = results["category_path"]
    assert 0 < protocol["queries"] <= 300 and "review_summary" not in results  # synthetic data has no reviews
    for arm in ARMS:
        for segment in ("all", "cold"):
            m = protocol[arm][segment]
            if segment == "all" or m["count"]:
                assert 0 <= m["hitrate@10"] <= m["hitrate@100"] <= 1
                lo, hi = m["ci95_ndcg@10"]
                assert lo <= m["ndcg@10"] <= hi
    for arm, baseline in COMPARED:
        d = protocol["differences"][f"{arm}-{baseline}"]["all"]
        assert d["ndcg@10"] == pytest.approx(protocol[arm]["all"]["ndcg@10"] - protocol[baseline]["all"]["ndcg@10"], abs=2e-4)
        assert d["ci95_ndcg@10"][0] <= d["ndcg@10"] <= d["ci95_ndcg@10"][1]
    assert set(results["neighbourhood_agreement"]) >= {"similar_items_before", "similar_items", "raw_minilm"}
