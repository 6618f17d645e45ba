"""The two-tower retrieval model, TFRS style: small Keras layers composed into a ``tfrs.Model``.

ItemTower   catalog row → unit vector, from [content head over the item's cached text vector,
            item-id embedding (dropped out in training, DropoutNet-style; absent for cold and
            unknown items), category embeddings].
QueryTower  (user, recent history, time) → unit vector. The history's items are embedded by the
            item tower itself and attention-pooled with their recency, so a request's fresh
            history changes the answer without retraining.
TwoTowerModel  in-batch softmax (tfrs.tasks.Retrieval) with temperature, log-Q correction from
            train popularity, optional uniformly sampled extra negatives and accidental-hit
            removal. Under MirroredStrategy the candidates of all replicas are gathered, so the
            loss does not change with the number of devices.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tworec.tf_setup import keras, tf
import tensorflow_recommenders as tfrs  # after tf_setup: TFRS needs TF_USE_LEGACY_KERAS set
from tworec.towers.catalog import Catalog
from tworec.towers.config import RetrievalConfig
from tworec.towers.text_encoder import mean_pool, run_layers

HOUR = 3600.0
# The catalog's cached text vectors are held at half precision (half the bytes per item in every
# replica), and the content head reads every content vector at that precision, served ones too.
CONTENT_DTYPE = tf.float16


class _Untracked:
    """Holds a value Keras does not track, so checkpoints leave it out (the content table is
    derived from the item texts through the encoder cache and rebuilt with the model)."""

    def __init__(self, value):
        self.value = value


def _unit(x):
    return tf.math.l2_normalize(x, axis=-1)


@dataclass
class FinetuneParts:
    """For ``encoder_mode="finetune"``: the encoder's top layers (trainable) and the cached token
    states of every catalog item after its frozen bottom layers."""

    top_layers: list
    states: np.ndarray  # [num_items, T, hidden]
    mask: np.ndarray  # [num_items, T]


class ItemTower(keras.layers.Layer):
    def __init__(self, config: RetrievalConfig, catalog: Catalog, content: np.ndarray | None,
                 finetune: FinetuneParts | None = None, **kwargs):
        super().__init__(**kwargs)
        self.config = config
        self.uses_content = config.uses_content
        self.finetune = finetune is not None
        if self.finetune:
            self.top_layers = list(finetune.top_layers)
            self.token_states = tf.Variable(finetune.states, trainable=False, name="token_states")
            self.token_mask = tf.Variable(finetune.mask, trainable=False, name="token_mask")
        # Catalog tables are variables (not trainable) so items can be appended at serving time.
        self.id_index = tf.Variable(catalog.id_index, trainable=False, name="id_index")
        self.id_embedding = keras.layers.Embedding(len(catalog.item_vocab) + 1, config.id_dim, name="item_id")
        if self.uses_content:
            if not self.finetune:
                self._content = _Untracked(tf.Variable(content.astype(CONTENT_DTYPE.as_numpy_dtype), trainable=False,
                                                       name="content_vectors"))
            self.category_ids = tf.Variable(catalog.category_ids, trainable=False, name="category_ids")
            hidden = [keras.layers.Dense(config.content_hidden, activation="gelu")] if config.content_hidden else []
            self.content_head = keras.Sequential([
                keras.layers.Dropout(config.content_dropout), *hidden,
                keras.layers.Dense(config.embedding_dim),
            ], name="content_head")
            self.category_embedding = keras.layers.Embedding(
                len(catalog.categories) + 1, config.category_dim, name="category")
        self.projection = keras.layers.Dense(config.embedding_dim, name="projection")

    @property
    def content(self) -> tf.Variable:
        """[num_items, C] the catalog's content vectors (CONTENT_DTYPE); frozen-encoder mode only."""
        return self._content.value

    def embed(self, content_vectors, id_rows, category_ids, training=False):
        """The tower from raw parts: content vectors [B, C] (None for id_only; read at
        CONTENT_DTYPE's precision), id-embedding rows [B] (0 = no id), category ids [B, K] (0 =
        padding)."""
        has_id = tf.cast(id_rows > 0, tf.float32)[:, tf.newaxis]
        if training and self.config.id_dropout > 0 and self.uses_content:
            keep = tf.cast(tf.random.uniform(tf.shape(has_id)) >= self.config.id_dropout, tf.float32)
            has_id *= keep
        parts = [self.id_embedding(id_rows) * has_id]
        if self.uses_content:
            cats = self.category_embedding(category_ids)
            present = tf.cast(category_ids > 0, tf.float32)[..., tf.newaxis]
            cat_vec = tf.reduce_sum(cats * present, 1) / tf.maximum(tf.reduce_sum(present, 1), 1.0)
            content = tf.cast(tf.cast(content_vectors, CONTENT_DTYPE), tf.float32)
            parts = [self.content_head(content, training=training), cat_vec] + parts
        return _unit(self.projection(tf.concat(parts, axis=-1)))

    def pooled_from_states(self, states, mask, training=False):
        """Content vectors from token states of the frozen bottom layers (finetune mode)."""
        return mean_pool(run_layers(self.top_layers, states, mask, training=training), mask)

    def call(self, rows, training=False, use_ids=True):
        """Embeddings of catalog rows; ``use_ids=False`` embeds every item as if it were cold."""
        rows = tf.maximum(tf.cast(rows, tf.int32), 0)
        content = None
        if self.uses_content and self.finetune:
            mask = tf.gather(self.token_mask, rows)
            content = self.pooled_from_states(tf.gather(self.token_states, rows), mask, training)
        elif self.uses_content:
            content = tf.gather(self.content, rows)
        categories = tf.gather(self.category_ids, rows) if self.uses_content else None
        id_rows = tf.gather(self.id_index, rows) if use_ids else tf.zeros_like(rows)
        return self.embed(content, id_rows, categories, training=training)


