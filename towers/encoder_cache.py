"""Per-item encoder outputs, computed once and cached: a full MiniLM forward per training example
is too slow on CPUs, and with a frozen encoder the item's pooled text vector never changes."""
from __future__ import annotations

import hashlib
import os
import random
from pathlib import Path

import numpy as np

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


def content_vectors(texts, config: RetrievalConfig, encoder=None) -> np.ndarray:
    """Pooled encoder outputs for ``texts``, from the cache when the same texts were seen."""
    key = hashlib.sha256("\x1e".join([config.encoder, str(config.max_text_length), str(config.seed),
                                      *texts]).encode("utf-8")).hexdigest()[:24]
    path = cache_dir() / f"{config.encoder}-{key}.npy"
    if path.exists():
        return np.load(path)
    vectors = encode_texts(encoder or build_encoder(config), list(texts), config.max_text_length)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp.npy")
    np.save(tmp, vectors)
    os.replace(tmp, path)
    return vectors
