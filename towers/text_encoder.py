"""A BERT encoder in tf-keras that loads all-MiniLM-L6-v2 from its safetensors file.

transformers 5 has no TensorFlow models, so the architecture is written here (post-LayerNorm
BERT: embeddings → N × [self-attention, feed-forward with exact GELU]) and the PyTorch weights are
mapped onto it; tests/test_text_encoder.py checks parity with transformers' ``BertModel``.
``EncoderConfig.tiny()`` is a small randomly initialised encoder for fast tests.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tworec.tf_setup import keras, tf


@dataclass(frozen=True)
class EncoderConfig:
    vocab_size: int = 30522
    hidden_size: int = 384
    num_layers: int = 6
    num_heads: int = 12
    intermediate_size: int = 1536
    max_positions: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    dropout: float = 0.1

    @classmethod
    def tiny(cls) -> "EncoderConfig":
        return cls(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, max_positions=128)


def _init():
    return keras.initializers.TruncatedNormal(stddev=0.02)


def _dense(units, name):
    return keras.layers.Dense(units, name=name, kernel_initializer=_init())


class SelfAttention(keras.layers.Layer):
    def __init__(self, cfg: EncoderConfig, **kwargs):
        super().__init__(**kwargs)
        self.cfg = cfg
        self.query = _dense(cfg.hidden_size, "query")
        self.key = _dense(cfg.hidden_size, "key")
        self.value = _dense(cfg.hidden_size, "value")
        self.output_dense = _dense(cfg.hidden_size, "output_dense")
        self.output_norm = keras.layers.LayerNormalization(epsilon=cfg.layer_norm_eps, name="output_norm")
        self.dropout = keras.layers.Dropout(cfg.dropout)

    def _heads(self, x):
        b, t = tf.shape(x)[0], tf.shape(x)[1]
        x = tf.reshape(x, [b, t, self.cfg.num_heads, self.cfg.hidden_size // self.cfg.num_heads])
        return tf.transpose(x, [0, 2, 1, 3])

    def call(self, x, additive_mask, training=False):
        q, k, v = self._heads(self.query(x)), self._heads(self.key(x)), self._heads(self.value(x))
        scale = 1.0 / np.sqrt(self.cfg.hidden_size // self.cfg.num_heads)
        scores = tf.matmul(q, k, transpose_b=True) * scale + additive_mask
        probs = self.dropout(tf.nn.softmax(scores, axis=-1), training=training)
        context = tf.transpose(tf.matmul(probs, v), [0, 2, 1, 3])
        context = tf.reshape(context, [tf.shape(x)[0], tf.shape(x)[1], self.cfg.hidden_size])
        return self.output_norm(x + self.dropout(self.output_dense(context), training=training))


class TransformerLayer(keras.layers.Layer):
    def __init__(self, cfg: EncoderConfig, **kwargs):
        super().__init__(**kwargs)
        self.attention = SelfAttention(cfg, name="attention")
        self.intermediate = _dense(cfg.intermediate_size, "intermediate")
        self.output_dense = _dense(cfg.hidden_size, "output_dense")
        self.output_norm = keras.layers.LayerNormalization(epsilon=cfg.layer_norm_eps, name="output_norm")
        self.dropout = keras.layers.Dropout(cfg.dropout)

    def call(self, x, additive_mask, training=False):
        x = self.attention(x, additive_mask, training=training)
        h = tf.nn.gelu(self.intermediate(x), approximate=False)
        return self.output_norm(x + self.dropout(self.output_dense(h), training=training))


class TextEncoder(keras.layers.Layer):
    """(input_ids, attention_mask) [B, T] → token states [B, T, hidden]."""

    def __init__(self, cfg: EncoderConfig = EncoderConfig(), **kwargs):
        super().__init__(**kwargs)
        self.cfg = cfg
        self.word_embeddings = keras.layers.Embedding(cfg.vocab_size, cfg.hidden_size,
                                                      embeddings_initializer=_init(), name="word_embeddings")
        self.position_embeddings = keras.layers.Embedding(cfg.max_positions, cfg.hidden_size,
                                                          embeddings_initializer=_init(), name="position_embeddings")
        self.type_embeddings = keras.layers.Embedding(cfg.type_vocab_size, cfg.hidden_size,
                                                      embeddings_initializer=_init(), name="type_embeddings")
        self.embedding_norm = keras.layers.LayerNormalization(epsilon=cfg.layer_norm_eps, name="embedding_norm")
        self.dropout = keras.layers.Dropout(cfg.dropout)
        self.blocks = [TransformerLayer(cfg, name=f"layer_{i}") for i in range(cfg.num_layers)]

    def call(self, input_ids, attention_mask, training=False, num_layers=None):
        """Token states after the first ``num_layers`` transformer layers (all by default)."""
        positions = tf.range(tf.shape(input_ids)[1])[tf.newaxis, :]
        x = (self.word_embeddings(input_ids) + self.position_embeddings(positions)
             + self.type_embeddings(tf.zeros_like(input_ids)))
        x = self.dropout(self.embedding_norm(x), training=training)
        return run_layers(self.blocks[:num_layers], x, attention_mask, training=training)


def run_layers(blocks, states, attention_mask, training=False):
    """Runs transformer ``blocks`` over token states (used to fine-tune an encoder's top layers
    over cached outputs of its frozen bottom layers)."""
    mask = tf.cast(attention_mask, states.dtype)[:, tf.newaxis, tf.newaxis, :]
    additive_mask = (1.0 - mask) * -1e9
    for block in blocks:
        states = block(states, additive_mask, training=training)
    return states


def mean_pool(states, attention_mask):
    """Sentence-transformers pooling: the mean of the token states that are not padding."""
    mask = tf.cast(attention_mask, states.dtype)[:, :, tf.newaxis]
    return tf.reduce_sum(states * mask, axis=1) / tf.maximum(tf.reduce_sum(mask, axis=1), 1e-9)


def _weight_map(cfg: EncoderConfig, encoder: TextEncoder):
    """(tf variable, safetensors name, transpose?) for every weight."""
    pairs = [
        (encoder.word_embeddings.embeddings, "embeddings.word_embeddings.weight", False),
        (encoder.position_embeddings.embeddings, "embeddings.position_embeddings.weight", False),
        (encoder.type_embeddings.embeddings, "embeddings.token_type_embeddings.weight", False),
        (encoder.embedding_norm.gamma, "embeddings.LayerNorm.weight", False),
        (encoder.embedding_norm.beta, "embeddings.LayerNorm.bias", False),
    ]
    for i, block in enumerate(encoder.blocks):
        p = f"encoder.layer.{i}."
        att = block.attention
        for dense, name in ((att.query, "attention.self.query"), (att.key, "attention.self.key"),
                            (att.value, "attention.self.value"), (att.output_dense, "attention.output.dense"),
                            (block.intermediate, "intermediate.dense"), (block.output_dense, "output.dense")):
            pairs += [(dense.kernel, p + name + ".weight", True), (dense.bias, p + name + ".bias", False)]
        for norm, name in ((att.output_norm, "attention.output.LayerNorm"), (block.output_norm, "output.LayerNorm")):
            pairs += [(norm.gamma, p + name + ".weight", False), (norm.beta, p + name + ".bias", False)]
    return pairs


def build(encoder: TextEncoder):
    ids = tf.zeros([1, 2], tf.int32)
    encoder(ids, tf.ones_like(ids))


def load_minilm(encoder: TextEncoder, path=None) -> TextEncoder:
    """Loads all-MiniLM-L6-v2's safetensors weights into ``encoder`` (built on demand)."""
    from safetensors import safe_open

    from tworec.towers.tokenizer import minilm_dir

    path = path or (minilm_dir() / "model.safetensors")
    build(encoder)
    with safe_open(str(path), "np") as weights:
        for variable, name, transpose in _weight_map(encoder.cfg, encoder):
            value = weights.get_tensor(name)
            if transpose:
                value = value.T
            if tuple(variable.shape) != value.shape:
                raise ValueError(f"{name}: checkpoint shape {value.shape} != model {tuple(variable.shape)}")
            variable.assign(value)
    return encoder


def pretrained_minilm() -> TextEncoder:
    return load_minilm(TextEncoder(EncoderConfig(), name="minilm"))
