"""Search on a hand-made catalog, with the real MiniLM and bm25s: a match only BM25 can make, one
only the sentence space can make, a filter that removes everything, an upsert that becomes
searchable by both legs, a removal, the fitted fusion and personal re-ranking, and the search
folder's save/load."""
from types import SimpleNamespace

import numpy as np
import pytest

from tworec.search.engine import LEXICAL, SEMANTIC, Fusion, PersonalRanker
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
    order = np.argsort(-engine.rank(found), kind="stable")
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
    features = np.array([[1.0, 0.0, 0.0, 0.0, 2.0]])
    assert PersonalRanker((1.0, 0.0, 0.0, 0.0, 0.5))(features)[0] == pytest.approx(2.0)


def test_fit_personal_learns_to_follow_the_user_when_the_query_cannot_tell():
    """Lists where the fused score ties and the user's affinity marks the target: the fitted
    ranker weighs affinity and ranks the targets first."""
    from tworec.search.engine import Candidates
    from tworec.search.fit import QueryCandidates, fit_personal, ranks

    rng = np.random.default_rng(0)
    gathered = []
    for _ in range(60):
        n = 8
        c = Candidates(ids=list(range(n)), lexical=np.ones(n), semantic=np.full(n, 0.5),
                       lexical_rank=np.arange(1, n + 1), semantic_rank=np.arange(1, n + 1), category_match=np.zeros(n))
        target = int(rng.integers(n))
        affinity = rng.normal(0, 0.1, n)
        affinity[target] += 1.0
        gathered.append(QueryCandidates(c, target, affinity))
    fusion = Fusion("weighted", 0.5)
    personal = fit_personal(gathered, fusion)
    assert personal.weights[4] > 0
    assert (ranks(gathered, "fused_personal", fusion, personal) == 1).mean() > 0.9
    assert (ranks(gathered, "fused", fusion) == 1).mean() < 0.5
