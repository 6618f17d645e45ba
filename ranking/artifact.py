"""A trained ranker folder, owned by ``RankerArtifact``: the only code that names or reads its files.

    ranker.json     kind and format version, config, the retrieval model and data it was built
                    on, vocabulary sizes, training summary (written last: the folder is complete)
    weights/        the best weights (tworec/training.py TrainingFolder owns weights/, checkpoints/,
                    backup/ and logs/)
    tables.npz      the feature tables (ranking/features.py RankerTables owns that file)
    savedmodel/     signatures: serving_default (what Triton serves: the inputs packed per dtype,
                    contract.ranker_packed_inputs → score) and "rows" (RANKER_INPUTS by name → score)
"""
from __future__ import annotations

import os
from pathlib import Path

from tworec import settings
from tworec.artifacts import DescribedFolder
from tworec.ranking.config import RankerConfig
from tworec.ranking.features import RankerTables
from tworec.training import TrainingFolder


class RankerArtifact(DescribedFolder):
    KIND = "tworec ranker"
    VERSION = 2  # item_live_count is a share of all interactions (live/decay.py)
    REMEDY = "train it with `tworec train-ranker`"
    DESCRIPTION = "ranker.json"
    SAVEDMODEL = "savedmodel"

    def __init__(self, path, config: RankerConfig, described: dict):
        self.path = Path(path)
        self.config = config
        self.retrieval = described["retrieval"]  # the retrieval model folder its lists came from
        self.data = described["data"]
        self.num_users = described["num_users"]
        self.num_categories = described["num_categories"]
        self.embedding_dim = described["embedding_dim"]
        self.retrieval_temperature = described["retrieval_temperature"]
        self.summary = described["summary"]

    @classmethod
    def save(cls, path, model, scorer, tables: RankerTables, config: RankerConfig, retrieval, data: str,
             num_users: int, num_categories: int, summary: dict) -> "RankerArtifact":
        """Writes the trained ranker (``retrieval``: the RetrievalArtifact its lists came from), the
        description last."""
        from tworec.ranking.model import save_scorer

        path = Path(path)
        TrainingFolder.finish(path, model)
        tables.save(path)
        save_scorer(scorer, retrieval.config.embedding_dim, path / cls.SAVEDMODEL)
        described = {"config": settings.to_dict(config), "retrieval": str(retrieval.path.resolve()),
                     "data": os.path.abspath(data), "num_users": num_users, "num_categories": num_categories,
                     "embedding_dim": retrieval.config.embedding_dim,
                     "retrieval_temperature": retrieval.config.temperature, "summary": summary}
        cls.describe(path, described)
        return cls(path, config, described)

    @classmethod
    def load(cls, path) -> "RankerArtifact":
        described = cls.described(path)
        return cls(path, settings.from_dict(RankerConfig, described["config"]), described)

    @property
    def savedmodel(self) -> Path:
        return self.path / self.SAVEDMODEL

    def tables(self) -> RankerTables:
        return RankerTables.load(self.path)

    def restore(self):
        """(scorer with its trained weights, built, tables)."""
        import numpy as np

        from tworec import contract
        from tworec.ranking.model import RankingModel, build_scorer

        tables = self.tables()
        scorer = build_scorer(self.config, tables, self.num_users, self.num_categories, self.retrieval_temperature)
        TrainingFolder.restore(self.path, RankingModel(scorer))
        scorer({t.name: np.zeros((1, *t.dims(self.embedding_dim)), t.dtype) for t in contract.RANKER_INPUTS})
        return scorer, tables

    def serving(self):
        """(score, tables): ``score(rows)`` runs the serving signature Triton runs, in process, on
        ranker rows (contract.RANKER_INPUTS, flat [N, ...]) and returns [N] float32 scores."""
        from tworec.ranking.model import serving_signature
        from tworec.tf_setup import tf

        scorer, tables = self.restore()
        serve = serving_signature(scorer, tables.item_embedding.shape[1])
        return (lambda rows: serve({k: tf.constant(v) for k, v in rows.items()})["score"].numpy()), tables
