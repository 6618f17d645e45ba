"""One deployed version as the gateway holds it in memory: the query tower, the live ScaNN index,
the item table (the ranker's feature tables plus ids and titles, growing as items are upserted)
and the user vocabulary, all loaded through ``GatewayArtifact``. Requests take a reference to the
current bundle, so a reload never changes the version under a request in flight."""
from __future__ import annotations

import logging
import threading

import numpy as np

from tworec import contract
from tworec.artifacts import ArtifactError
from tworec.errors import UserError
from tworec.export.artifact import ITEM_TOWER_MODEL, RANKER_MODEL, DeploymentRepository, GatewayArtifact
from tworec.ranking.features import RankerTables
from tworec.towers.catalog import padded_rows

log = logging.getLogger("tworec.gateway")


class ConfigError(UserError, RuntimeError):
    """The deployment repository is missing or inconsistent; the message says how to fix it."""


class ItemTable:
    """Items by row: ids, titles, cold flags and the ranker's per-item features (``tables``). Rows
    are only appended (upserts of new ids) or overwritten (upserts of known ids), never reordered."""

    def __init__(self, item_ids: list, titles: list, cold: np.ndarray, tables: RankerTables):
        self.item_ids = item_ids
        self.titles = titles
        self.cold = cold
        self.tables = tables
        self.row_of = {item: i for i, item in enumerate(item_ids)}

    @property
    def item_embedding(self) -> np.ndarray:
        return self.tables.item_embedding

    def put(self, ids, titles, embeddings, category_rows):
        """Adds or replaces items (new ones: no id embedding, no popularity, cold)."""
        new = [i for i in dict.fromkeys(ids) if i not in self.row_of]
        n, m = len(self.item_ids), len(new)
        if m:
            # Arrays are replaced whole (readers holding the old ones stay consistent), and the id
            # map is updated last.
            self.tables = self.tables.with_new_items(m)
            self.cold = np.concatenate([self.cold, np.ones(m, bool)])
            self.item_ids = self.item_ids + new
            self.titles = self.titles + [""] * m
        row_of = dict(self.row_of)
        row_of.update({item: n + j for j, item in enumerate(new)})
        for item, title, vector, cats in zip(ids, titles, embeddings, category_rows):
            r = row_of[item]
            self.tables.item_embedding[r] = vector
            self.tables.item_category_rows[r] = cats
            self.titles[r] = title
        self.row_of = row_of


