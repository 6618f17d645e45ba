"""The ranking model, TFRS style: a scorer layer (DCN-v2 cross layers + a deep tower over user,
history, item and retrieval features) inside a ``tfrs.Model`` with a listwise ``compute_loss``.

The scorer works on rows (tworec.contract.RANKER_INPUTS): one row = one (user context,
candidate) pair. Training lists [B, L] are flattened into rows and back; serving sends rows.
The retrieval score enters both as a feature and as a skip term initialised to the retrieval
model's 1/temperature, so an untrained ranker already reproduces the retrieval order and
training learns corrections to it.
"""
from __future__ import annotations

from tworec import contract
from tworec.ranking.config import RankerConfig
from tworec.tf_setup import keras, tf
import tensorflow_recommenders as tfrs  # after tf_setup: TFRS needs TF_USE_LEGACY_KERAS set


def _safe_rows(rows, size: int):
    """Rows outside the vocabulary take the unknown row 0 instead of failing."""
    rows = tf.cast(rows, tf.int32)
    return tf.where((rows < 0) | (rows >= size), tf.zeros_like(rows), rows)


def _masked_mean(embedding, rows):
    present = tf.cast(rows > 0, tf.float32)[..., tf.newaxis]
    return tf.reduce_sum(embedding(rows) * present, -2) / tf.maximum(tf.reduce_sum(present, -2), 1.0)


class RankingScorer(keras.layers.Layer):
    def __init__(self, config: RankerConfig, num_users: int, num_items: int, num_categories: int,
                 num_attributes: int, retrieval_temperature: float = 0.05, **kwargs):
        super().__init__(**kwargs)
        self.config = config
        self.sizes = {"user": num_users + 1, "item": num_items + 1, "category": num_categories + 1,
                      "attribute": num_attributes + 1}
        self.user_embedding = keras.layers.Embedding(self.sizes["user"], config.id_dim, name="user_id")
        self.item_embedding = keras.layers.Embedding(self.sizes["item"], config.id_dim, name="item_id")
        self.category_embedding = keras.layers.Embedding(self.sizes["category"], config.category_dim, name="category")
        self.attribute_embedding = keras.layers.Embedding(self.sizes["attribute"], config.attribute_dim,
                                                          name="user_attribute")
        self.norm = keras.layers.LayerNormalization(name="input_norm")
        projection = config.cross_projection_dim or None
        self.cross = [tfrs.layers.dcn.Cross(projection_dim=projection, name=f"cross_{i}")
                      for i in range(config.cross_layers)]
        self.deep = keras.Sequential([keras.layers.Dense(units, activation="relu") for units in config.deep_layers],
                                     name="deep")
        self.out = keras.layers.Dense(1, name="score")
        self.retrieval_weight = self.add_weight(
            name="retrieval_weight", shape=(), initializer=keras.initializers.Constant(1.0 / retrieval_temperature))
        self.new_item_live_weight = (self.add_weight(name="new_item_live_weight", shape=(), initializer="zeros")
                                     if config.live_feature == "new_items" else None)

    @staticmethod
    def _drop_mask(rows, rate, training):
        if not training or rate <= 0:
            return tf.zeros(tf.shape(rows), tf.bool)
        return tf.random.uniform(tf.shape(rows)) < rate

    def call(self, rows: dict, training=False):
        c = self.config
        user = _safe_rows(rows["user_row"], self.sizes["user"])
        user = tf.where(self._drop_mask(user, c.user_id_dropout, training), tf.zeros_like(user), user)
        item = _safe_rows(rows["item_row"], self.sizes["item"])
        popularity = tf.cast(rows["item_log_popularity"], tf.float32)
        # A dropped item id makes a warm item look exactly like a cold one (no id, no popularity),
        # so the content-only path learns from every positive rather than from the few cold ones.
        dropped = self._drop_mask(item, c.item_id_dropout, training)
        item = tf.where(dropped, tf.zeros_like(item), item)
        popularity = tf.where(dropped, tf.zeros_like(popularity), popularity)
        is_new = tf.cast(item == 0, tf.float32)
        query = tf.cast(rows["query_embedding"], tf.float32)
        candidate = tf.cast(rows["item_embedding"], tf.float32)
        score = tf.cast(rows["retrieval_score"], tf.float32)
        live = tf.cast(rows["item_live_count"], tf.float32)
        crossed_live = live if self.new_item_live_weight is None else tf.zeros_like(live)
        scalars = tf.stack([
            score, popularity, is_new, crossed_live,
            tf.math.log1p(tf.maximum(tf.cast(rows["history_count"], tf.float32), 0.0)),
            tf.math.log1p(tf.maximum(tf.cast(rows["hours_since_last"], tf.float32), 0.0)),
        ], -1)
        x = tf.concat([
            self.user_embedding(user),
            _masked_mean(self.attribute_embedding, _safe_rows(rows["user_attribute_rows"], self.sizes["attribute"])),
            self.item_embedding(item),
            _masked_mean(self.category_embedding, _safe_rows(rows["item_category_rows"], self.sizes["category"])),
            query, candidate, query * candidate, scalars,
        ], -1)
        x0 = self.norm(x)
        crossed = x0
        for layer in self.cross:
            crossed = layer(x0, crossed)
        logit = self.out(tf.concat([crossed, self.deep(crossed)], -1))[:, 0] + self.retrieval_weight * score
        if self.new_item_live_weight is not None:
            logit += self.new_item_live_weight * is_new * live
        return logit


