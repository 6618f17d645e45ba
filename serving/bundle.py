"""One deployed version as the gateway holds it in memory: the query tower, the live ScaNN index,
the item table (embeddings and ranker features, growing as items are upserted) and the user
vocabulary. Requests take a reference to the current bundle, so a reload never changes the
version under a request in flight."""
from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tworec import contract
from tworec.export.repository import (
    ITEM_TOWER_MODEL, RANKER_INPUTS_PACKED, RANKER_MODEL, RepoLayout, read_manifest,
)
from tworec.towers.catalog import padded_rows

log = logging.getLogger("tworec.gateway")


class ConfigError(RuntimeError):
    """The deployment repository is missing or inconsistent; the message says how to fix it."""


@dataclass
class ItemTable:
    """Items by row: ids, titles, cold flags and the ranker's per-item features. Rows are only
    appended (upserts of new ids) or overwritten (upserts of known ids), never reordered."""

    item_ids: list
    titles: list
    cold: np.ndarray
    item_embedding: np.ndarray  # named as in the ranker's tables: ranker_rows reads either
    item_row: np.ndarray
    item_category_rows: np.ndarray
    item_log_popularity: np.ndarray
    row_of: dict = field(default_factory=dict)

    def __post_init__(self):
        self.row_of = {item: i for i, item in enumerate(self.item_ids)}

    def put(self, ids, titles, embeddings, category_rows):
        """Adds or replaces items (new ones: no id embedding, no popularity, cold)."""
        new = [i for i in dict.fromkeys(ids) if i not in self.row_of]
        n, m = len(self.item_ids), len(new)
        if m:
            # Arrays are replaced whole (readers holding the old ones stay consistent), and the id
            # map is updated last.
            self.item_embedding = np.concatenate(
                [self.item_embedding, np.zeros((m, self.item_embedding.shape[1]), np.float32)])
            self.item_row = np.concatenate([self.item_row, np.zeros(m, np.int32)])
            self.item_category_rows = np.concatenate(
                [self.item_category_rows, np.zeros((m, self.item_category_rows.shape[1]), np.int32)])
            self.item_log_popularity = np.concatenate([self.item_log_popularity, np.zeros(m, np.float32)])
            self.cold = np.concatenate([self.cold, np.ones(m, bool)])
            self.item_ids = self.item_ids + new
            self.titles = self.titles + [""] * m
        row_of = dict(self.row_of)
        row_of.update({item: n + j for j, item in enumerate(new)})
        for item, title, vector, cats in zip(ids, titles, embeddings, category_rows):
            r = row_of[item]
            self.item_embedding[r] = vector
            self.item_category_rows[r] = cats
            self.titles[r] = title
            if item in new:
                self.item_row[r] = 0
        self.row_of = row_of


def _query_tower_model(path: Path) -> bytes:
    """The version's TFLite query tower; one exported before there was one is converted now."""
    tflite = path / "query_tower.tflite"
    if tflite.exists():
        return tflite.read_bytes()
    from tworec.export.savedmodels import query_tower_tflite

    log.warning("%s has no query_tower.tflite (exported by an earlier tworec): converting its SavedModel "
                "at load; re-export to skip this", path)
    return query_tower_tflite(path / "query_tower.savedmodel")


