"""SavedModels of the two towers for serving.

query tower  (user_row, history_embeddings, history_mask, timestamp, history_timestamps) →
             query_embedding. The history arrives already embedded: the gateway looks the items
             up in its live item table, so items added at run time work as history too.
item tower   (input_ids, attention_mask, item_category_rows) → item_embedding: the text encoder
             and the content path of the item tower, for items the model never saw.
Only the layers each signature uses are saved (not the catalog's cached encoder outputs).

The gateway runs the query tower from its TensorFlow Lite conversion (export/tflite_query_tower.py
says why); ``query_tower_tflite`` gives it only after it matched the SavedModel on sample requests.
Triton's Python backend runs the ranker from its conversion too (``row_model_tflite``, checked
the same way; export/triton_python_model.py says why).
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np

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


def convert_to_tflite(savedmodel) -> bytes:
    """The SavedModel's serving signature as a TFLite flatbuffer, with TFLite's own kernels only
    (the interpreter needs nothing from TensorFlow at run time)."""
    converter = tf.lite.TFLiteConverter.from_saved_model(str(savedmodel))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    return converter.convert()


def tflite_difference(savedmodel, model: bytes, requests: int = 8, seed: int = 0) -> float:
    """Largest absolute difference between the SavedModel's and the TFLite model's query
    embeddings over random requests (history lengths from empty to full)."""
    from tworec.export.tflite_query_tower import TfliteQueryTower

    signature = tf.saved_model.load(str(savedmodel)).signatures["serving_default"]
    tower = TfliteQueryTower(model)
    rng = np.random.default_rng(seed)
    worst = 0.0
    for j in range(requests):
        request = {}
        for name, (shape, dtype) in tower.inputs.items():
            shape = shape[1:]
            if name == "user_row":
                request[name] = np.int32(j % 3)  # unknown user (0) and known rows
            elif name == "history_mask":
                request[name] = (np.arange(shape[0]) < j * shape[0] // max(requests - 1, 1)).astype(dtype)
            elif np.issubdtype(dtype, np.integer):  # times: around 2024 in seconds
                request[name] = rng.integers(1_700_000_000, 1_740_000_000, shape).astype(dtype)
            else:
                request[name] = rng.normal(size=shape).astype(dtype)
        got = tower(**request)
        want = signature(**{k: tf.constant(np.asarray(v)[np.newaxis]) for k, v in request.items()})
        worst = max(worst, float(np.abs(got - next(iter(want.values())).numpy()[0]).max()))
    return worst


def _accepted(model: bytes, savedmodel, difference: float, tolerance: float) -> bytes:
    """``model``, unless its largest difference from the SavedModel exceeds ``tolerance``."""
    if not difference <= tolerance:
        raise RuntimeError(f"the TFLite conversion of {savedmodel} differs from it by {difference:.2e} "
                           f"(tolerance {tolerance:.0e})")
    return model


def query_tower_tflite(savedmodel, tolerance: float = 1e-4) -> bytes:
    """The query tower's TFLite conversion, refused unless it answers what the SavedModel answers."""
    model = convert_to_tflite(savedmodel)
    return _accepted(model, savedmodel, tflite_difference(savedmodel, model), tolerance)


def row_model_tflite(savedmodel, row_counts=(5, 200), tolerance: float = 1e-4, seed: int = 0) -> bytes:
    """The TFLite conversion of a model that scores rows independently (the ranker), refused
    unless, run as Triton runs it (PackedTflite, padded to a row bucket), it answers what the
    SavedModel's signature answers on random rows: small non-negative ints (embedding rows; the
    ranker maps unknown ones to row 0) and normal floats."""
    from tworec.export.triton_python_model import PackedTflite

    model = convert_to_tflite(savedmodel)
    signature = tf.saved_model.load(str(savedmodel)).signatures["serving_default"]
    specs = signature.structured_input_signature[1]
    outputs = sorted(signature.structured_outputs)
    lite = PackedTflite(tf, model, sorted(specs), outputs, [max(row_counts)])
    rng = np.random.default_rng(seed)
    worst = 0.0
    for rows in row_counts:
        feeds = {}
        for name, spec in specs.items():
            shape = (rows, *spec.shape[1:])
            feeds[name] = (rng.integers(0, 4, shape) if spec.dtype.is_integer else rng.normal(size=shape)) \
                .astype(spec.dtype.as_numpy_dtype)
        want = signature(**{k: tf.constant(v) for k, v in feeds.items()})
        got = lite(feeds)
        worst = max(worst, *(float(np.abs(got[k] - want[k].numpy()).max()) for k in outputs))
    return _accepted(model, savedmodel, worst, tolerance)


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
