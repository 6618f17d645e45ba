"""Hybrid search: the lexical and the semantic leg each retrieve candidates, a fusion fitted on
validation queries merges them, and a ranking fitted on search-style lists orders them: without
a user by the query-match features and the item prior, with one also by what the shopper has done.

    engine = SearchEngine(lexical, semantic_index, vectors, item_ids, categories, fusion, anonymous,
                          personal, population_query)
    found = engine.candidates(query_text, query_vector, allowed)     # both legs, fused
    scores = engine.rank(found, prior)                              # an anonymous shopper
    scores = engine.rank(found, prior, UserScores(affinity, ranker))  # a known one

``prior``, ``affinity`` and ``ranker`` are scores of the candidates that the caller owns: the
two-tower score of the population query (the average shopper, ``engine.population_query``) and
of this user, and the DCN ranker's score for this user. ``Fusion`` and the two ``Ranking``s are
the fitted parts (search/fit.py); the engine is what evaluation and the gateway both run.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field

import numpy as np

LEXICAL, SEMANTIC = "lexical", "semantic"
QUERY_FEATURES = ("fused", "lexical", "semantic", "category_match", "prior")
USER_FEATURES = QUERY_FEATURES + ("affinity", "ranker")


@dataclass(frozen=True)
class Fusion:
    """How the legs merge. ``rrf``: lexical_weight / (rrf_k + lexical rank) + (1 - lexical_weight)
    / (rrf_k + semantic rank), a leg that did not find the item adding 0. ``weighted``:
    lexical_weight × BM25 / the query's best BM25 + (1 - lexical_weight) × cosine."""

    form: str = "weighted"
    lexical_weight: float = 0.5
    rrf_k: int = 60

    def __call__(self, lexical: np.ndarray, semantic: np.ndarray, lexical_rank: np.ndarray,
                 semantic_rank: np.ndarray) -> np.ndarray:
        w = self.lexical_weight
        if self.form == "rrf":
            lex = np.where(lexical_rank > 0, 1.0 / (self.rrf_k + lexical_rank), 0.0)
            sem = np.where(semantic_rank > 0, 1.0 / (self.rrf_k + semantic_rank), 0.0)
            return w * lex + (1 - w) * sem
        top = float(lexical.max()) if len(lexical) else 0.0
        return w * (lexical / top if top > 0 else lexical) + (1 - w) * semantic


@dataclass(frozen=True)
class Ranking:
    """A linear score over features, fitted listwise on validation queries (search/fit.py
    ``fit_ranking``). QUERY_FEATURES: the candidate's fused score, BM25 relative to the query's
    best, cosine, the share of query words in the item's categories and the item prior (the
    population query's two-tower score for the item: what the average shopper buys, also for a new
    item through its content embedding). USER_FEATURES add the user's two-tower affinity beyond the
    prior and the DCN ranker's score for the user."""

    weights: tuple = (1.0, 0.0, 0.0, 0.0, 0.0)

    def __call__(self, features: np.ndarray) -> np.ndarray:
        return features @ np.asarray(self.weights, np.float64)

    @classmethod
    def fused_only(cls, features: tuple) -> "Ranking":
        """The ranking by the fused score alone, over ``features`` (QUERY_ or USER_FEATURES)."""
        return cls((1.0,) + (0.0,) * (len(features) - 1))


@dataclass(frozen=True)
class UserScores:
    """A user's scores of one query's candidates [candidates]: the two-tower score (query · item
    + shift) and the DCN ranker's score."""

    affinity: np.ndarray
    ranker: np.ndarray


@dataclass
class Candidates:
    """One query's candidates: item ids and, per candidate, each leg's score, its rank in each leg
    (0: that leg did not find it) and the category match."""

    ids: list
    lexical: np.ndarray
    semantic: np.ndarray
    lexical_rank: np.ndarray
    semantic_rank: np.ndarray
    category_match: np.ndarray
    fused: np.ndarray = field(default=None)

    def features(self, prior: np.ndarray, user: UserScores | None = None) -> np.ndarray:
        """[candidates, QUERY_FEATURES], or with ``user`` [candidates, USER_FEATURES]; ``prior``:
        the population's two-tower score per candidate."""
        top = float(self.lexical.max()) if len(self.lexical) else 0.0
        columns = [self.fused, self.lexical / top if top > 0 else self.lexical, self.semantic, self.category_match, prior]
        if user is not None:
            columns += [user.affinity - prior, user.ranker]
        return np.stack(columns, 1) if len(self.ids) else np.zeros((0, len(columns)))

    def fuse(self, fusion: Fusion) -> np.ndarray:
        """Sets ``fused`` by ``fusion`` (fitting and evaluation try several) and returns it."""
        self.fused = fusion(self.lexical, self.semantic, self.lexical_rank, self.semantic_rank)
        return self.fused

    def legs(self, i: int) -> list:
        return [leg for leg, rank in ((LEXICAL, self.lexical_rank[i]), (SEMANTIC, self.semantic_rank[i])) if rank > 0]


