"""Search queries built from data we have, the search engine built for a data folder, and its
fitted parts: the fusion (form and weight, by validation NDCG@10) and the two rankings of the fused
candidates, anonymous and personal (listwise on validation lists), with the population query that
gives their item prior.

Two query protocols:

- ``category_path`` (after Ai et al., SIGIR 2017): for each interaction, the query is the words
  of the target item's categories below the root (categories on more than half the catalog's
  items, e.g. Amazon's "Magazine Subscriptions", are the root); the target is the one relevant
  item and the user's earlier items are the personal context.
- ``review_summary`` (Amazon): the shopper's own review summary of the target is the query.

Each query carries the user's two-tower query vector at that moment (the personal context) and
the items the user had before, which are left out of the answer as Recommend leaves them out.
"""
from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tworec.contract import Split
from tworec.search.engine import QUERY_FEATURES, USER_FEATURES, Fusion, Ranking, SearchEngine, UserScores, category_tokens
from tworec.search.semantic import unit

DEPTH = 200  # candidates per leg
FUSION_WEIGHTS = tuple(round(0.1 * i, 1) for i in range(11))


@dataclass
class SearchQueries:
    """Queries of one split: text, target catalog row, user, the user's query vector in the
    retrieval space [Q, D], rows each user had before, segments (all, cold), and what the ranker
    reads of the user ([Q] each: user row, history length, hours since the last item)."""

    texts: list
    targets: np.ndarray
    users: list
    user_vectors: np.ndarray
    had_before: list
    segments: dict
    user_rows: np.ndarray
    history_counts: np.ndarray
    hours_since_last: np.ndarray

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, keep: np.ndarray) -> "SearchQueries":
        idx = np.flatnonzero(keep)
        return SearchQueries([self.texts[i] for i in idx], self.targets[idx], [self.users[i] for i in idx],
                             self.user_vectors[idx], [self.had_before[i] for i in idx],
                             {k: v[idx] for k, v in self.segments.items()}, self.user_rows[idx],
                             self.history_counts[idx], self.hours_since_last[idx])


def root_categories(catalog) -> set:
    """Categories on more than half of the items: the path's root, which says nothing."""
    counts = np.bincount(catalog.category_ids[catalog.category_ids > 0].ravel(), minlength=len(catalog.categories) + 1)
    return {catalog.categories[i - 1] for i in np.flatnonzero(counts > catalog.size / 2) if i > 0}


def item_categories(catalog, row: int) -> list:
    return [catalog.categories[i - 1] for i in catalog.category_ids[row] if i > 0]


MAX_QUERIES = 10_000  # per split: enough for a 95% interval of ±0.01 on NDCG; the first ones in time


def split_queries(data_dir: str, split: Split, catalog, retrieval, protocol: str,
                  reviews: str | None = None, limit: int = MAX_QUERIES) -> SearchQueries:
    """The ``protocol`` queries of ``split`` (its first ``limit`` examples); ``retrieval``: a
    towers RestoredRetrieval (the user's query vector); ``reviews``: the Amazon reviews file
    (``*_5.json.gz``) for ``review_summary``."""
    from tworec.towers.scoring import JudgedSplit

    judged = JudgedSplit(data_dir, "temporal", catalog, split, limit=None if protocol == "review_summary" else limit)
    split = judged.queries(retrieval.model, retrieval.lookups, retrieval.config.history_length)
    if protocol == "category_path":
        root = root_categories(catalog)
        texts = [" ".join(c for c in item_categories(catalog, t) if c not in root) for t in judged.targets]
    elif protocol == "review_summary":
        summaries = review_summaries(reviews)
        texts = [summaries.get((e["user_id"], e["item_id"]), "") for e in judged.examples]
    else:
        raise ValueError(f"unknown protocol {protocol!r}")
    keep = np.array([bool(t.strip()) for t in texts]) & ~judged.repeats
    queries = SearchQueries(texts, judged.targets, [e["user_id"] for e in judged.examples], split.query,
                            [judged.had_before(i) for i in range(len(judged))],
                            {"all": np.ones(len(texts), bool), "cold": catalog.cold[judged.targets]},
                            split.user_row, split.history_count, split.hours_since_last)
    return queries.subset(keep)


