"""Per-item encoder outputs, computed once and cached: a full MiniLM forward per training example
is too slow on CPUs, and with a frozen encoder the item's pooled text vector never changes."""
from __future__ import annotations

import hashlib
import os
import random
from pathlib import Path

import numpy as np

from tworec.progress import terminal
from tworec.towers.config import RetrievalConfig
from tworec.towers.tokenizer import tokenize


def cache_dir() -> Path:
    return Path(os.environ.get("TWOREC_CACHE", Path.home() / ".cache" / "tworec")) / "encoder"


def build_encoder(config: RetrievalConfig):
    """The config's text encoder. Every build of one config is the same encoder: training's cached
    outputs, new items embedded later and the exported item tower must agree."""
    from tworec.towers.text_encoder import EncoderConfig, TextEncoder, build, pretrained_minilm
    from tworec.tf_setup import keras

    if config.encoder == "minilm":
        return pretrained_minilm()
    if config.encoder == "tiny":
        # tf-keras draws unseeded initializer seeds from NumPy's global state: seed it for this build
        # and give the caller's Python and NumPy random state back.
        python_state, numpy_state = random.getstate(), np.random.get_state()
        keras.utils.set_random_seed(config.seed)
        try:
            encoder = TextEncoder(EncoderConfig.tiny(), name="tiny_encoder")
            build(encoder)
        finally:
            random.setstate(python_state)
            np.random.set_state(numpy_state)
        return encoder
    raise ValueError(f"unknown encoder {config.encoder!r}")


def encode_texts(encoder, texts, max_length: int, batch_size: int = 128) -> np.ndarray:
    """Mean-pooled encoder outputs for ``texts`` (batched by length to limit padding)."""
    from tworec.towers.text_encoder import mean_pool
    from tworec.tf_setup import tf

    @tf.function(reduce_retracing=True)
    def pooled(ids, mask):
        return mean_pool(encoder(ids, mask), mask)

    order = np.argsort([len(t) for t in texts], kind="stable")
    out = np.zeros((len(texts), encoder.cfg.hidden_size), np.float32)
    for start in range(0, len(texts), batch_size):
        rows = order[start:start + batch_size]
        tokens = tokenize([texts[i] for i in rows], max_length)
        out[rows] = pooled(tf.constant(tokens["input_ids"]), tf.constant(tokens["attention_mask"])).numpy()
    return out


def token_states(encoder, texts, max_length: int, num_layers: int, batch_size: int = 128):
    """Token states after the encoder's first ``num_layers`` layers, padded to ``max_length``:
    (states [N, max_length, hidden] float32, mask [N, max_length] int32)."""
    from tworec.tf_setup import tf

    states = np.zeros((len(texts), max_length, encoder.cfg.hidden_size), np.float32)
    mask = np.zeros((len(texts), max_length), np.int32)
    for start in range(0, len(texts), batch_size):
        tokens = tokenize(list(texts[start:start + batch_size]), max_length)
        width = tokens["input_ids"].shape[1]
        out = encoder(tf.constant(tokens["input_ids"]), tf.constant(tokens["attention_mask"]),
                      num_layers=num_layers)
        states[start:start + len(out), :width] = out.numpy()
        mask[start:start + len(out), :width] = tokens["attention_mask"]
    return states, mask


class EncoderCache:
    """Pooled text vectors, one row per item text, in a SQLite file (``cache_dir()/vectors.sqlite``):
    the key is a hash of the encoder's identity (name, max length, seed) and the text, so a changed
    or added item is encoded alone and every other item comes from the cache. SQLite because many
    processes (tests, a pipeline beside a benchmark) share one cache, and a 1M-row table is a file.
    """

    def __init__(self, path: Path | None = None):
        import sqlite3

        self.path = Path(path or cache_dir() / "vectors.sqlite")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, timeout=120)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS vectors (key BLOB PRIMARY KEY, vector BLOB NOT NULL)")
        self._db.commit()

    @staticmethod
    def keys(texts, config: RetrievalConfig) -> list:
        prefix = "\x1e".join([config.encoder, str(config.max_text_length), str(config.seed), ""]).encode("utf-8")
        return [hashlib.sha256(prefix + t.encode("utf-8")).digest()[:16] for t in texts]

    def get(self, keys: list) -> dict:
        """{key: vector} for the keys the cache has."""
        found = {}
        for start in range(0, len(keys), 900):  # SQLite's bound-parameter limit
            chunk = keys[start:start + 900]
            rows = self._db.execute(f"SELECT key, vector FROM vectors WHERE key IN ({','.join('?' * len(chunk))})",
                                    chunk)
            found.update((k, np.frombuffer(v, np.float32)) for k, v in rows)
        return found

    def put(self, keys: list, vectors: np.ndarray) -> None:
        vectors = np.asarray(vectors, np.float32)
        with self._db:
            self._db.executemany("INSERT OR REPLACE INTO vectors VALUES (?, ?)",
                                 [(k, v.tobytes()) for k, v in zip(keys, vectors)])

    def close(self) -> None:
        self._db.close()


# Texts encoded between cache writes and progress lines: a crash loses at most this much work.
ENCODE_CHUNK = 4096


def encode_batch_size() -> int:
    """Texts per encoder call: larger on a GPU, where a batch of 128 leaves it idle."""
    from tworec.tf_setup import tf

    return 1024 if tf.config.list_physical_devices("GPU") else 128


def content_vectors(texts, config: RetrievalConfig, encoder=None, stream=None) -> np.ndarray:
    """Pooled encoder outputs for ``texts`` [N, hidden]: each distinct text not in the cache is
    encoded (with a progress line: items/s and the time left) and added to it."""
    import time

    texts = list(texts)
    stream = stream or terminal()
    cache = EncoderCache()
    try:
        keys = EncoderCache.keys(texts, config)
        found = cache.get(list(dict.fromkeys(keys)))
        missing = {}
        for key, text in zip(keys, texts):
            if key not in found:
                missing.setdefault(key, text)
        if missing:
            encoder = encoder or build_encoder(config)
            todo, started, batch = list(missing.items()), time.time(), encode_batch_size()
            for start in range(0, len(todo), ENCODE_CHUNK):
                chunk = todo[start:start + ENCODE_CHUNK]
                vectors = encode_texts(encoder, [t for _, t in chunk], config.max_text_length, batch)
                cache.put([k for k, _ in chunk], vectors)
                found.update(zip([k for k, _ in chunk], vectors))
                done, elapsed = start + len(chunk), time.time() - started
                rate = done / max(elapsed, 1e-9)
                stream.write(f"encoding item texts: {done:,}/{len(todo):,} new ({len(texts) - len(todo):,} cached), "
                             f"{rate:,.0f} items/s, {(len(todo) - done) / rate:,.0f}s left\n")
                stream.flush()
    finally:
        cache.close()
    width = next(iter(found.values())).shape[0] if found else 0
    out = np.zeros((len(texts), width), np.float32)
    for i, key in enumerate(keys):
        out[i] = found[key]
    return out
