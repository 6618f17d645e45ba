"""The lexical leg of search: BM25 over item texts with bm25s (English stop words, Snowball
stemming), and its live form for the gateway, which rebuilds in the background and swaps.

bm25s has no in-place add or delete. ``LiveLexical`` therefore applies a removal at once (a
removed item is masked out of every answer) and an upsert by rebuilding the whole index in a
background thread from the current texts, then swapping it in with one assignment; until the swap
an upserted item is found by the semantic leg only. ``benchmarks/bench_search.py`` measures the
rebuild.
"""
from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np


def _stemmer():
    import Stemmer

    return Stemmer.Stemmer("english")


def tokenize(texts, stemmer=None) -> list:
    """Lower-cased word tokens of each text, English stop words out, stemmed (lists of str)."""
    import bm25s

    return bm25s.tokenize(list(texts), stopwords="en", stemmer=stemmer or _stemmer(), return_ids=False,
                          show_progress=False)


class LexicalIndex:
    """BM25 over a fixed list of item texts; row i is ``item_ids[i]``.

    Files (``save``/``load``, a folder): bm25s' arrays and vocabulary (no pickle) and the item
    ids in row order."""

    ITEM_IDS = "bm25_item_ids.json"

    def __init__(self, retriever, item_ids: list):
        self.retriever = retriever
        self.item_ids = list(item_ids)
        self.row_of = {item: i for i, item in enumerate(self.item_ids)}
        self._stemmer = _stemmer()

    @classmethod
    def build(cls, item_ids, texts) -> "LexicalIndex":
        import bm25s

        retriever = bm25s.BM25()
        retriever.index(tokenize(texts), show_progress=False)
        return cls(retriever, item_ids)

    def __len__(self) -> int:
        return len(self.item_ids)

    def scores(self, query: str) -> np.ndarray:
        """BM25 of every item for ``query`` [items] float32 (0: no query term in the item)."""
        tokens = tokenize([query], self._stemmer)[0]
        if not tokens or not len(self.item_ids):
            return np.zeros(len(self.item_ids), np.float32)
        return np.asarray(self.retriever.get_scores(tokens), np.float32)

    def save(self, path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.retriever.save(str(path), allow_pickle=False, show_progress=False)
        (path / self.ITEM_IDS).write_text(json.dumps(self.item_ids))

    @classmethod
    def load(cls, path) -> "LexicalIndex":
        import bm25s

        path = Path(path)
        retriever = bm25s.BM25.load(str(path), allow_pickle=False, show_progress=False)
        return cls(retriever, json.loads((path / cls.ITEM_IDS).read_text()))


class LiveLexical:
    """A LexicalIndex that follows the catalog while serving: ``remove`` masks items at once,
    ``upsert`` queues the texts and rebuilds in a background thread, swapping the new index in
    when it is built. ``scores_by_id`` answers from whichever index is current."""

    def __init__(self, index: LexicalIndex, texts: dict):
        self.index = index
        self._texts = dict(texts)  # item id → text: what a rebuild indexes
        self._removed: set = set()
        self._lock = threading.Lock()
        self._dirty = threading.Event()
        self._thread: threading.Thread | None = None
        self.rebuilds = 0
        self.last_rebuild_s = 0.0

    def scores(self, query: str) -> tuple[np.ndarray, LexicalIndex]:
        """(BM25 of every item of the current index, that index), removed items at 0."""
        index, removed = self.index, self._removed
        scores = index.scores(query)
        if removed:
            rows = [index.row_of[i] for i in removed if i in index.row_of]
            scores[rows] = 0.0
        return scores, index

    def upsert(self, texts: dict) -> None:
        with self._lock:
            self._texts.update(texts)
            self._removed.difference_update(texts)
            self._dirty.set()
            if self._thread is None:  # the running rebuilder picks up what is queued before it exits
                self._thread = threading.Thread(target=self._rebuild_until_clean, name="lexical-rebuild",
                                                daemon=True)
                self._thread.start()

    def remove(self, item_ids) -> None:
        with self._lock:
            self._removed.update(item_ids)

    def _rebuild_until_clean(self) -> None:
        import time

        while True:
            with self._lock:
                if not self._dirty.is_set():
                    self._thread = None
                    return
                self._dirty.clear()
                ids = sorted(self._texts)
                texts = [self._texts[i] for i in ids]
            started = time.perf_counter()
            rebuilt = LexicalIndex.build(ids, texts)
            self.index = rebuilt  # one assignment: readers see the old index or the new one
            self.last_rebuild_s = time.perf_counter() - started
            self.rebuilds += 1

    def wait(self, timeout: float = 60.0) -> bool:
        """Blocks until queued upserts are indexed (tests, benchmarks); whether they are."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
        return self._thread is None