def review_summaries(path: str | None) -> dict:
    """{(user, item): review summary} from an Amazon 2018 reviews file (5-core json lines)."""
    if not path:
        return {}
    out = {}
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        for line in handle:
            review = json.loads(line)
            summary = (review.get("summary") or "").strip()
            if summary:
                out[(review["reviewerID"], review["asin"])] = summary
    return out


def reviews_file(data_dir: str) -> str | None:
    """The reviews file beside the raw Amazon input a data folder was built from, if any."""
    stats = json.loads((Path(data_dir) / "stats.json").read_text())
    if not str(stats.get("dataset", "")).startswith("amazon") or not stats.get("input"):
        return None
    found = sorted(Path(stats["input"]).glob("*_5.json.gz"))
    return str(found[0]) if found else None


def build_engine(catalog, item_vectors: np.ndarray, fusion: Fusion = Fusion(), anonymous: Ranking = Ranking(),
                 personal: Ranking = Ranking(), population_query: np.ndarray | None = None, depth: int = DEPTH,
                 lexical=None, semantic_index=None) -> SearchEngine:
    """The engine over ``catalog``'s items with their semantic ``item_vectors``."""
    from tworec.search.lexical import LexicalIndex, LiveLexical
    from tworec.towers.index import IndexConfig, ItemIndex

    texts = dict(zip(catalog.item_ids, catalog.texts))
    lexical = lexical or LexicalIndex.build(catalog.item_ids, catalog.texts)
    semantic_index = semantic_index or ItemIndex.build(item_vectors, catalog.item_ids, IndexConfig(num_neighbors=depth))
    categories = [category_tokens(item_categories(catalog, r)) for r in range(catalog.size)]
    population_query = np.zeros(0, np.float32) if population_query is None else population_query
    return SearchEngine(LiveLexical(lexical, texts), semantic_index, item_vectors, catalog.item_ids, categories,
                        fusion, anonymous, personal, population_query, depth)


class RankerScores:
    """The DCN ranker's score of a query's user for candidate rows, from the same inputs the
    gateway sends Triton (no live counts: Search does not send them)."""

    def __init__(self, ranker_dir: str):
        from tworec.ranking.artifact import RankerArtifact

        self.score, self.tables = RankerArtifact.load(ranker_dir).serving()

    def __call__(self, queries: SearchQueries, i: int, rows: np.ndarray, retrieval_scores: np.ndarray) -> np.ndarray:
        from tworec.ranking.features import ranker_rows

        user = queries.user_rows[i]
        return self.score(ranker_rows(self.tables, user, self.tables.user_attribute_rows[user], queries.user_vectors[i],
                                      queries.history_counts[i], queries.hours_since_last[i], rows,
                                      retrieval_scores)).astype(np.float64)


@dataclass
class QueryCandidates:
    """What every arm needs of one query: its candidates, the target's index among them (-1:
    not found), the population's two-tower score of each (the prior) and the user's scores."""

    candidates: object
    target: int
    prior: np.ndarray
    user: UserScores


def gather(engine: SearchEngine, queries: SearchQueries, encode, retrieval_items: np.ndarray,
           retrieval_shift: np.ndarray, ranker: RankerScores | None = None) -> list:
    """Candidates of every query (``encode``: text → semantic vector), the user's items left out;
    without ``ranker`` the ranker's score is 0."""
    row_of = engine.row_of
    out = []
    for i, text in enumerate(queries.texts):
        had = {engine.item_ids[r] for r in queries.had_before[i]}
        found = engine.candidates(text, encode(text), allowed=lambda item, had=had: item not in had)
        rows = np.array([row_of[j] for j in found.ids], np.int64)
        items, shift = retrieval_items[rows], retrieval_shift[rows]
        affinity = items @ queries.user_vectors[i] + shift
        scores = ranker(queries, i, rows, affinity) if ranker is not None and len(rows) else np.zeros(len(rows))
        target = engine.item_ids[queries.targets[i]]
        out.append(QueryCandidates(found, found.ids.index(target) if target in found.ids else -1,
                                   items @ engine.population_query + shift, UserScores(affinity, scores)))
    return out


# fused_legs: the legs' fusion alone; fused: the ranking without a user (query-match features and
# the item prior); fused_personal: with the user.
ARMS = ("bm25", "semantic", "fused_legs", "fused", "fused_personal")