class SearchEngine:
    """The two legs over one catalog, their fusion and the two rankings (anonymous, personal).

    ``lexical``: a search.lexical.LiveLexical; ``semantic_index``: a towers.index.ItemIndex over
    ``vectors`` [items, 384] (unit, the semantic space) with ``item_ids``; ``categories``: each
    item's category token set (stemmed words); ``population_query`` [D]: the mean two-tower query
    vector of the validation shoppers (the item prior's query). ``upsert`` and ``remove`` keep all
    of it current."""

    def __init__(self, lexical, semantic_index, vectors: np.ndarray, item_ids: list, categories: list,
                 fusion: Fusion, anonymous: Ranking, personal: Ranking, population_query: np.ndarray,
                 candidates: int = 200):
        self.lexical = lexical
        self.semantic_index = semantic_index
        self.vectors = np.asarray(vectors, np.float32)
        self.item_ids = list(item_ids)
        self.row_of = {item: i for i, item in enumerate(self.item_ids)}
        self.categories = list(categories)
        self.fusion = fusion
        self.anonymous = anonymous
        self.personal = personal
        self.population_query = np.asarray(population_query, np.float32)
        self.depth = candidates
        self.removed: set = set()
        self._lock = threading.Lock()

    def candidates(self, query: str, query_vector: np.ndarray, allowed=None) -> Candidates:
        """Each leg's top ``depth`` items (``allowed(id)`` False: left out), merged and fused."""
        from tworec.search.lexical import tokenize

        scores, index = self.lexical.scores(query)
        lexical_top = [index.item_ids[r] for r in _top(scores, self.depth * 2) if scores[r] > 0]
        with self._lock:
            vectors, row_of, removed = self.vectors, self.row_of, self.removed
            size = self.semantic_index.size
        semantic_top, _ = self.semantic_index.search(query_vector, min(size, self.depth * 2), with_shift=False)
        keep = (lambda i: i in row_of and i not in removed and (allowed is None or allowed(i)))
        lexical_top = [i for i in lexical_top if keep(i)][: self.depth]
        semantic_top = [i for i in semantic_top if keep(i)][: self.depth]
        ids = list(dict.fromkeys(lexical_top + semantic_top))
        lexical_rank = {i: r + 1 for r, i in enumerate(lexical_top)}
        semantic_rank = {i: r + 1 for r, i in enumerate(semantic_top)}
        rows = np.array([row_of[i] for i in ids], np.int64)
        words = set(tokenize([query])[0])
        match = np.array([len(words & self.categories[r]) / len(words) if words else 0.0 for r in rows])
        lex = np.array([scores[index.row_of[i]] if i in index.row_of else 0.0 for i in ids], np.float64)
        out = Candidates(ids, lex, (vectors[rows] @ query_vector).astype(np.float64) if len(rows) else np.zeros(0),
                         np.array([lexical_rank.get(i, 0) for i in ids]), np.array([semantic_rank.get(i, 0) for i in ids]),
                         match)
        out.fuse(self.fusion)
        return out

    def rank(self, candidates: Candidates, prior: np.ndarray, user: UserScores | None = None) -> np.ndarray:
        """The candidates' final scores: the anonymous ranking, or with ``user`` the personal one."""
        if user is None:
            return self.anonymous(candidates.features(prior))
        return self.personal(candidates.features(prior, user))

    def upsert(self, item_ids: list, texts: list, vectors: np.ndarray, categories: list) -> None:
        """New or changed items: searchable by the semantic leg at once, by the lexical leg after
        its background rebuild."""
        vectors = np.asarray(vectors, np.float32)
        with self._lock:
            all_vectors, ids, cats = self.vectors.copy(), list(self.item_ids), list(self.categories)
            for item, vector, category in zip(item_ids, vectors, categories):
                if item in self.row_of:
                    r = self.row_of[item]
                    all_vectors[r], cats[r] = vector, category
                else:
                    ids.append(item)
                    all_vectors = np.concatenate([all_vectors, vector[None]], 0)
                    cats.append(category)
            self.semantic_index.upsert(item_ids, vectors)
            self.vectors, self.item_ids, self.categories = all_vectors, ids, cats
            self.row_of = {item: i for i, item in enumerate(ids)}
            self.removed.difference_update(item_ids)
        self.lexical.upsert(dict(zip(item_ids, texts)))

    def remove(self, item_ids) -> None:
        with self._lock:
            self.removed = self.removed | set(item_ids)
        self.lexical.remove(item_ids)


def _top(scores: np.ndarray, k: int) -> np.ndarray:
    k = min(k, len(scores))
    if k <= 0:
        return np.zeros(0, np.int64)
    top = np.argpartition(-scores, k - 1)[:k]
    return top[np.argsort(-scores[top], kind="stable")]


def category_tokens(categories) -> set:
    """The stemmed words of an item's categories (what the category match counts)."""
    from tworec.search.lexical import tokenize

    return set(tokenize([" ".join(categories)])[0]) if categories else set()
