"""A trained retrieval model folder, owned by ``RetrievalArtifact``: the only code that names or
reads its files.

    model.json           kind and format version, config, data folder, training summary, the
                         new-item offset and the live-count weight (written last: its presence
                         means the folder is complete)
    weights/, checkpoints/, backup/, logs/   training's state (tworec/training.py TrainingFolder):
                         the final weights are the best epoch's once early stopping judged one
    item_ids.txt         catalog rows' item ids, one per line
    vocab_{items,users,categories}.txt   the rows of its id, user and category embeddings (row =
                         line + 1): a warm-started model grows them without moving a row
    item_embeddings.npy  [items, dim] float32, rows aligned with item_ids.txt
    score_shift.npy      [items] float32 added to each item's retrieval score: the new-item offset
                         for items without an id embedding, else 0
"""
from __future__ import annotations

import dataclasses
import functools
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tworec import settings
from tworec.artifacts import DescribedFolder
from tworec.contract import PROTOCOLS
from tworec.towers.config import RetrievalConfig
from tworec.training import TrainingFolder


@dataclass
class RestoredRetrieval:
    """A retrieval artifact with its Keras model rebuilt: what scoring and exporting need."""

    model: object  # towers.model.TwoTowerModel, weights loaded
    catalog: object  # towers.catalog.Catalog of the model's protocol
    lookups: object  # towers.features.Lookups
    config: RetrievalConfig


class RetrievalArtifact(DescribedFolder):
    KIND = "tworec retrieval model"
    VERSION = 2  # live_weight weighs the live-count share (live/decay.py)
    REMEDY = "train it with `tworec train-retrieval`"
    DESCRIPTION = "model.json"
    ITEM_IDS = "item_ids.txt"
    VOCABULARIES = {"items": "vocab_items.txt", "users": "vocab_users.txt", "categories": "vocab_categories.txt"}
    ITEM_EMBEDDINGS = "item_embeddings.npy"
    SCORE_SHIFT = "score_shift.npy"
    HELD_OUT_QUERIES = "held_out_queries.npy"  # validation query vectors [Q, dim]: the index tunes its search on them

    def __init__(self, path: str | Path, config: RetrievalConfig, data: str, summary: dict,
                 new_item_offset: float, live_weight: float, click_prior=None):
        self.path = Path(path)
        self.config = config
        self.data = data  # the data folder it was trained on
        self.summary = summary
        self.new_item_offset = new_item_offset
        self.live_weight = live_weight  # of the live-count feature (live/decay.py) in the retrieval score
        self.click_prior = click_prior  # live.exploration.ClickPrior of the exploration slot; None: no slot

    # --- training writes ----------------------------------------------------------------------
    @classmethod
    def save(cls, path: str | Path, model, catalog, config: RetrievalConfig, data: str, summary: dict,
             live_weight: float = 0.0, click_prior=None, held_out_queries: np.ndarray | None = None):
        """Writes the trained ``model`` (its weights, its catalog's embeddings and score shifts), then
        the description last; removes the resume state."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        TrainingFolder.finish(path, model)
        np.save(path / cls.ITEM_EMBEDDINGS, model.item_embeddings())
        np.save(path / cls.SCORE_SHIFT, model.score_shift())
        if held_out_queries is not None:
            np.save(path / cls.HELD_OUT_QUERIES, np.asarray(held_out_queries, np.float32))
        (path / cls.ITEM_IDS).write_text("".join(f"{i}\n" for i in catalog.item_ids))
        for name, values in (("items", catalog.item_vocab), ("users", catalog.user_vocab),
                             ("categories", catalog.categories)):
            (path / cls.VOCABULARIES[name]).write_text("".join(f"{v}\n" for v in values), encoding="utf-8")
        cls.describe(path, {
            "config": settings.to_dict(config), "data": os.path.abspath(data),
            "new_item_offset": float(model.new_item_offset), "live_weight": float(live_weight),
            "click_prior": dataclasses.asdict(click_prior) if click_prior else None, "summary": summary})
        return cls(path, config, os.path.abspath(data), summary, float(model.new_item_offset), float(live_weight),
                   click_prior)

    # --- reading ----------------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path) -> "RetrievalArtifact":
        described = cls.described(path)
        from tworec.live.exploration import ClickPrior

        prior = described.get("click_prior")  # none: no slot (also in models trained before it)
        return cls(path, settings.from_dict(RetrievalConfig, described["config"]), described["data"],
                   described["summary"], float(described["new_item_offset"]), float(described["live_weight"]),
                   ClickPrior(**prior) if prior else None)

    def live_term(self, events):
        """The live-count term of this model's retrieval score over ``events``."""
        from tworec.towers.live_counts import LiveTerm

        return LiveTerm(events, self.live_weight, self.config.live_half_life_s)

    @functools.cached_property
    def item_ids(self) -> list:
        return (self.path / self.ITEM_IDS).read_text(encoding="utf-8").split("\n")[:-1]

    @functools.cached_property
    def vocabularies(self):
        """The rows of its id, user and category embeddings (towers.catalog.Vocabularies)."""
        from tworec.towers.catalog import Vocabularies

        read = lambda name: tuple((self.path / self.VOCABULARIES[name]).read_text(encoding="utf-8")  # noqa: E731
                                  .split("\n")[:-1])
        return Vocabularies(read("items"), read("users"), read("categories"))

    @functools.cached_property
    def item_embeddings(self) -> np.ndarray:
        return np.load(self.path / self.ITEM_EMBEDDINGS)

    @functools.cached_property
    def score_shift(self) -> np.ndarray:
        return np.load(self.path / self.SCORE_SHIFT)

    @functools.cached_property
    def held_out_queries(self) -> np.ndarray | None:
        """Validation query vectors [Q, dim] (None: the protocol has no validation split)."""
        path = self.path / self.HELD_OUT_QUERIES
        return np.load(path) if path.exists() else None

    def restore(self, data_dir: str | None = None, catalog=None) -> RestoredRetrieval:
        """The Keras model with its trained weights over ``catalog`` (loaded from ``data_dir``, by
        default the data folder it was trained on, for the model's protocol; a catalog with other
        vocabularies than the model's is loaded again with the model's)."""
        v = self.vocabularies
        if catalog is not None and (tuple(catalog.item_vocab), tuple(catalog.user_vocab),
                                    tuple(catalog.categories)) != (v.items, v.users, v.categories):
            catalog = None
        from tworec.towers.catalog import load_catalog
        from tworec.towers.features import Lookups
        from tworec.towers.train import build_model

        catalog = catalog or load_catalog(data_dir or self.data, PROTOCOLS[self.config.protocol].train,
                                          self.vocabularies)
        model = build_model(self.config, catalog)
        TrainingFolder.restore(self.path, model)
        model.new_item_offset = self.new_item_offset
        return RestoredRetrieval(model, catalog, Lookups(catalog.item_ids, catalog.user_vocab), self.config)