class Bundle:
    def __init__(self, repo: str, version: int):
        from tworec.serving.query_tower import QueryTower  # TensorFlow: imported when a bundle loads
        from tworec.towers.index import ItemIndex

        path = RepoLayout(repo).gateway(version)
        if not (path / "bundle.json").exists():
            raise ConfigError(f"{path} is not an exported gateway version: run `tworec export` into {repo}")
        meta = json.loads((path / "bundle.json").read_text())
        if meta.get("ranker_inputs") != RANKER_INPUTS_PACKED:
            raise ConfigError(f"{path} was exported for a gateway that sends the ranker ten named inputs; this one "
                              f"sends them packed ({RANKER_INPUTS_PACKED!r}): re-export it with `tworec export`")
        self.version = version
        self.meta = meta
        self.dim = meta["embedding_dim"]
        self.history_length = meta["history_length"]
        # What an item embedded from its text alone (an upsert) adds to its retrieval score.
        self.new_item_offset = float(meta.get("new_item_offset", 0.0))
        self.max_text_length = meta["max_text_length"]
        self.triton_versions = meta["triton"]
        self.ranker_model, self.item_tower_model = RANKER_MODEL, ITEM_TOWER_MODEL
        self._query = QueryTower(_query_tower_model(path))
        self.index = ItemIndex.load(str(path / "index"))
        with np.load(path / "catalog.npz", allow_pickle=False) as z:
            self.items = ItemTable(
                item_ids=[str(i) for i in z["item_ids"]], titles=[str(t) for t in z["titles"]],
                cold=z["cold"].copy(), item_embedding=z["item_embedding"].astype(np.float32),
                item_row=z["item_row"].astype(np.int32), item_category_rows=z["item_category_rows"].astype(np.int32),
                item_log_popularity=z["item_log_popularity"].astype(np.float32))
            self.categories = {str(c): i + 1 for i, c in enumerate(z["categories"])}
            self.attributes = {str(a): i + 1 for i, a in enumerate(z["attributes"])}
            self.user_attribute_rows = z["user_attribute_rows"].astype(np.int32)
            counts = z["train_counts"]
        if self.index.dimension != self.dim or self.items.item_embedding.shape[1] != self.dim:
            raise ConfigError(f"{path}: index dimension {self.index.dimension}, item embeddings "
                              f"{self.items.item_embedding.shape[1]} and query tower {self.dim} differ: re-export it")
        self.user_rows = {u: i + 1 for i, u in
                          enumerate((path / "users.txt").read_text(encoding="utf-8").split("\n")[:-1])}
        self.popular = [self.items.item_ids[i] for i in np.argsort(-counts, kind="stable")[:1000] if counts[i] > 0]
        self.lock = threading.Lock()  # index and item-table mutations vs searches
        self.removed: set = set()

    def query(self, user_row: int, history_rows: list, history_ts: list, now: int) -> np.ndarray:
        n = self.history_length
        rows = history_rows[:n]
        emb = np.zeros((n, self.dim), np.float32)
        emb[:len(rows)] = self.items.item_embedding[rows]
        mask = np.zeros(n, np.float32)
        mask[:len(rows)] = 1.0
        ts = np.zeros(n, np.int64)
        ts[:len(rows)] = history_ts[:n]
        return self._query(user_row=user_row, history_embeddings=emb, history_mask=mask, timestamp=now,
                           history_timestamps=ts)

    def search(self, vector: np.ndarray, k: int, with_shift: bool = True):
        """Retrieval for a query vector; ``with_shift=False`` for an item vector (similar items)."""
        with self.lock:
            k = max(1, min(k, self.index.size))
            return self.index.search(vector, k, with_shift)

    def category_rows(self, categories) -> np.ndarray:
        return padded_rows(categories, self.categories, contract.MAX_ITEM_CATEGORIES)

    def attribute_rows(self, user_row: int, context: dict) -> np.ndarray:
        """A known user's attributes from the data; an unknown user's from the request context."""
        if user_row > 0:
            return self.user_attribute_rows[user_row]
        return padded_rows([f"{k}:{v}" for k, v in sorted(context.items())], self.attributes,
                           contract.MAX_USER_ATTRIBUTES)

    def upsert(self, ids, titles, embeddings, category_rows):
        with self.lock:
            self.items.put(ids, titles, np.asarray(embeddings, np.float32), category_rows)
            self.index.upsert(ids, embeddings, self.new_item_offset)
            self.removed.difference_update(ids)

    def remove(self, ids) -> int:
        with self.lock:
            present = [i for i in ids if i in self.items.row_of and i not in self.removed]
            if present:
                self.index.delete(present)
                self.removed.update(present)
            return len(present)


def current_version(repo: str) -> int:
    if not Path(repo).is_dir():
        raise ConfigError(f"model repository {repo} does not exist: run `tworec export --repo {repo}` "
                          f"(or `tworec pipeline`) first")
    manifest = read_manifest(repo)
    if manifest.get("current") is None:
        raise ConfigError(f"{repo} has no {RepoLayout(repo).manifest.name} with a current version: "
                          f"run `tworec export --repo {repo}`")
    return int(manifest["current"])