class QueryTower(keras.layers.Layer):
    def __init__(self, config: RetrievalConfig, num_users: int, item_tower: ItemTower, **kwargs):
        super().__init__(**kwargs)
        self.config = config
        self.item_tower = item_tower
        # Row 0 is the unknown user; training drops user ids to row 0 so it learns to serve them.
        self.user_embedding = keras.layers.Embedding(num_users + 1, config.user_dim, name="user_id")
        self.attention_hidden = keras.layers.Dense(32, activation="tanh", name="attention_hidden")
        self.attention_score = keras.layers.Dense(1, name="attention_score")
        self.mlp = keras.Sequential([
            keras.layers.Dense(2 * config.embedding_dim, activation="gelu"),
            keras.layers.Dense(config.embedding_dim),
        ], name="query_mlp")

    def history_embeddings(self, history_rows, training=False):
        """Item-tower embeddings of the history, computed once per distinct item in the batch."""
        flat = tf.reshape(history_rows, [-1])
        unique, position = tf.unique(tf.maximum(flat, 0))
        embedded = tf.gather(self.item_tower(unique, training=training), position)
        out = tf.reshape(embedded, tf.concat([tf.shape(history_rows), [-1]], 0))
        out.set_shape(history_rows.shape.concatenate([self.config.embedding_dim]))  # lost to partitioned tables
        return out

    def call(self, features, training=False):
        user = tf.cast(features["user_row"], tf.int32)
        if training and self.config.user_dropout > 0:
            drop = tf.random.uniform(tf.shape(user)) < self.config.user_dropout
            user = tf.where(drop, tf.zeros_like(user), user)
        history_rows = tf.cast(features["history_rows"], tf.int32)
        mask = tf.cast(history_rows >= 0, tf.float32)
        return self.from_history_embeddings(
            user, self.history_embeddings(history_rows, training), mask,
            features["timestamp"], features["history_timestamps"])

    def from_history_embeddings(self, user_row, history, history_mask, timestamp, history_timestamps):
        """The tower from already-embedded history items [B, N, D] and their mask [B, N]: what
        serving calls, with embeddings from its live item table (new items included). Training's
        user-id dropout happens in ``call``, before the history's item-tower ops: that random op
        order is part of what a seeded run reproduces."""
        user = tf.cast(user_row, tf.int32)
        mask = tf.cast(history_mask, tf.float32)[..., tf.newaxis]  # [B, N, 1]
        items = history * mask
        now = tf.cast(timestamp, tf.float32)[:, tf.newaxis]
        age = tf.maximum(now - tf.cast(history_timestamps, tf.float32), 0.0)
        recency = tf.math.log1p(age / HOUR)[..., tf.newaxis] * mask
        logits = self.attention_score(self.attention_hidden(tf.concat([items, recency], -1)))
        logits += (1.0 - mask) * -1e9
        weights = tf.nn.softmax(logits, axis=1) * mask
        attended = tf.reduce_sum(weights * items, 1)
        count = tf.reduce_sum(mask, 1)
        mean = tf.reduce_sum(items, 1) / tf.maximum(count, 1.0)
        has_history = tf.cast(count > 0, tf.float32)
        last_gap = tf.math.log1p(age[:, :1] / HOUR) * has_history
        context = tf.concat([has_history, tf.math.log1p(count), last_gap], -1)
        inputs = tf.concat([self.user_embedding(user), attended, mean, context], -1)
        return _unit(self.mlp(inputs))


