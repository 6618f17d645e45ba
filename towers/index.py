"""A ScaNN index over item embeddings, with the id mapping, saved to disk and updatable live.

Defaults follow ScaNN's guidance for the catalog size: brute force (exact) below ~20k items, a
partitioned tree with asymmetric hashing and exact re-ranking above. ScaNN's docids carry the
item ids, so ``upsert``/``delete`` work by id and a new item is found by the next search.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

BRUTE_FORCE_BELOW = 20_000
DOCIDS = "item_ids.json"


@dataclass(frozen=True)
class IndexConfig:
    num_neighbors: int = 100
    brute_force_below: int = BRUTE_FORCE_BELOW
    num_leaves: int = 0  # 0: about sqrt(n)
    leaves_to_search: int = 0  # 0: a fifth of the leaves (recall@10 ~0.97 on clustered data)
    reorder: int = 500
    training_sample: int = 250_000
    dimensions_per_block: int = 2
    anisotropic_threshold: float = 0.2

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


class ItemIndex:
    """ScaNN searcher + item ids; ``search`` returns (item ids, scores) best first."""

    def __init__(self, searcher, config: IndexConfig, dimension: int):
        self.searcher = searcher
        self.config = config
        self.dimension = dimension

    @classmethod
    def build(cls, embeddings: np.ndarray, item_ids, config: IndexConfig = IndexConfig()) -> "ItemIndex":
        return cls(build_searcher(embeddings, item_ids, config), config, embeddings.shape[1])

    def search(self, query: np.ndarray, k: int):
        query = np.asarray(query, np.float32)
        ids, scores = self.searcher.search(query, final_num_neighbors=k)
        return [str(i) for i in ids], np.asarray(scores)

    def search_batched(self, queries: np.ndarray, k: int):
        ids, scores = self.searcher.search_batched(np.asarray(queries, np.float32), final_num_neighbors=k)
        return [[str(i) for i in row] for row in ids], np.asarray(scores)

    def upsert(self, item_ids, embeddings: np.ndarray):
        embeddings = np.asarray(embeddings, np.float32)
        if embeddings.shape[1] != self.dimension:
            raise ValueError(f"embedding dimension {embeddings.shape[1]} != index dimension {self.dimension}")
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
        (path / DOCIDS).write_text(json.dumps(list(self.searcher.docids)))
        (path / "tworec_index.json").write_text(json.dumps(
            {"config": asdict(self.config), "dimension": self.dimension}, indent=2))

    @classmethod
    def load(cls, directory: str) -> "ItemIndex":
        from scann.scann_ops.py import scann_ops_pybind

        path = Path(directory)
        meta = json.loads((path / "tworec_index.json").read_text())
        docids = json.loads((path / DOCIDS).read_text())
        assets = (path / "scann_assets.pbtxt").read_text()
        searcher = scann_ops_pybind.ScannSearcher(
            scann_ops_pybind.scann_pybind.ScannNumpy(os.fspath(path), assets), docids)
        return cls(searcher, IndexConfig(**meta["config"]), meta["dimension"])
