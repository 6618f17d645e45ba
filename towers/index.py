"""A ScaNN index over item embeddings, with the id mapping, saved to disk and updatable live.

Defaults follow ScaNN's guidance for the catalog size: brute force (exact) below ~20k items, a
partitioned tree with asymmetric hashing and exact re-ranking above. ScaNN's docids carry the
item ids, so ``upsert``/``delete`` work by id and a new item is found by the next search.

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
    leaves_to_search: int = setting(0, "partitions searched per query; 0: a fifth of them")
    reorder: int = setting(500, "candidates re-scored exactly after the quantized search")
    training_sample: int = setting(250_000, "items the partitioning and quantization are trained on")
    dimensions_per_block: int = setting(2, "asymmetric hashing: dimensions per codebook block")
    anisotropic_threshold: float = setting(0.2, "anisotropic quantization's threshold (ScaNN's advice for "
                                                "dot-product search)")

    def leaves(self, n: int) -> int:
        return self.num_leaves or max(1, int(math.sqrt(n)))

    def searched(self, n: int) -> int:
        return self.leaves_to_search or max(1, int(self.leaves(n) * 0.2))


def build_searcher(embeddings: np.ndarray, item_ids, config: IndexConfig = IndexConfig()):
    from scann import scann_ops_pybind

    embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
    n = len(embeddings)
    builder = scann_ops_pybind.builder(embeddings, config.num_neighbors, "dot_product")
    if n < config.brute_force_below:
        builder = builder.score_brute_force()
    else:
        builder = (builder
                   .tree(num_leaves=config.leaves(n), num_leaves_to_search=config.searched(n),
                         training_sample_size=min(n, config.training_sample))
                   .score_ah(config.dimensions_per_block,
                             anisotropic_quantization_threshold=config.anisotropic_threshold)
                   .reorder(config.reorder))
    return builder.build(docids=[str(i) for i in item_ids])


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

    def __init__(self, searcher, config: IndexConfig, dimension: int, shifted: bool = False):
        self.searcher = searcher
        self.config = config
        self.dimension = dimension
        self.shifted = shifted

    @classmethod
    def build(cls, embeddings: np.ndarray, item_ids, config: IndexConfig = IndexConfig(),
              score_shift: np.ndarray | None = None) -> "ItemIndex":
        """``score_shift`` [items]: added to each item's score by ``search``; none (or all 0) keeps
        the plain embeddings."""
        shifted = score_shift is not None and bool(np.any(np.asarray(score_shift) != 0))
        vectors = _with_column(embeddings, score_shift) if shifted else embeddings
        return cls(build_searcher(vectors, item_ids, config), config, embeddings.shape[1], shifted)

    def _queries(self, queries: np.ndarray, with_shift: bool) -> np.ndarray:
        queries = np.asarray(queries, np.float32)
        return _with_column(queries, 1.0 if with_shift else 0.0) if self.shifted else queries

    def search(self, query: np.ndarray, k: int, with_shift: bool = True):
        """Best ``k`` items by query · item (+ the item's score shift unless ``with_shift`` is False:
        item-to-item similarity)."""
        ids, scores = self.searcher.search(self._queries(query, with_shift), final_num_neighbors=k)
        return [str(i) for i in ids], np.asarray(scores)

    def search_batched(self, queries: np.ndarray, k: int, with_shift: bool = True):
        ids, scores = self.searcher.search_batched(self._queries(queries, with_shift), final_num_neighbors=k)
        return [[str(i) for i in row] for row in ids], np.asarray(scores)

    def upsert(self, item_ids, embeddings: np.ndarray, score_shift=0.0):
        """Adds or replaces items; ``score_shift`` (one per item, or one for all) is kept when the
        index is shifted."""
        embeddings = np.asarray(embeddings, np.float32)
        if embeddings.shape[1] != self.dimension:
            raise ValueError(f"embedding dimension {embeddings.shape[1]} != index dimension {self.dimension}")
        if self.shifted:
            embeddings = _with_column(embeddings, score_shift)
        self.searcher.upsert([str(i) for i in item_ids], embeddings)

    def delete(self, item_ids):
        self.searcher.delete([str(i) for i in item_ids])

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
            "config": settings.to_dict(self.config), "dimension": self.dimension, "shifted": self.shifted})

    @classmethod
    def of_model(cls, model_dir: str, config: IndexConfig = IndexConfig()) -> "ItemIndex":
        """The index of a trained retrieval model folder: its item embeddings, ids and score shift
        (the new-item offset)."""
        from tworec.towers.artifact import RetrievalArtifact

        model = RetrievalArtifact.load(model_dir)
        return cls.build(model.item_embeddings, model.item_ids, config, model.score_shift)

    @classmethod
    def load(cls, directory: str) -> "ItemIndex":
        from scann.scann_ops.py import scann_ops_pybind

        path = Path(directory)
        meta = cls.described(path)
        docids = json.loads((path / cls.DOCIDS).read_text())
        assets = (path / cls.SCANN_ASSETS).read_text()
        searcher = scann_ops_pybind.ScannSearcher(
            scann_ops_pybind.scann_pybind.ScannNumpy(os.fspath(path), assets), docids)
        return cls(searcher, settings.from_dict(IndexConfig, meta["config"]), meta["dimension"], meta["shifted"])
