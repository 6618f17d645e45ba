"""The item catalog as the towers see it: every item (cold ones included) with a row index,
its text and categories, and the train-time statistics (id vocabulary, popularity)."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from tworec import contract, example_codec
from tworec.contract import Split
from tworec.layout import DataLayout
from tworec.tfrecord_io import read_records

MAX_CATEGORIES = contract.MAX_ITEM_CATEGORIES


@dataclass
class Catalog:
    item_ids: list  # row index → item id, sorted
    titles: list
    texts: list
    category_ids: np.ndarray  # [num_items, MAX_CATEGORIES] int32, 0 = padding, 1.. = vocab + 1
    id_index: np.ndarray  # [num_items] int32: row of the id embedding, 0 = no id (cold/unknown)
    train_counts: np.ndarray  # [num_items] int64: interactions in train
    categories: list  # category vocabulary
    item_vocab: list  # ids with an id embedding (train items), index i → row i + 1
    cold: np.ndarray  # [num_items] bool: held-out cold items
    user_vocab: list  # users with an id embedding, index i → row i + 1

    @property
    def size(self) -> int:
        return len(self.item_ids)

    def row_of(self) -> dict:
        return {item: i for i, item in enumerate(self.item_ids)}

    def sampling_probability(self) -> np.ndarray:
        """How likely each item is to appear as an in-batch candidate (train frequency), for the
        log-Q correction; unseen items get the smallest observed probability."""
        counts = self.train_counts.astype(np.float64)
        floor = counts[counts > 0].min() if (counts > 0).any() else 1.0
        counts = np.maximum(counts, floor)
        return (counts / counts.sum()).astype(np.float32)


@dataclass(frozen=True)
class Vocabularies:
    """What gives ids their embedding rows: items and users (row = index + 1; 0 is unknown) and
    categories (likewise)."""

    items: tuple
    users: tuple
    categories: tuple

    def grown(self, newer: "Vocabularies") -> "Vocabularies":
        """These vocabularies with ``newer``'s new entries appended (in its order): every existing
        id keeps its row, so a model trained on these can warm-start one on the grown ones."""
        def grow(old, new):
            known = set(old)
            return tuple(old) + tuple(x for x in new if x not in known)

        return Vocabularies(grow(self.items, newer.items), grow(self.users, newer.users),
                            grow(self.categories, newer.categories))


def padded_rows(names, index: dict, width: int) -> np.ndarray:
    """Vocabulary rows of ``names`` (unknown ones dropped), cut or zero-padded to ``width``."""
    rows = [index[n] for n in names if n in index][:width]
    out = np.zeros(width, np.int32)
    out[: len(rows)] = rows
    return out


def _read_lines(path: str) -> list:
    with open(path, encoding="utf-8") as handle:
        return [line.rstrip("\n") for line in handle if line.rstrip("\n")]


def _train_counts(layout: DataLayout, split: Split):
    """(item counts, user counts) over one split's examples, most frequent first."""
    items, users = Counter(), Counter()
    for record in read_records(layout.split_pattern(split)):
        r = example_codec.decode((contract.USER_ID, contract.ITEM_ID), record)
        items[r["item_id"]] += 1
        users[r["user_id"]] += 1
    order = lambda c: [k for k, _ in sorted(c.items(), key=lambda kv: (-kv[1], kv[0]))]  # noqa: E731
    return dict(items), order(items), order(users)


def data_vocabularies(data_dir: str, train_split: Split = Split.TRAIN) -> tuple[Vocabularies, dict]:
    """(vocabularies, train counts by item) of a data folder: the data job's vocab files and
    popularity for the temporal protocol, counted from the records for the TFRS protocol."""
    layout = DataLayout(data_dir)
    categories = _read_lines(layout.vocab("categories"))
    if Split(train_split) is Split.TRAIN:
        item_vocab = _read_lines(layout.vocab("items"))
        counts = {}
        with open(layout.popularity, encoding="utf-8") as handle:
            for line in handle:
                item, n = line.rstrip("\n").split("\t")
                counts[item] = int(n)
        user_vocab = _read_lines(layout.vocab("users"))
    else:
        counts, item_vocab, user_vocab = _train_counts(layout, Split(train_split))
    return Vocabularies(tuple(item_vocab), tuple(user_vocab), tuple(categories)), counts


def load_catalog(data_dir: str, train_split: Split = Split.TRAIN, vocabularies: Vocabularies | None = None) -> Catalog:
    """The catalog of a data folder with popularity from ``train_split`` and ``vocabularies`` (by
    default the data folder's own: ``data_vocabularies``)."""
    layout = DataLayout(data_dir)
    items = sorted((example_codec.decode(contract.ITEM_FEATURES, r)
                    for r in read_records(layout.items_pattern)), key=lambda r: r["item_id"])
    if not items:
        raise FileNotFoundError(f"no item catalog under {layout.items_pattern}: run `tworec data` first")
    own, counts = data_vocabularies(data_dir, train_split)
    vocabularies = vocabularies or own
    item_vocab, user_vocab, categories = (list(vocabularies.items), list(vocabularies.users),
                                          list(vocabularies.categories))
    category_row = {c: i + 1 for i, c in enumerate(categories)}
    vocab_row = {item: i + 1 for i, item in enumerate(item_vocab)}
    cold = set(_read_lines(layout.cold_items))
    category_ids = np.zeros((len(items), MAX_CATEGORIES), np.int32)
    for i, r in enumerate(items):
        category_ids[i] = padded_rows(r["item_categories"], category_row, MAX_CATEGORIES)
    ids = [r["item_id"] for r in items]
    return Catalog(
        item_ids=ids,
        titles=[r["item_title"] for r in items],
        texts=[r["item_text"] for r in items],
        category_ids=category_ids,
        id_index=np.array([vocab_row.get(i, 0) for i in ids], np.int32),
        train_counts=np.array([counts.get(i, 0) for i in ids], np.int64),
        categories=categories,
        item_vocab=item_vocab,
        cold=np.array([i in cold for i in ids]),
        user_vocab=user_vocab,
    )