def ranks(gathered: list, arm: str, fusion: Fusion | None = None, anonymous: Ranking | None = None,
          personal: Ranking | None = None) -> np.ndarray:
    """The target's rank (1 = first, 0 = not in the arm's list) per query (ARMS)."""
    out = np.zeros(len(gathered), np.int64)
    for q, g in enumerate(gathered):
        c = g.candidates
        if g.target < 0:
            continue
        if arm == "bm25":
            score = np.where(c.lexical_rank > 0, -c.lexical_rank.astype(np.float64), -np.inf)
        elif arm == "semantic":
            score = np.where(c.semantic_rank > 0, -c.semantic_rank.astype(np.float64), -np.inf)
        elif arm == "fused_legs":
            score = c.fuse(fusion or Fusion())
        elif arm == "fused":
            c.fuse(fusion or Fusion())
            score = (anonymous or Ranking.fused_only(QUERY_FEATURES))(c.features(g.prior))
        elif arm == "fused_personal":
            c.fuse(fusion or Fusion())
            score = (personal or Ranking.fused_only(USER_FEATURES))(c.features(g.prior, g.user))
        else:
            raise ValueError(f"unknown arm {arm!r}: one of {ARMS}")
        if not np.isfinite(score[g.target]):
            continue
        ahead = (score > score[g.target]) | ((score == score[g.target]) & (np.arange(len(score)) < g.target))
        out[q] = int(ahead.sum()) + 1
    return out


def metrics(rank: np.ndarray, users: list, mask: np.ndarray, rounds: int = 1000, seed: int = 0) -> dict:
    """NDCG@10, HR@10, HR@100 with 95% bootstrap intervals over users."""
    rank, users = rank[mask], np.asarray(users, object)[mask]
    if not len(rank):
        return {"count": 0}
    values = {"ndcg@10": gains(rank), "hitrate@10": (rank > 0) & (rank <= 10), "hitrate@100": (rank > 0) & (rank <= 100)}
    out = {"count": int(len(rank))}
    for (name, x), interval in zip(values.items(), user_intervals(list(values.values()), users, rounds, seed)):
        out[name] = round(float(x.mean()), 4)
        out[f"ci95_{name}"] = interval
    return out


def user_intervals(values: list, users: np.ndarray, rounds: int = 1000, seed: int = 0) -> list:
    """The 95% bootstrap interval of the per-query mean of each of ``values`` ([Q] arrays), users
    resampled with all their queries: [[lo, hi], ...]."""
    unique, index = np.unique(users, return_inverse=True)
    per_user = np.stack([np.bincount(index, weights=np.asarray(x, np.float64), minlength=len(unique))
                         for x in (*values, np.ones(len(users)))])
    draws = np.random.default_rng(seed).integers(0, len(unique), (rounds, len(unique)))
    totals = per_user[:, draws].sum(axis=2)
    return [[round(float(v), 4) for v in np.percentile(t / totals[-1], [2.5, 97.5])] for t in totals[:-1]]


def gains(rank: np.ndarray) -> np.ndarray:
    """Each query's NDCG@10 (one relevant item: 1 / log2(rank + 1) within the top 10)."""
    return np.where((rank > 0) & (rank <= 10), 1.0 / np.log2(np.maximum(rank, 1) + 1.0), 0.0)


def ndcg(rank: np.ndarray) -> float:
    return float(gains(rank).mean())


def paired_difference(rank: np.ndarray, baseline: np.ndarray, users: list, mask: np.ndarray, rounds: int = 1000,
                      seed: int = 0) -> dict:
    """NDCG@10 of ``rank`` minus ``baseline`` on the same queries, with a 95% paired bootstrap
    interval over users, and the relative difference."""
    rank, baseline, users = rank[mask], baseline[mask], np.asarray(users, object)[mask]
    if not len(rank):
        return {"count": 0}
    difference = gains(rank) - gains(baseline)
    base = float(gains(baseline).mean())
    return {"count": int(len(rank)), "ndcg@10": round(float(difference.mean()), 4),
            "ci95_ndcg@10": user_intervals([difference], users, rounds, seed)[0],
            "relative": round(float(difference.mean()) / base, 4) if base > 0 else None}