class TwoTowerModel(tfrs.Model):
    def __init__(self, config: RetrievalConfig, catalog: Catalog, content: np.ndarray | None,
                 num_users: int, finetune: FinetuneParts | None = None):
        super().__init__()
        self.config = config
        self.item_tower = ItemTower(config, catalog, content, finetune, name="item_tower")
        self.query_tower = QueryTower(config, num_users, self.item_tower, name="query_tower")
        self.num_items = catalog.size
        # Added to the score of every item embedded from content alone (no id embedding: cold, new
        # and unknown items); fitted on the validation split after training
        # (towers/selection.py). Training itself always runs with 0.
        self.new_item_offset = 0.0
        # How likely each item is to be an in-batch candidate: the log-Q correction divides it out.
        self.sampling_probability = tf.constant(catalog.sampling_probability())
        self.task = tfrs.tasks.Retrieval(
            loss=keras.losses.CategoricalCrossentropy(from_logits=True, reduction=keras.losses.Reduction.SUM),
            temperature=config.temperature,
            remove_accidental_hits=config.remove_accidental_hits,
            metrics=None, batch_metrics=[])

    def call(self, features, training=False):
        return self.query_tower(features, training=training)

    # TFRS also reports regularization and total losses; this model has no regularization terms,
    # so only the loss is shown.
    def train_step(self, inputs):
        return {"loss": super().train_step(inputs)["loss"]}

    def test_step(self, inputs):
        return {"loss": super().test_step(inputs)["loss"]}

    def compute_loss(self, features, training=False):
        cfg = self.config
        queries = self.query_tower(features, training=training)
        rows = tf.cast(features["item_row"], tf.int32)
        candidates = self.item_tower(rows, training=training)
        probability = tf.gather(self.sampling_probability, rows)
        rows, candidates, probability, global_batch = _gather_across_replicas(
            rows, candidates, probability, cfg.cross_replica_negatives)
        if cfg.mixed_negatives:
            extra = tf.random.uniform([cfg.mixed_negatives], 0, self.num_items, dtype=tf.int32)
            candidates = tf.concat([candidates, self.item_tower(extra, training=training)], 0)
            rows = tf.concat([rows, extra], 0)
            probability = tf.concat([probability, tf.fill([cfg.mixed_negatives], 1.0 / self.num_items)], 0)
        loss = self.task(queries, candidates,
                         candidate_sampling_probability=probability if cfg.logq_correction else None,
                         candidate_ids=rows, compute_metrics=False, compute_batch_metrics=False)
        # Per replica: this replica's share of the global mean. Keras sums replicas' gradients and
        # reported losses, giving the global batch's mean on any number of devices.
        return loss / tf.cast(global_batch, loss.dtype)

    def content_embeddings(self, content_vectors, category_ids):
        """Embeddings of items known only by their content (new or cold items: no id path)."""
        content = tf.constant(content_vectors, tf.float32)
        ids = tf.zeros([tf.shape(content)[0]], tf.int32)
        return self.item_tower.embed(content, ids, tf.constant(category_ids, tf.int32)).numpy()

    def score_shift(self, offset: float | None = None) -> np.ndarray:
        """[num_items] float32 added to query · item scores: the new-item offset (``offset`` in place
        of the model's, when given) on items without an id embedding, 0 elsewhere."""
        offset = self.new_item_offset if offset is None else offset
        return np.where(self.item_tower.id_index.numpy() == 0, offset, 0.0).astype(np.float32)

    def item_embeddings(self, rows=None, batch_size: int = 4096, use_ids: bool = True) -> np.ndarray:
        rows = np.arange(self.num_items) if rows is None else np.asarray(rows)
        out = [self.item_tower(tf.constant(rows[i:i + batch_size], tf.int32), use_ids=use_ids).numpy()
               for i in range(0, len(rows), batch_size)]
        return np.concatenate(out) if out else np.zeros((0, self.config.embedding_dim), np.float32)


def _gather_across_replicas(rows, candidates, probability, gather: bool = True):
    """All replicas' candidates, this replica's own first so positives stay on the diagonal.

    Needs equal per-replica batches (training batches drop their remainder)."""
    context = tf.distribute.get_replica_context()
    local = tf.shape(rows)[0]
    if context is None or context.num_replicas_in_sync == 1:
        return rows, candidates, probability, local
    # Equal batches: the global batch is the local one times the replicas (no integer all-reduce,
    # which multi-worker collectives cannot place in a graph).
    global_batch = local * context.num_replicas_in_sync
    if not gather:  # each replica sees only its own batch as negatives (for comparison)
        return rows, candidates, probability, global_batch
    shift = -tf.cast(context.replica_id_in_sync_group, tf.int32) * local
    gathered = [tf.roll(context.all_gather(_placed(t, context), axis=0), shift, axis=0)
                for t in (rows, candidates, probability)]
    return (*gathered, global_batch)


def _placed(tensor, context):
    """``tensor`` on this worker's device when it has none: a multi-worker graph leaves a replica's
    tensors unplaced, and all_gather needs a device to gather to."""
    devices = context.strategy.extended.worker_devices
    if tensor.device or len(devices) != 1:
        return tensor
    with tf.device(devices[0]):
        return tf.identity(tensor)
