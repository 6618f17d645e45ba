"""The search folder (``RUN/search/``, copied into each gateway version): what Search and
SimilarItems serve from, owned by ``SearchArtifact``.

    search.json            description: fusion, anonymous and personal ranking weights, SimilarItems' blend, what the fit measured
    lexical/               the BM25 index (bm25s arrays and vocabulary, the item ids: the rows of everything here)
    semantic_index/        ScaNN over the semantic vectors (towers.index.ItemIndex)
    item_vectors.npy       [items, 384] unit MiniLM vectors
    item_texts.json, categories.json (each item's stemmed category words)
    population_query.npy   [D] float32 mean two-tower query vector of the validation shoppers (the item prior)
    query_encoder.tflite   MiniLM for typed queries (checked against TensorFlow at build)

``build_search`` fits and writes it for a data folder and its retrieval model.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from pathlib import Path

import numpy as np

from tworec.artifacts import DescribedFolder
from tworec.search.engine import Fusion, Ranking, SearchEngine

SIMILAR_BLENDS = tuple(round(1.0 - 0.1 * i, 1) for i in range(11))  # semantic share of SimilarItems' score


class SearchArtifact(DescribedFolder):
    KIND = "tworec search"
    VERSION = 3  # an anonymous and a personal ranking, with the item prior's population query
    REMEDY = "build it with `tworec build-search` (or `tworec pipeline`)"
    DESCRIPTION = "search.json"
    LEXICAL = "lexical"
    SEMANTIC_INDEX = "semantic_index"
    VECTORS = "item_vectors.npy"
    TEXTS = "item_texts.json"  # what a lexical rebuild indexes
    CATEGORIES = "categories.json"
    QUERY_ENCODER = "query_encoder.tflite"
    POPULATION_QUERY = "population_query.npy"

    def __init__(self, path, described: dict):
        self.path = Path(path)
        self.fusion = Fusion(**described["fusion"])
        self.anonymous = Ranking(tuple(described["anonymous"]))
        self.personal = Ranking(tuple(described["personal"]))
        self.similar_semantic_share = float(described["similar_semantic_share"])
        self.depth = int(described["depth"])
        self.described = described

    @classmethod
    def save(cls, path, engine: SearchEngine, texts: list, query_encoder: bytes, similar_semantic_share: float,
             fit: dict) -> "SearchArtifact":
        """``texts``: the items' texts, in ``engine.item_ids`` order."""
        path = Path(path)
        if path.exists():
            shutil.rmtree(path)
        path.mkdir(parents=True)
        engine.lexical.index.save(path / cls.LEXICAL)
        engine.semantic_index.save(str(path / cls.SEMANTIC_INDEX))
        np.save(path / cls.VECTORS, engine.vectors)
        np.save(path / cls.POPULATION_QUERY, engine.population_query)
        if engine.lexical.index.item_ids != engine.item_ids:
            raise ValueError("the lexical index's rows are not the engine's: save a freshly built engine")
        (path / cls.TEXTS).write_text(json.dumps(list(texts)))
        (path / cls.CATEGORIES).write_text(json.dumps([sorted(c) for c in engine.categories]))
        (path / cls.QUERY_ENCODER).write_bytes(query_encoder)
        described = {"fusion": asdict(engine.fusion), "anonymous": list(engine.anonymous.weights),
                     "personal": list(engine.personal.weights),
                     "similar_semantic_share": similar_semantic_share, "depth": engine.depth, "fit": fit}
        cls.describe(path, described)
        return cls(path, described)

    @classmethod
    def load(cls, path) -> "SearchArtifact":
        return cls(path, cls.described(path))

    def engine(self) -> SearchEngine:
        """A fresh engine over the saved catalog (its own mutable copies)."""
        from tworec.search.lexical import LexicalIndex, LiveLexical
        from tworec.towers.index import ItemIndex

        lexical = LexicalIndex.load(self.path / self.LEXICAL)
        item_ids = lexical.item_ids
        texts = dict(zip(item_ids, json.loads((self.path / self.TEXTS).read_text())))
        return SearchEngine(LiveLexical(lexical, texts), ItemIndex.load(str(self.path / self.SEMANTIC_INDEX)),
                            np.load(self.path / self.VECTORS), item_ids,
                            [set(c) for c in json.loads((self.path / self.CATEGORIES).read_text())],
                            self.fusion, self.anonymous, self.personal, np.load(self.path / self.POPULATION_QUERY),
                            self.depth)

    def query_encoder(self):
        from tworec.search.semantic import LiteQueryEncoder

        return LiteQueryEncoder((self.path / self.QUERY_ENCODER).read_bytes())


def build_search(data_dir: str, retrieval_dir: str, out: str, ranker_dir: str | None = None, log=print) -> SearchArtifact:
    """Builds both legs over the data folder's catalog, fits the fusion and the two rankings on
    validation category-path queries (the population query: their shoppers' mean; the personal
    ranking reads ``ranker_dir``'s scores, which must rank ``retrieval_dir``'s candidates; none:
    that feature is 0) and SimilarItems' blend on half the items' neighbourhoods, and writes the
    search folder ``out``."""
    import os

    from tworec.contract import Split
    from tworec.search import fit
    from tworec.search.semantic import QueryEncoder, item_vectors
    from tworec.towers.artifact import RetrievalArtifact

    ranker = None
    if ranker_dir:
        from tworec.ranking.artifact import RankerArtifact

        trained_on = RankerArtifact.load(ranker_dir).retrieval
        if os.path.realpath(trained_on) != os.path.realpath(retrieval_dir):  # a moved run folder also differs
            log(f"warning: {ranker_dir} was trained on the candidates of {trained_on}, not of {retrieval_dir}")
        ranker = fit.RankerScores(ranker_dir)
    model = RetrievalArtifact.load(retrieval_dir)
    retrieval = model.restore(data_dir)
    catalog = retrieval.catalog
    vectors = item_vectors(catalog.texts)
    encoder = QueryEncoder()
    valid = fit.split_queries(data_dir, Split.VALID, catalog, retrieval, "category_path")
    engine = fit.build_engine(catalog, vectors, population_query=valid.user_vectors.mean(0))
    gathered = fit.gather(engine, valid, encoder, model.item_embeddings, model.score_shift, ranker)
    engine.fusion, fusion_table = fit.fit_fusion(gathered)
    engine.anonymous = fit.fit_ranking(gathered, engine.fusion, with_user=False)
    engine.personal = fit.fit_ranking(gathered, engine.fusion, with_user=True)
    log(f"search fitted on {len(valid):,} validation queries: fusion {engine.fusion}, anonymous "
        f"{engine.anonymous}, personal {engine.personal}")
    rows = fit.evaluation_rows(catalog)
    half = rows[::2]  # the blend is chosen on these; evaluation reports the other half
    agreement = {share: fit.neighbourhood_agreement(fit.blended(vectors, model.item_embeddings, share), catalog, half)
                 for share in SIMILAR_BLENDS}
    share = max(agreement, key=lambda s: (agreement[s], s))
    fit_summary = {"validation_queries": len(valid), "fusion_ndcg@10": fusion_table,
                   "similar_items_agreement_by_semantic_share": {f"{s:g}": round(a, 4) for s, a in agreement.items()}}
    artifact = SearchArtifact.save(out, engine, catalog.texts, encoder.tflite(), share, fit_summary)
    log(f"search over {len(engine.item_ids):,} items (fusion {engine.fusion.form}, lexical weight "
        f"{engine.fusion.lexical_weight}) → {out}")
    return artifact