class RankingModel(tfrs.Model):
    """Listwise softmax over [positive, negatives...] lists (labels: the first item)."""

    def __init__(self, scorer: RankingScorer):
        super().__init__()
        self.scorer = scorer
        self.task = tfrs.tasks.Ranking(
            loss=keras.losses.CategoricalCrossentropy(from_logits=True, reduction=keras.losses.Reduction.SUM),
            metrics=[], prediction_metrics=[], label_metrics=[])

    def call(self, features, training=False):
        """features: user inputs [B, ...] and candidate inputs [B, L, ...] → scores [B, L]."""
        shape = tf.shape(features["item_row"])
        batch, length = shape[0], shape[1]
        rows = {}
        for t in contract.RANKER_USER_INPUTS:
            x = features[t.name]
            x = tf.repeat(x[:, tf.newaxis], length, axis=1)
            rows[t.name] = tf.reshape(x, tf.concat([[batch * length], tf.shape(x)[2:]], 0))
        for t in contract.RANKER_CANDIDATE_INPUTS:
            x = features[t.name]
            rows[t.name] = tf.reshape(x, tf.concat([[batch * length], tf.shape(x)[2:]], 0))
        return tf.reshape(self.scorer(rows, training=training), [batch, length])

    def train_step(self, inputs):
        return {"loss": super().train_step(inputs)["loss"]}

    def test_step(self, inputs):
        return {"loss": super().test_step(inputs)["loss"]}

    def compute_loss(self, features, training=False):
        scores = self(features, training=training)
        labels = tf.one_hot(tf.zeros(tf.shape(scores)[:1], tf.int32), tf.shape(scores)[1])
        loss = self.task(labels=labels, predictions=scores, compute_metrics=False)
        context = tf.distribute.get_replica_context()
        replicas = context.num_replicas_in_sync if context is not None else 1
        # Each replica's share of the global batch's mean: Keras sums the replicas' gradients.
        return loss / tf.cast(tf.shape(scores)[0] * replicas, loss.dtype)


def _batched_specs(tensors, embedding_dim: int) -> dict:
    return {t.name: tf.TensorSpec([None, *t.dims(embedding_dim, None)], tf.as_dtype(t.dtype), name=t.name)
            for t in tensors}


def serving_signature(scorer: RankingScorer, embedding_dim: int):
    """The batched signature over named rows: RANKER_INPUTS rows → {"score": [rows]}."""
    specs = _batched_specs(contract.RANKER_INPUTS, embedding_dim)

    @tf.function(input_signature=[specs])
    def serve(rows):
        return {contract.RANKER_OUTPUT.name: scorer(rows, training=False)}

    return serve


def unpack_rows(packed: dict, embedding_dim: int) -> dict:
    """contract.ranker_packed_inputs matrices → RANKER_INPUTS rows."""
    rows = {}
    for p in contract.ranker_packed_inputs(embedding_dim):
        matrix = packed[p.name]
        for c in p.columns:
            rows[c.name] = tf.reshape(matrix[:, c.start:c.start + c.width], [-1, *c.shape])
    return rows


def packed_serving_signature(scorer: RankingScorer, embedding_dim: int):
    """What Triton serves and the gateway calls: one matrix per dtype
    (contract.ranker_packed_inputs) → {"score": [rows]}."""
    specs = _batched_specs([p.tensor for p in contract.ranker_packed_inputs(embedding_dim)], embedding_dim)

    @tf.function(input_signature=[specs])
    def serve(packed):
        return {contract.RANKER_OUTPUT.name: scorer(unpack_rows(packed, embedding_dim), training=False)}

    return serve


# The SavedModel's signatures: serving_default takes the packed matrices (what Triton serves);
# this one takes RANKER_INPUTS by name, for callers outside the gateway.
ROWS_SIGNATURE = "rows"


def build_scorer(config: RankerConfig, tables, num_users: int, num_categories: int,
                 retrieval_temperature: float) -> RankingScorer:
    """The scorer for ``tables`` (ranking.features.RankerTables), seeded by ``config``."""
    keras.utils.set_random_seed(config.seed)
    return RankingScorer(config, num_users=num_users, num_items=tables.num_item_ids - 1,
                         num_categories=num_categories, num_attributes=len(tables.attributes),
                         retrieval_temperature=retrieval_temperature, name="ranking_scorer")


def save_scorer(scorer: RankingScorer, embedding_dim: int, path) -> None:
    """The scorer as a SavedModel with both signatures; the folder is replaced whole, never
    half-written."""
    import os
    import shutil
    from pathlib import Path

    module = tf.Module()
    module.scorer = scorer
    module.serve = packed_serving_signature(scorer, embedding_dim)
    module.serve_rows = serving_signature(scorer, embedding_dim)
    path = Path(path)
    tmp = Path(f"{path}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tf.saved_model.save(module, str(tmp), signatures={"serving_default": module.serve, ROWS_SIGNATURE: module.serve_rows})
    shutil.rmtree(path, ignore_errors=True)
    os.replace(tmp, path)
