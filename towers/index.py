"""A ScaNN index over item embeddings, with the id mapping, saved to disk and updatable live.

Defaults follow ScaNN's guidance for the catalog size: brute force (exact) below ~20k items, a
partitioned tree with asymmetric hashing and exact re-ranking above. A tree's leaves to search
and candidates to re-score are chosen at build time for a recall target on held-out queries, so
the search cost follows the catalog's structure rather than a fixed share of leaves; churn
(upserts, deletes) is watched with ScaNN's own health statistics and the tree re-trained when its
partitions drift. ScaNN's docids carry the item ids, so ``upsert``/``delete`` work by id and a new
item is found by the next search.

A per-item score shift (the retrieval model's new-item offset) is stored as one extra coordinate
of each item vector: a retrieval query carries 1 there, so ScaNN's dot product adds the shift to
the item's score; an item-to-item query carries 0 and ranks by embedding similarity alone.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tworec import settings
from tworec.artifacts import DescribedFolder
from tworec.settings import setting


@dataclass(frozen=True)
class IndexConfig:
    num_neighbors: int = setting(200, "results per search by default: the gateway's candidates")
    brute_force_below: int = setting(20_000, "catalogs smaller than this are searched exactly")
    num_leaves: int = setting(0, "tree partitions; 0: about sqrt(items)")
    leaves_to_search: int = setting(0, "partitions searched per query; 0: the fewest that reach recall_target on "
                                       "held-out queries, chosen at build time (a fifth without queries)")
    recall_target: float = setting(0.95, "recall@10 against exact search that the build tunes the search for "
                                         "(leaves to search, candidates re-scored)")
    recall_margin: float = setting(0.005, "tuning aims this far above recall_target: about recall's standard error on "
                                          "1,000 queries, so the target holds on queries the build never saw")
    tuning_queries: int = setting(1000, "held-out queries the build measures recall on")
    reorder: int = setting(500, "candidates re-scored exactly after the quantized search; the build doubles it, up "
                                "to reorder_max, while the leaves alone cannot reach recall_target")
    reorder_max: int = setting(8000, "the most candidates a tuned search re-scores: bounds the re-scoring's "
                                      "share of a search's latency")
    reorder_dtype: str = setting("float32", "the re-scoring's stored vectors: float32, or int8 (4x smaller, "
                                            "slightly less exact)", choices=("float32", "int8"))
    training_sample: int = setting(250_000, "items the partitioning and quantization are trained on")
    dimensions_per_block: int = setting(2, "asymmetric hashing: dimensions per codebook block")
    anisotropic_threshold: float = setting(0.2, "anisotropic quantization's threshold (ScaNN's advice for "
                                                "dot-product search)")
    rebalance_above: float = setting(0.5, "partition imbalance (ScaNN's weighted relative imbalance) after upserts "
                                          "and deletes above which the tree is re-trained")

    def leaves(self, n: int) -> int:
        return self.num_leaves or max(1, int(math.sqrt(n)))


def build_searcher(embeddings: np.ndarray, item_ids, config: IndexConfig = IndexConfig()):
    """A ScaNN searcher: brute force below ``brute_force_below`` items, else a tree + AH with
    ``leaves_to_search`` (all leaves when 0: the build then tunes the search per query)."""
    from scann import scann_ops_pybind
    from scann.scann_ops.py.scann_builder import ReorderType

    embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
    n = len(embeddings)
    builder = scann_ops_pybind.builder(embeddings, config.num_neighbors, "dot_product")
    if n < config.brute_force_below:
        builder = builder.score_brute_force()
    else:
        leaves = config.leaves(n)
        builder = (builder
                   .tree(num_leaves=leaves, num_leaves_to_search=config.leaves_to_search or leaves,
                         training_sample_size=min(n, config.training_sample))
                   .score_ah(config.dimensions_per_block,
                             anisotropic_quantization_threshold=config.anisotropic_threshold)
                   .reorder(config.reorder, quantize=ReorderType.INT8 if config.reorder_dtype == "int8"
                            else ReorderType.FLOAT32))
    return builder.build(docids=[str(i) for i in item_ids])


def kth_exact_score(vectors: np.ndarray, queries: np.ndarray, k: int, chunk: int = 65_536) -> np.ndarray:
    """The k-th best exact score per query [Q], over item chunks (memory: Q × chunk)."""
    best = np.full((len(queries), 0), -np.inf, np.float32)
    for start in range(0, len(vectors), chunk):
        scores = queries @ vectors[start:start + chunk].T
        both = np.concatenate([best, scores], 1)
        keep = min(k, both.shape[1])
        best = -np.partition(-both, keep - 1, axis=1)[:, :keep]
    return best.min(1)


def recall_at(searcher, vectors: np.ndarray, queries: np.ndarray, kth: np.ndarray, k: int, leaves: int,
              reorder: int) -> float:
    """Recall@k of ``searcher`` searching ``leaves`` leaves and re-scoring ``reorder`` candidates: a
    found item counts when it scores at least the k-th exact score (items with identical vectors
    are interchangeable)."""
    found, _ = searcher.search_batched(queries, final_num_neighbors=k, leaves_to_search=leaves,
                                       pre_reorder_num_neighbors=max(k, reorder))
    rows = np.array([[searcher.docid_to_id[d] for d in row] for row in found], np.int64)
    scores = np.einsum("qd,qkd->qk", queries, vectors[rows])
    return float(np.mean((scores >= kth[:, None] - 1e-5).sum(1) / k))


# Where the target is out of reach (int8 re-scoring caps recall), leaves that add less recall than
# this are not worth their latency.
RECALL_PLATEAU = 0.002
LEAF_FRACTIONS = (0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0)


def reorder_ladder(config: IndexConfig) -> list[int]:
    """Re-scoring counts the build tries, cheapest first: ``reorder`` doubled up to ``reorder_max``."""
    counts = [config.reorder]
    while counts[-1] * 2 <= config.reorder_max:
        counts.append(counts[-1] * 2)
    return counts


def tune_search(searcher, vectors: np.ndarray, queries: np.ndarray, config: IndexConfig, k: int = 10) -> dict:
    """The cheapest search whose recall@k on ``queries`` reaches ``config.recall_target`` plus
    ``recall_margin``: the fewest leaves at the fewest re-scored candidates (``reorder_ladder``).
    Quantized scores of near-tied items (trained embeddings crowd together) can keep true
    neighbours out of a short re-scoring list whatever the leaves, so the list grows before the
    search gives up. When no search reaches the target: the cheapest within RECALL_PLATEAU of the
    best recall measured. Returns {"leaves_to_search", "reorder", "recall@10", "queries",
    "ladder": {reorder: {leaves: recall}}}."""
    leaves = config.leaves(len(vectors))
    kth = kth_exact_score(vectors, queries, k)
    rungs = sorted({max(1, round(leaves * f)) for f in LEAF_FRACTIONS})
    tried: dict[tuple[int, int], float] = {}
    target = config.recall_target + config.recall_margin
    for reorder in reorder_ladder(config):
        for searched in rungs:
            tried[reorder, searched] = recall_at(searcher, vectors, queries, kth, k, searched, reorder)
            if tried[reorder, searched] >= target:
                break
        if max(tried.values()) >= target:
            break
    best = max(tried.values())
    floor = target if best >= target else best - RECALL_PLATEAU
    reorder, searched = next(key for key, r in tried.items() if r >= floor)
    ladder: dict[str, dict[str, float]] = {}
    for (r, s), recall in tried.items():
        ladder.setdefault(str(r), {})[str(s)] = round(recall, 4)
    return {"leaves_to_search": searched, "reorder": reorder, f"recall@{k}": tried[reorder, searched],
            "queries": len(queries), "ladder": ladder}


def tuning_rows(queries: int, config: IndexConfig, seed: int = 0) -> np.ndarray:
    """The rows of ``queries`` held-out queries a build with ``seed`` tunes on; the other rows are
    the ones left to measure the index on."""
    return np.random.default_rng(seed).permutation(queries)[:config.tuning_queries]


def _with_column(vectors: np.ndarray, column) -> np.ndarray:
    vectors = np.asarray(vectors, np.float32)
    column = np.broadcast_to(np.asarray(column, np.float32), vectors.shape[:-1])[..., np.newaxis]
    return np.ascontiguousarray(np.concatenate([vectors, column], axis=-1))


class ItemIndex(DescribedFolder):
    """ScaNN searcher + item ids; ``search`` returns (item ids, scores) best first. ``dimension``
    is the embeddings'; ``shifted`` says whether items carry a score shift.

    The index folder, owned by this class: ``index.json`` (kind, format version, config), ScaNN's
    assets (``scann_assets.pbtxt`` and the arrays it names, with relative paths) and the item ids
    as JSON (``item_ids.json``)."""

    KIND = "tworec item index"
    VERSION = 1
    REMEDY = "rebuild it with `tworec index`"
    DESCRIPTION = "index.json"
    DOCIDS = "item_ids.json"
    SCANN_ASSETS = "scann_assets.pbtxt"

    def __init__(self, searcher, config: IndexConfig, dimension: int, shifted: bool = False,
                 tuning: dict | None = None):
        self.searcher = searcher
        self.config = config
        self.dimension = dimension
        self.shifted = shifted
        self.tuning = tuning or {}  # what the build measured: leaves_to_search, recall@10, ...
        self.leaves_to_search = int(self.tuning.get("leaves_to_search", config.leaves_to_search)) or None
        self.reorder = int(self.tuning.get("reorder", config.reorder))
        self.rebalances = 0

    @property
    def is_tree(self) -> bool:
        return "leaves_to_search" in self.tuning

    @classmethod
    def build(cls, embeddings: np.ndarray, item_ids, config: IndexConfig = IndexConfig(),
              score_shift: np.ndarray | None = None, queries: np.ndarray | None = None,
              seed: int = 0) -> "ItemIndex":
        """``score_shift`` [items]: added to each item's score by ``search``; none (or all 0) keeps
        the plain embeddings. A tree index searches the fewest leaves that reach
        ``config.recall_target`` on ``queries`` [Q, dim] (held-out retrieval queries; none: a fifth
        of the leaves)."""
        shifted = score_shift is not None and bool(np.any(np.asarray(score_shift) != 0))
        vectors = np.ascontiguousarray(_with_column(embeddings, score_shift) if shifted else embeddings, np.float32)
        searcher = build_searcher(vectors, item_ids, config)
        tuning = None
        if len(vectors) >= config.brute_force_below:
            if queries is not None and len(queries):
                sample = np.asarray(queries, np.float32)[tuning_rows(len(queries), config, seed)]
                sample = np.ascontiguousarray(_with_column(sample, 1.0) if shifted else sample)
                fixed, source = config.leaves_to_search, "held-out queries"
            else:
                # Items as their own queries find their own leaf: too optimistic to tune on, so a
                # fifth of the leaves (the recall on them is recorded, not used).
                picked = np.random.default_rng(seed).choice(len(vectors), min(config.tuning_queries, len(vectors)),
                                                            replace=False)
                sample = vectors[picked]
                sample = np.ascontiguousarray(_with_column(sample[:, :-1], 0.0) if shifted else sample)
                fixed = config.leaves_to_search or max(1, config.leaves(len(vectors)) // 5)
                source = "item sample (no held-out queries)"
            if fixed:
                kth = kth_exact_score(vectors, sample, 10)
                tuning = {"leaves_to_search": fixed, "reorder": config.reorder, "queries": len(sample),
                          "recall@10": recall_at(searcher, vectors, sample, kth, 10, fixed, config.reorder)}
            else:
                tuning = tune_search(searcher, vectors, sample, config)
            tuning["source"] = source
        return cls(searcher, config, embeddings.shape[1], shifted, tuning)

    def _queries(self, queries: np.ndarray, with_shift: bool) -> np.ndarray:
        queries = np.asarray(queries, np.float32)
        return _with_column(queries, 1.0 if with_shift else 0.0) if self.shifted else queries

    def _reorder(self, k: int) -> int:
        # A tree re-scores the build's tuned count (at least k); brute force has nothing to re-score.
        return max(k, self.reorder) if self.is_tree else -1

    def search(self, query: np.ndarray, k: int, with_shift: bool = True):
        """Best ``k`` items by query · item (+ the item's score shift unless ``with_shift`` is False:
        item-to-item similarity)."""
        ids, scores = self.searcher.search(self._queries(query, with_shift), final_num_neighbors=k,
                                           leaves_to_search=self.leaves_to_search or -1,
                                           pre_reorder_num_neighbors=self._reorder(k))
        return [str(i) for i in ids], np.asarray(scores)

    def search_batched(self, queries: np.ndarray, k: int, with_shift: bool = True):
        ids, scores = self.searcher.search_batched(self._queries(queries, with_shift), final_num_neighbors=k,
                                                   leaves_to_search=self.leaves_to_search,
                                                   pre_reorder_num_neighbors=self._reorder(k))
        return [[str(i) for i in row] for row in ids], np.asarray(scores)

    def upsert(self, item_ids, embeddings: np.ndarray, score_shift=0.0):
        """Adds or replaces items; ``score_shift`` (one per item, or one for all) is kept when the
        index is shifted. A tree whose partitions drifted past ``rebalance_above`` is re-trained."""
        embeddings = np.asarray(embeddings, np.float32)
        if embeddings.shape[1] != self.dimension:
            raise ValueError(f"embedding dimension {embeddings.shape[1]} != index dimension {self.dimension}")
        if self.shifted:
            embeddings = _with_column(embeddings, score_shift)
        self.searcher.upsert([str(i) for i in item_ids], embeddings, batch_size=256)
        self.rebalance_if_drifted()

    def delete(self, item_ids):
        self.searcher.delete([str(i) for i in item_ids])
        self.rebalance_if_drifted()

    def health(self) -> dict:
        """ScaNN's statistics of a tree index (partition imbalance, quantization error), the build's
        tuning and the rebalances so far; {} for brute force."""
        if not self.is_tree:
            return {}
        return {**self.searcher.get_health_stats(), "tuning": self.tuning, "rebalances": self.rebalances}

    def rebalance_if_drifted(self) -> bool:
        """Re-trains the tree on the current items when its partitions are more imbalanced than
        ``config.rebalance_above`` (ScaNN's partition-weighted relative imbalance)."""
        if not self.is_tree:
            return False
        if self.searcher.get_health_stats()["partition_weighted_avg_relative_imbalance"] <= self.config.rebalance_above:
            return False
        self.searcher.rebalance()
        self.rebalances += 1
        return True

    @property
    def size(self) -> int:
        return self.searcher.size()

    def save(self, directory: str):
        """ScaNN's assets with paths relative to ``directory`` (so the folder can be moved) and the
        item ids as JSON: ScaNN's own ``serialize`` pickles them, and a serving process should not
        unpickle files."""
        path = Path(directory)
        path.mkdir(parents=True, exist_ok=True)
        self.searcher.searcher.serialize(str(path), True)
        (path / self.DOCIDS).write_text(json.dumps(list(self.searcher.docids)))
        self.describe(path, {
            "config": settings.to_dict(self.config), "dimension": self.dimension, "shifted": self.shifted,
            "tuning": self.tuning})

    @classmethod
    def of_model(cls, model_dir: str, config: IndexConfig = IndexConfig()) -> "ItemIndex":
        """The index of a trained retrieval model folder: its item embeddings, ids and score shift
        (the new-item offset)."""
        from tworec.towers.artifact import RetrievalArtifact

        model = RetrievalArtifact.load(model_dir)
        return cls.build(model.item_embeddings, model.item_ids, config, model.score_shift, model.held_out_queries)

    @classmethod
    def load(cls, directory: str) -> "ItemIndex":
        from scann.scann_ops.py import scann_ops_pybind

        path = Path(directory)
        meta = cls.described(path)
        docids = json.loads((path / cls.DOCIDS).read_text())
        assets = (path / cls.SCANN_ASSETS).read_text()
        searcher = scann_ops_pybind.ScannSearcher(
            scann_ops_pybind.scann_pybind.ScannNumpy(os.fspath(path), assets), docids)
        return cls(searcher, settings.from_dict(IndexConfig, meta["config"]), meta["dimension"], meta["shifted"],
                   meta.get("tuning"))
