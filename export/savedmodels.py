"""SavedModels of the two towers for serving.

query tower  (user_row, history_embeddings, history_mask, timestamp, history_timestamps) →
             query_embedding. The history arrives already embedded: the gateway looks the items
             up in its live item table, so items added at run time work as history too.
item tower   (input_ids, attention_mask, item_category_rows) → item_embedding: the text encoder
             and the content path of the item tower, for items the model never saw.
Only the layers each signature uses are saved (not the catalog's cached encoder outputs).
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from tworec import contract
from tworec.tf_setup import tf
from tworec.towers.text_encoder import mean_pool

QUERY_TOWER_INPUTS = ("user_row", "history_embeddings", "history_mask", "timestamp", "history_timestamps")


def _save(module, path: Path, signature):
    tmp = Path(f"{path}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tf.saved_model.save(module, str(tmp), signatures={"serving_default": signature})
    shutil.rmtree(path, ignore_errors=True)
    os.replace(tmp, path)
    return path


def export_query_tower(model, config, path) -> Path:
    tower = model.query_tower
    dim, length = config.embedding_dim, config.history_length

    module = tf.Module()
    module.layers = [tower.user_embedding, tower.attention_hidden, tower.attention_score, tower.mlp]

    @tf.function(input_signature=[
        tf.TensorSpec([None], tf.int32, name="user_row"),
        tf.TensorSpec([None, length, dim], tf.float32, name="history_embeddings"),
        tf.TensorSpec([None, length], tf.float32, name="history_mask"),
        tf.TensorSpec([None], tf.int64, name="timestamp"),
        tf.TensorSpec([None, length], tf.int64, name="history_timestamps"),
    ])
    def serve(user_row, history_embeddings, history_mask, timestamp, history_timestamps):
        return {"query_embedding": tower.from_history_embeddings(
            user_row, history_embeddings, history_mask, timestamp, history_timestamps)}

    module.serve = serve
    return _save(module, Path(path), serve)


def export_item_tower(model, config, path, encoder=None) -> Path:
    from tworec.towers.encoder_cache import build_encoder

    if not config.uses_content:
        raise ValueError("the id_only variant has no item tower for new items")
    tower = model.item_tower
    encoder = encoder or build_encoder(config)
    bottom = encoder.cfg.num_layers - config.finetune_layers if tower.finetune else None

    module = tf.Module()
    module.encoder = encoder
    module.layers = [tower.content_head, tower.category_embedding, tower.id_embedding, tower.projection]
    if tower.finetune:
        module.top_layers = list(tower.top_layers)
    specs = {t.name: tf.TensorSpec([None, *t.dims(config.embedding_dim, None)], tf.as_dtype(t.dtype), name=t.name)
             for t in contract.ITEM_TOWER_INPUTS}

    @tf.function(input_signature=[specs["input_ids"], specs["attention_mask"], specs["item_category_rows"]])
    def serve(input_ids, attention_mask, item_category_rows):
        if tower.finetune:
            states = encoder(input_ids, attention_mask, num_layers=bottom)
            pooled = tower.pooled_from_states(states, attention_mask)
        else:
            pooled = mean_pool(encoder(input_ids, attention_mask), attention_mask)
        no_id = tf.zeros(tf.shape(input_ids)[:1], tf.int32)
        return {contract.ITEM_TOWER_OUTPUT.name: tower.embed(pooled, no_id, item_category_rows)}

    module.serve = serve
    return _save(module, Path(path), serve)
