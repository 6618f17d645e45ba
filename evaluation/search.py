"""``tworec eval-search``: personalised product search measured on queries built from the data.

    tworec eval-search --data RUN/data --out RUN/eval_search [--retrieval RUN/retrieval] [--search DIR]

Fits the search folder on the validation split (search/artifact.py ``build_search``) unless
``--search`` names one, then scores the test split with each arm (search/fit.py ``ARMS``:
``bm25``, ``semantic``, ``fused_legs``, ``fused`` (what Search answers without a user),
``fused_personal``): NDCG@10, HR@10 and HR@100 with 95% bootstrap intervals over users, for all
and for cold (held-out) targets, and the paired differences of ``fit.COMPARED`` with 95% paired
bootstrap intervals, under the category-path protocol and, on Amazon data, the review-summary
protocol (search/fit.py). Also the neighbourhood agreement of SimilarItems'
space before (the collaborative retrieval space) and after (the chosen blend), and of raw
MiniLM, on the half of the items the blend was not chosen on; and example answers.

Writes ``OUT/metrics.json`` (``SearchEvaluation``).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from tworec.artifacts import DescribedFolder
from tworec.contract import Split
from tworec.evaluation.artifact import EvalResults

EXAMPLE_QUERIES = ("a space opera with starships",)
# An item upserted at serving time, and the neighbours SimilarItems gives it.
EXAMPLE_ITEM = {"title": "Galaxy Quest 2 (2026)", "description": "A space comedy: the crew of a starship from a "
                "cancelled TV show fights a real alien war.", "categories": ("Comedy", "Sci-Fi")}


class SearchEvaluation(DescribedFolder):
    KIND = "tworec search evaluation"
    VERSION = 1
    REMEDY = "run `tworec eval-search`"
    DESCRIPTION = EvalResults.METRICS  # the shape: OUT/metrics.json, like tworec eval's

    @classmethod
    def save(cls, path, results: dict) -> dict:
        Path(path).mkdir(parents=True, exist_ok=True)
        cls.describe(path, results)
        return results


def eval_search(data_dir: str, out_dir: str, retrieval_dir: str | None = None, search_dir: str | None = None,
                reviews: str | None = None, max_queries: int | None = None, ranker_dir: str | None = None,
                log=print) -> dict:
    """``retrieval_dir`` and ``ranker_dir`` default to the run's, beside the data folder (no
    ranker there: the personal ranking's ranker score is 0); ``max_queries``: the first ones in
    time of the test split (default ``fit.MAX_QUERIES``)."""
    from tworec.ranking.artifact import RankerArtifact
    from tworec.search import fit
    from tworec.search.artifact import SearchArtifact, build_search
    from tworec.search.semantic import QueryEncoder
    from tworec.towers.artifact import RetrievalArtifact

    run = os.path.dirname(os.path.abspath(data_dir))
    retrieval_dir = retrieval_dir or os.path.join(run, "retrieval")
    if ranker_dir is None and RankerArtifact.exists(os.path.join(run, "ranker")):
        ranker_dir = os.path.join(run, "ranker")
    if search_dir is None:
        search_dir = os.path.join(out_dir, "search")
        build_search(data_dir, retrieval_dir, search_dir, ranker_dir, log)
    artifact = SearchArtifact.load(search_dir)
    model = RetrievalArtifact.load(retrieval_dir)
    retrieval = model.restore(data_dir)
    catalog = retrieval.catalog
    engine = artifact.engine()
    if engine.item_ids != list(catalog.item_ids):
        raise ValueError(f"{search_dir} was built for another catalog than {data_dir}'s")
    encoder = QueryEncoder()
    ranker = fit.RankerScores(ranker_dir) if ranker_dir else None
    reviews = reviews or fit.reviews_file(data_dir)
    results = {}
    for protocol in ("category_path", "review_summary"):
        if protocol == "review_summary" and not reviews:
            continue
        queries = fit.split_queries(data_dir, Split.TEST, catalog, retrieval, protocol, reviews,
                                    max_queries or fit.MAX_QUERIES)
        gathered = fit.gather(engine, queries, encoder, model.item_embeddings, model.score_shift, ranker)
        results[protocol] = {}
        rank = {arm: fit.ranks(gathered, arm, artifact.fusion, artifact.anonymous, artifact.personal)
                for arm in fit.ARMS}
        for arm in fit.ARMS:
            results[protocol][arm] = {segment: fit.metrics(rank[arm], queries.users, mask)
                                      for segment, mask in queries.segments.items()}
        results[protocol]["differences"] = {
            f"{arm}-{baseline}": {segment: fit.paired_difference(rank[arm], rank[baseline], queries.users, mask)
                                  for segment, mask in queries.segments.items()}
            for arm, baseline in fit.COMPARED}
        found = np.mean([g.target >= 0 for g in gathered]) if gathered else 0.0
        results[protocol]["queries"] = len(queries)
        results[protocol]["target_among_candidates"] = round(float(found), 4)
        log(f"{protocol}: {len(queries):,} test queries; NDCG@10 " + ", ".join(
            f"{arm} {results[protocol][arm]['all'].get('ndcg@10', 0):.4f}" for arm in fit.ARMS))
    rows = fit.evaluation_rows(catalog)[1::2]
    vectors = engine.vectors
    results["neighbourhood_agreement"] = {
        "similar_items_before": round(fit.neighbourhood_agreement(model.item_embeddings, catalog, rows), 4),
        "similar_items": round(fit.neighbourhood_agreement(
            fit.blended(vectors, model.item_embeddings, artifact.similar_semantic_share), catalog, rows), 4),
        "raw_minilm": round(fit.neighbourhood_agreement(vectors, catalog, rows), 4),
        "items": int(len(rows)), "similar_semantic_share": artifact.similar_semantic_share,
    }
    results["examples"] = examples(engine, encoder, retrieval, model, artifact.similar_semantic_share)
    results["fusion"] = artifact.described["fusion"]
    results["anonymous"] = artifact.described["anonymous"]
    results["personal"] = artifact.described["personal"]
    results["ranker"] = ranker_dir
    return SearchEvaluation.save(out_dir, results)


def examples(engine, encoder, retrieval, model, share: float, k: int = 5) -> dict:
    """Text queries and a new item's neighbours, before (the collaborative space, as SimilarItems
    answered) and after (the chosen blend)."""
    from tworec.search.semantic import item_vectors
    from tworec.text import compose_item_text
    from tworec.towers.new_items import embed_new_items

    catalog = retrieval.catalog
    collaborative = model.item_embeddings / np.maximum(np.linalg.norm(model.item_embeddings, axis=1, keepdims=True), 1e-12)
    semantic = engine.vectors

    def top(semantic_query, collaborative_query, alpha):
        scores = alpha * (semantic @ semantic_query) + (1 - alpha) * (collaborative @ collaborative_query)
        return [catalog.titles[r] for r in np.argsort(-scores)[:k]]

    out = {}
    item = EXAMPLE_ITEM
    text = compose_item_text(item["title"], item["description"], item["categories"])
    sem = item_vectors([text])[0]
    col = embed_new_items(retrieval.model, catalog, retrieval.config, [item["title"]], [item["description"]],
                          [item["categories"]])[0]
    col = col / max(np.linalg.norm(col), 1e-12)
    out[f"similar to a new item: {item['title']}"] = {"before": top(sem, col, 0.0), "after": top(sem, col, share)}
    for query in EXAMPLE_QUERIES:
        # A text is matched as Search matches it without a user (a bare text has no useful
        # collaborative embedding); before: the item tower's embedding of the text.
        col = embed_new_items(retrieval.model, catalog, retrieval.config, [query])[0]
        col = col / max(np.linalg.norm(col), 1e-12)
        found = engine.candidates(query, encoder(query))
        order = np.argsort(-found.fused, kind="stable")[:k]
        out[f"SimilarItems(text={query!r})"] = {"before": top(encoder(query), col, 0.0),
                                               "after": [catalog.titles[engine.row_of[found.ids[i]]] for i in order]}
    return out