class Bundle:
    def __init__(self, repo: str, version: int):
        from tworec.export.tflite_query_tower import TfliteQueryTower  # TensorFlow: imported when a bundle loads

        try:
            artifact = DeploymentRepository(repo).gateway(version)
            index, tables, catalog, users = artifact.index(), artifact.tables(), artifact.catalog(), artifact.users()
            query_tower = TfliteQueryTower(artifact.query_tower_tflite())
            search = artifact.search()
        except (ArtifactError, OSError) as err:
            raise ConfigError(f"version {version} of {repo} cannot be loaded: {err}") from err
        self.version = version
        self.artifact = artifact
        self.dim = artifact.embedding_dim
        self.history_length = artifact.history_length
        self.new_item_offset = artifact.new_item_offset
        self.live_weight, self.live_half_life_s = artifact.live_weight, artifact.live_half_life_s
        self.click_prior = artifact.click_prior
        self._new_items = None  # (rows without an id embedding, their embeddings): until the next upsert
        self._exploration_index = None  # a ScaNN index of those items, when too many to score each answer
        self.max_text_length = artifact.max_text_length
        self.triton_versions = artifact.triton
        self.ranker_model, self.item_tower_model = RANKER_MODEL, ITEM_TOWER_MODEL
        self._query = query_tower
        self.index = index
        self.items = ItemTable(catalog.item_ids, catalog.titles, catalog.train_counts == 0, tables)
        self.categories = {c: i + 1 for i, c in enumerate(catalog.categories)}
        self.category_names = ["", *catalog.categories]  # category row → name
        # Search and SimilarItems' semantic space (search/): None when the version has no search folder.
        self.search_engine = search.engine() if search else None
        self.text_encoder = search.query_encoder() if search else None
        self.similar_semantic_share = search.similar_semantic_share if search else 0.0
        self.attributes = {a: i + 1 for i, a in enumerate(tables.attributes)}
        if index.dimension != self.dim or tables.item_embedding.shape[1] != self.dim:
            raise ConfigError(f"{artifact.path}: index dimension {index.dimension}, item embeddings "
                              f"{tables.item_embedding.shape[1]} and query tower {self.dim} differ: re-export it")
        self.user_rows = {u: i + 1 for i, u in enumerate(users)}
        counts = catalog.train_counts
        self.popular = [catalog.item_ids[i] for i in np.argsort(-counts, kind="stable")[:1000] if counts[i] > 0]
        self.lock = threading.Lock()  # index and item-table mutations vs searches
        self.removed: set = set()

    def new_items(self) -> tuple[np.ndarray, np.ndarray]:
        """(rows, embeddings [rows, dim]) of the items without an id embedding (cold, new,
        upserted): the exploration pool. Kept contiguous until the next upsert, since gathering
        them per request costs O(catalog)."""
        cached = self._new_items
        if cached is None:
            with self.lock:  # not while an upsert changes the table
                rows = np.flatnonzero(self.items.tables.item_row[:len(self.items.item_ids)] == 0)
                cached = self._new_items = (rows, np.ascontiguousarray(self.items.item_embedding[rows]))
        return cached

    def prepare_exploration(self, index_above: int) -> None:
        """Builds the ScaNN index of the items without an id embedding when there are more than
        ``index_above`` (at load, before the bundle serves, so no request waits for it)."""
        rows, embeddings = self.new_items()
        if len(rows) > index_above and self._exploration_index is None:
            from tworec.towers.index import ItemIndex

            self._exploration_index = ItemIndex.build(embeddings, [self.items.item_ids[r] for r in rows])

    def exploration_ranking(self, query: np.ndarray):
        """The exploration pool's ranking (live/exploration.py) of the items without an id
        embedding for ``query``, retrieval scores (offset included): a search of their index when
        ``prepare_exploration`` built one, else every item scored."""
        from tworec.live.exploration import ExactRanking

        if self._exploration_index is not None:
            return _IndexRanking(self._exploration_index, query, self.new_item_offset, self.lock)
        rows, embeddings = self.new_items()
        ids = self.items.item_ids
        return ExactRanking(lambda js: [ids[rows[j]] for j in js], embeddings @ query + self.new_item_offset)

    def _id_less(self, ids) -> np.ndarray:
        """Per item id (present in the table): True where it has no id embedding."""
        return self.items.tables.item_row[[self.items.row_of[i] for i in ids]] == 0

    def score_shift(self, rows: np.ndarray) -> np.ndarray:
        """What retrieval adds to query · item for item ``rows``: the new-item offset on items
        without an id embedding, 0 elsewhere (the model's own rule, towers/model.py)."""
        return np.where(self.items.tables.item_row[rows] == 0, self.new_item_offset, 0.0)

    @property
    def user_attribute_rows(self) -> np.ndarray:
        return self.items.tables.user_attribute_rows

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
            self._new_items = None
            self.index.upsert(ids, embeddings, self.new_item_offset)
            if self._exploration_index is not None:
                id_less = np.flatnonzero(self._id_less(ids))
                if len(id_less):
                    self._exploration_index.upsert([ids[j] for j in id_less], np.asarray(embeddings)[id_less])
            self.removed.difference_update(ids)

    def remove(self, ids) -> int:
        with self.lock:
            present = [i for i in ids if i in self.items.row_of and i not in self.removed]
            if present:
                self.index.delete(present)
                if self._exploration_index is not None:
                    id_less = [i for i, flag in zip(present, self._id_less(present)) if flag]
                    if id_less:
                        self._exploration_index.delete(id_less)
                self.removed.update(present)
        if present and self.search_engine is not None:
            self.search_engine.remove(present)
        return len(present)

    def upsert_search(self, ids, texts, categories) -> None:
        """Items added or changed at run time, into search's legs (semantic now, lexical after its
        rebuild); ``categories``: each item's category names."""
        if self.search_engine is None:
            return
        from tworec.search.engine import category_tokens

        vectors = np.stack([self.text_encoder(t, self.max_text_length) for t in texts])
        self.search_engine.upsert(list(ids), list(texts), vectors, [category_tokens(c) for c in categories])

    def categories_of(self, item: str) -> set:
        r = self.items.row_of.get(item)
        if r is None:
            return set()
        return {self.category_names[c] for c in self.items.tables.item_category_rows[r] if c > 0}


def current_version(repo: str) -> int:
    try:
        return DeploymentRepository(repo).current_version()
    except ArtifactError as err:
        raise ConfigError(str(err)) from err


class _IndexRanking:
    """``ExactRanking``'s interface over a ScaNN index of the exploration candidates."""

    def __init__(self, index, query: np.ndarray, offset: float, lock):
        self._index, self._query, self._offset, self._lock = index, query, offset, lock

    def __len__(self) -> int:
        return self._index.size

    def top(self, k: int):
        with self._lock:  # not while an upsert changes the index
            ids, scores = self._index.search(self._query, max(1, min(k, self._index.size)))
        return ids, scores + self._offset