COMPARED = (("fused", "bm25"), ("fused_legs", "bm25"), ("fused_personal", "fused"))  # (arm, baseline)


def fit_fusion(gathered: list) -> tuple[Fusion, dict]:
    """The form and lexical weight with the best NDCG@10 on ``gathered`` (validation queries)."""
    table = {}
    for form in ("weighted", "rrf"):
        for w in FUSION_WEIGHTS:
            table[(form, w)] = ndcg(ranks(gathered, "fused_legs", Fusion(form, w)))
    (form, w), _ = max(table.items(), key=lambda kv: (kv[1], kv[0][0] == "weighted", -abs(kv[0][1] - 0.5)))
    return Fusion(form, w), {f"{f}:{w}": round(v, 4) for (f, w), v in table.items()}


def fit_ranking(gathered: list, fusion: Fusion, with_user: bool, iterations: int = 300, l2: float = 1e-3) -> Ranking:
    """The weights of QUERY_FEATURES (``with_user``: USER_FEATURES) maximising the softmax
    likelihood of each validation query's target among its candidates (queries whose target was
    not retrieved teach nothing). A feature constant over every list (the ranker's score when none
    was given) keeps weight 0."""
    lists = []
    for g in gathered:
        if g.target < 0:
            continue
        g.candidates.fuse(fusion)
        lists.append((g.candidates.features(g.prior, g.user if with_user else None), g.target))
    if not lists:
        return Ranking.fused_only(USER_FEATURES if with_user else QUERY_FEATURES)
    # Standardise features over all candidates so one step size fits them all; fold back after.
    stacked = np.concatenate([x for x, _ in lists])
    mean, std = stacked.mean(0), stacked.std(0)
    constant = std < 1e-9
    std = np.where(constant, 1.0, std)
    w = np.zeros(stacked.shape[1])
    w[0] = 1.0
    for _ in range(iterations):
        grad = -l2 * w
        for x, t in lists:
            z = np.where(constant, 0.0, (x - mean) / std)
            s = z @ w
            p = np.exp(s - s.max())
            p /= p.sum()
            grad += z[t] - p @ z
        w += 0.5 * grad / len(lists)
    return Ranking(tuple(float(v) for v in w / std))


def neighbourhood_agreement(vectors: np.ndarray, catalog, rows: np.ndarray, k: int = 10) -> float:
    """The share of each item's ``k`` nearest items (cosine in ``vectors``, itself left out) that
    share a category with it, root categories left out, over ``rows``. Scores rows in chunks
    within towers.scoring's SCORE_BUDGET, so memory does not grow with rows × items."""
    from tworec.towers.scoring import query_chunk

    root = root_categories(catalog)
    cats = [set(item_categories(catalog, r)) - root for r in range(catalog.size)]
    unit_vectors = unit(vectors)
    shares = []
    step = query_chunk(len(unit_vectors), cap=256)
    for start in range(0, len(rows), step):
        chunk = rows[start:start + step]
        scores = unit_vectors[chunk] @ unit_vectors.T
        scores[np.arange(len(chunk)), chunk] = -np.inf
        top = np.argpartition(scores, -k, axis=1)[:, -k:]
        for r, neighbours in zip(chunk, top):
            shares.append(np.mean([bool(cats[r] & cats[n]) for n in neighbours]))
    return float(np.mean(shares)) if shares else 0.0


def blended(semantic: np.ndarray, collaborative: np.ndarray, alpha: float) -> np.ndarray:
    """[items, S + C] float32 vectors whose dot products are alpha × semantic cosine + (1 - alpha) ×
    collaborative cosine."""
    return np.concatenate([np.float32(np.sqrt(alpha)) * unit(semantic),
                           np.float32(np.sqrt(1 - alpha)) * unit(collaborative)], 1)


def evaluation_rows(catalog, limit: int = 2000, seed: int = 0) -> np.ndarray:
    """Items whose neighbourhoods are scored: those with a category below the root."""
    root = root_categories(catalog)
    rows = np.array([r for r in range(catalog.size) if set(item_categories(catalog, r)) - root], np.int64)
    rng = np.random.default_rng(seed)
    return np.sort(rng.permutation(rows)[:limit])
