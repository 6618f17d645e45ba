"""The ranker's inputs (tworec.contract.RANKER_INPUTS) from the catalog, the retrieval model and
the user side data. The same tables serve training, evaluation and export to the gateway."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tworec import contract, example_codec
from tworec.layout import DataLayout
from tworec.tfrecord_io import read_records
from tworec.towers.catalog import Catalog, padded_rows


@dataclass
class RankerTables:
    """Per catalog row and per user row, what a ranker row needs besides the request itself.

    Saved as one ``.npz`` file (``FILE``, read without pickle), the only format of these tables:
    the ranker folder and every gateway version hold one. Item rows are only appended (live
    upserts) or overwritten, never reordered."""

    FILE = "tables.npz"
    VERSION = 1
    _ITEM_ARRAYS = ("item_row", "item_category_rows", "item_embedding", "item_log_popularity")

    item_row: np.ndarray  # [num_items] int32: id-embedding row, 0 = cold/unknown
    item_category_rows: np.ndarray  # [num_items, MAX_ITEM_CATEGORIES] int32
    item_embedding: np.ndarray  # [num_items, D] float32, from the retrieval item tower
    item_log_popularity: np.ndarray  # [num_items] float32
    user_attribute_rows: np.ndarray  # [num_users + 1, MAX_USER_ATTRIBUTES] int32, row 0 = unknown
    attributes: list  # attribute vocabulary: "key:value", row i + 1

    @property
    def num_item_ids(self) -> int:
        return int(self.item_row.max()) + 1 if len(self.item_row) else 1

    def save(self, folder) -> None:
        from pathlib import Path

        np.savez(Path(folder) / self.FILE, format_version=np.int64(self.VERSION),
                 **{name: getattr(self, name) for name in self._ITEM_ARRAYS},
                 user_attribute_rows=self.user_attribute_rows, attributes=np.array(self.attributes, dtype=str))

    @classmethod
    def load(cls, folder) -> "RankerTables":
        from pathlib import Path

        from tworec.artifacts import ArtifactError

        path = Path(folder) / cls.FILE
        if not path.exists():
            raise ArtifactError(f"{folder} has no ranker tables ({cls.FILE}): retrain the ranker")
        with np.load(path, allow_pickle=False) as z:
            if "format_version" not in z.files or int(z["format_version"]) != cls.VERSION:
                raise ArtifactError(f"{path} is not ranker tables format {cls.VERSION}: retrain the ranker")
            return cls(*(z[name].copy() for name in cls._ITEM_ARRAYS), z["user_attribute_rows"].copy(),
                       [str(a) for a in z["attributes"]])

    def with_new_items(self, count: int) -> "RankerTables":
        """These tables with ``count`` zero rows appended to every per-item array (new items: no id
        embedding, no categories yet, no popularity). Arrays are replaced, not grown in place, so a
        reader holding the old ones stays consistent."""
        grown = {name: np.concatenate([getattr(self, name),
                                       np.zeros((count, *getattr(self, name).shape[1:]), getattr(self, name).dtype)])
                 for name in self._ITEM_ARRAYS}
        return RankerTables(**grown, user_attribute_rows=self.user_attribute_rows, attributes=self.attributes)


def user_attributes(data_dir: str) -> dict:
    """user id → attribute strings, for datasets with user side data (else empty)."""
    layout = DataLayout(data_dir)
    return {r["user_id"]: r["user_attributes"]
            for r in (example_codec.decode(contract.USER_FEATURES, x) for x in read_records(layout.users_pattern))}


def build_tables(catalog: Catalog, item_embeddings: np.ndarray, attributes_by_user: dict,
                 previous_attributes=()) -> RankerTables:
    """The tables for ``catalog``. ``previous_attributes``: a warm-started ranker's attribute
    vocabulary, kept in its order with the new attributes appended."""
    seen = set(previous_attributes)
    vocab = list(previous_attributes) + sorted({a for u in catalog.user_vocab for a in attributes_by_user.get(u, ())}
                                               - seen)
    index = {a: i + 1 for i, a in enumerate(vocab)}
    user_rows = np.zeros((len(catalog.user_vocab) + 1, contract.MAX_USER_ATTRIBUTES), np.int32)
    for i, user in enumerate(catalog.user_vocab):
        user_rows[i + 1] = padded_rows(attributes_by_user.get(user, ()), index, contract.MAX_USER_ATTRIBUTES)
    return RankerTables(
        item_row=catalog.id_index.astype(np.int32),
        item_category_rows=catalog.category_ids.astype(np.int32),
        item_embedding=np.asarray(item_embeddings, np.float32),
        item_log_popularity=np.log1p(catalog.train_counts).astype(np.float32),
        user_attribute_rows=user_rows,
        attributes=vocab,
    )


def ranker_rows(items, user_row, user_attribute_rows, query_embedding, history_count, hours_since_last,
                candidate_rows, retrieval_scores, live_counts=None) -> dict:
    """Rows for one request (user-level scalars, candidates [C]) or many (user-level [B],
    candidates [B, C]). ``items``: the RankerTables whose item rows ``candidate_rows`` index;
    ``live_counts``: the candidates' item_live_count feature (live/decay.py share_feature; none:
    0). Returns contract-named arrays with the candidates' shape as leading dims."""
    candidate_rows = np.asarray(candidate_rows)
    shape = candidate_rows.shape
    user_row = np.asarray(user_row, np.int32)

    def spread(x, dtype):
        x = np.asarray(x, dtype)
        tail = x.shape[user_row.ndim:]
        return np.broadcast_to(x.reshape(x.shape[:user_row.ndim] + (1,) * (len(shape) - user_row.ndim) + tail),
                               shape + tail)

    return {
        "user_row": spread(user_row, np.int32),
        "user_attribute_rows": spread(user_attribute_rows, np.int32),
        "query_embedding": spread(query_embedding, np.float32),
        "history_count": spread(history_count, np.float32),
        "hours_since_last": spread(hours_since_last, np.float32),
        "item_row": items.item_row[candidate_rows],
        "item_category_rows": items.item_category_rows[candidate_rows],
        "item_embedding": items.item_embedding[candidate_rows],
        "retrieval_score": np.asarray(retrieval_scores, np.float32),
        "item_log_popularity": items.item_log_popularity[candidate_rows],
        "item_live_count": (np.zeros(shape, np.float32) if live_counts is None
                            else np.asarray(live_counts, np.float32).reshape(shape)),
    }


def pack_ranker_rows(rows: dict, allocate=np.empty) -> dict:
    """RANKER_INPUTS rows → the packed matrices of contract.ranker_packed_inputs, each from
    ``allocate(shape, dtype)``: new arrays by default, or views of memory the caller sends from."""
    count = len(rows[contract.RANKER_INPUTS[0].name])
    embedding_dim = np.shape(rows["query_embedding"])[-1]
    out = {}
    for p in contract.ranker_packed_inputs(embedding_dim):
        matrix = allocate((count, p.width), p.dtype)
        for c in p.columns:
            matrix[:, c.start:c.start + c.width] = np.reshape(rows[c.name], (count, c.width))
        out[p.name] = matrix
    return out
