"""Training the two-tower model under ``tf.distribute.MirroredStrategy`` (all visible GPUs, else
the CPU), with checkpoints, resume, TensorBoard logs, early stopping and a progress bar.

A trained model folder holds:
    model.json           variant, data folder, config, training summary
    weights/             the final weights: the best epoch's once early stopping judged one
    checkpoints/         the best epoch so far by the selection metric (validation HitRate@100 by
                         default), written during training (early stopping judges only epochs
                         after ``min_steps_before_stopping``)
    backup/              only while training: lets an interrupted run resume where it stopped
    logs/                TensorBoard
    item_embeddings.npy  catalog embeddings, rows aligned with item_ids.txt
    score_shift.npy      per item, added to its retrieval score: the new-item offset fitted on
                         validation for items without an id embedding, else 0
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from tworec.evaluation.validation import ValidationHitRate, fit_new_item_offset, validation_set
from tworec.layout import DataLayout
from tworec.tf_setup import keras, tf
from tworec.towers.catalog import Catalog, load_catalog
from tworec.towers.config import RetrievalConfig
from tworec.towers.encoder_cache import build_encoder, content_vectors, token_states
from tworec.towers.features import Lookups, interaction_dataset
from tworec.towers.model import FinetuneParts, TwoTowerModel
from tworec.contract import PROTOCOLS


def default_strategy() -> tf.distribute.Strategy:
    """MirroredStrategy over every visible GPU; on a machine without one, over the CPU."""
    gpus = tf.config.list_logical_devices("GPU")
    return tf.distribute.MirroredStrategy([d.name for d in gpus] or ["/cpu:0"])


class Throughput(keras.callbacks.Callback):
    def __init__(self, batch_size: int):
        super().__init__()
        self.batch_size = batch_size
        self.examples = 0
        self.seconds = 0.0

    def on_train_batch_begin(self, batch, logs=None):
        self._start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        if batch > 0:  # the first batch of an epoch includes tracing and pipeline warm-up
            self.seconds += time.perf_counter() - self._start
            self.examples += self.batch_size

    @property
    def per_second(self) -> float:
        return self.examples / self.seconds if self.seconds else 0.0


def build_model(config: RetrievalConfig, catalog: Catalog) -> TwoTowerModel:
    """The model for ``catalog``; call inside the strategy's scope. With a frozen encoder the item
    tower reads cached pooled vectors; in finetune mode it runs the encoder's top layers over
    cached token states of the frozen bottom layers."""
    # Python, NumPy and TensorFlow seeds: tf-keras draws unseeded initializer seeds from NumPy.
    keras.utils.set_random_seed(config.seed)
    content, finetune = None, None
    if config.uses_content and config.encoder_mode == "finetune":
        encoder = build_encoder(config)
        bottom = encoder.cfg.num_layers - config.finetune_layers
        states, mask = token_states(encoder, catalog.texts, config.max_text_length, bottom)
        finetune = FinetuneParts(encoder.blocks[bottom:], states, mask)
    elif config.uses_content:
        content = content_vectors(catalog.texts, config)
    keras.utils.set_random_seed(config.seed)
    return TwoTowerModel(config, catalog, content, len(catalog.user_vocab), finetune)


def train_retrieval(data_dir: str, out_dir: str, config: RetrievalConfig = RetrievalConfig(),
                    strategy: tf.distribute.Strategy | None = None, verbose: int | None = None,
                    callbacks=()) -> dict:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    layout = DataLayout(data_dir)
    protocol = PROTOCOLS[config.protocol]
    catalog = load_catalog(data_dir, protocol.train)
    strategy = strategy or default_strategy()
    lookups = Lookups(catalog.item_ids, catalog.user_vocab)

    def dataset(split, shuffle):
        return interaction_dataset(layout.split_pattern(split), lookups, config.history_length,
                                   config.batch_size, shuffle=shuffle, seed=config.seed,
                                   drop_remainder=True)

    train_data = dataset(protocol.train, True)
    with strategy.scope():
        model = build_model(config, catalog)
        model.compile(optimizer=keras.optimizers.Adam(config.learning_rate))
        first = next(iter(train_data))
        model(first)  # builds the model, so an interrupted run can resume from backup/
        model.compute_loss(first)
    throughput = Throughput(config.batch_size)
    started = time.time()
    validation = dataset(protocol.valid, False) if protocol.valid else None
    # The TFRS protocol has no validation split: fixed epochs, no early stopping.
    # The validation split as eval judges it: for the epoch selection and the new-item offset.
    judged = None
    if validation is not None and (config.selection_k or (config.uses_content and config.new_item_offset is None)):
        judged = validation_set(data_dir, catalog, config.validation_queries)
    selection = []
    monitor = "val_loss"
    if validation is not None and config.selection_k:
        selection = [ValidationHitRate(judged, lookups, config.history_length, config.selection_k)]
        monitor = selection[0].key
    cbs = [*selection,
           *training_callbacks(out, config.patience, validation is not None, config.min_steps_before_stopping,
                               monitor),
           throughput, *callbacks]
    history = model.fit(train_data, validation_data=validation,
                        epochs=config.epochs, steps_per_epoch=config.steps_per_epoch or None,
                        callbacks=cbs, verbose=verbosity(verbose))
    model.save_weights(str(out / "weights" / "model"))
    shutil.rmtree(out / "backup", ignore_errors=True)  # the run finished: nothing to resume
    offset_fit = {}
    if config.new_item_offset is not None:
        model.new_item_offset = float(config.new_item_offset)
    elif judged is not None and config.uses_content:
        model.new_item_offset, offset_fit = fit_new_item_offset(
            model, judged, lookups, config.history_length, config.selection_k or 100)
    embeddings = model.item_embeddings()
    np.save(out / "item_embeddings.npy", embeddings)
    np.save(out / "score_shift.npy", model.score_shift())
    (out / "item_ids.txt").write_text("".join(f"{i}\n" for i in catalog.item_ids))
    summary = {
        "variant": config.variant,
        "protocol": config.protocol,
        "data": os.path.abspath(data_dir),
        "config": json.loads(config.to_json()),
        **fit_summary(strategy, history, monitor if validation is not None else None),
        "train_examples_per_second": round(throughput.per_second, 1),
        "seconds": round(time.time() - started, 1),
        "new_item_offset": model.new_item_offset,
        # validation HitRate@K per offset tried (K as the selection's)
        "new_item_offset_fit": {f"{o:g}": round(v, 4) for o, v in offset_fit.items()},
    }
    (out / "model.json").write_text(json.dumps(summary, indent=2))
    return summary


def training_callbacks(out: Path, patience: int, validation: bool = True, min_steps: int = 0,
                       monitor: str = "val_loss") -> list:
    """Resume after interruption, TensorBoard logs, and with validation data: best-weights
    checkpoints and early stopping (restoring the best weights) on ``monitor`` (a loss: lower is
    better; anything else, e.g. a hit rate: higher) that judges no epoch before ``min_steps``
    optimizer steps."""
    mode = "min" if monitor.endswith("loss") else "max"
    cbs = [keras.callbacks.BackupAndRestore(str(out / "backup")),
           keras.callbacks.TensorBoard(str(out / "logs"), update_freq="epoch", profile_batch=0)]
    if validation:
        cbs += [keras.callbacks.ModelCheckpoint(str(out / "checkpoints" / "best"), monitor=monitor, mode=mode,
                                                save_best_only=True, save_weights_only=True),
                EarlyStoppingAfterSteps(min_steps, monitor=monitor, mode=mode, patience=patience,
                                        restore_best_weights=True)]
    return cbs


class EarlyStoppingAfterSteps(keras.callbacks.EarlyStopping):
    """``EarlyStopping`` that ignores the epochs ending before ``min_steps`` optimizer steps: they
    neither count as the best epoch nor use up patience."""

    def __init__(self, min_steps: int, **kwargs):
        super().__init__(**kwargs)
        self.min_steps = min_steps

    def on_epoch_end(self, epoch, logs=None):
        if int(self.model.optimizer.iterations.numpy()) >= self.min_steps:
            super().on_epoch_end(epoch, logs)


def fit_summary(strategy, history, monitor: str | None = None) -> dict:
    """What training did; with ``monitor``, its per-epoch values too."""
    summary = {
        "devices": list(strategy.extended.worker_devices),
        "replicas": strategy.num_replicas_in_sync,
        "epochs_run": len(history.history.get("loss", [])),
        "loss": [float(x) for x in history.history.get("loss", [])],
        "val_loss": [float(x) for x in history.history.get("val_loss", [])],
    }
    if monitor and monitor != "val_loss":
        summary[monitor] = [round(float(x), 4) for x in history.history.get(monitor, [])]
    return summary


def verbosity(verbose):
    if verbose is not None:
        return verbose
    return 1 if sys.stdout.isatty() else 2  # a progress bar on terminals, a line per epoch in logs


def load_retrieval(model_dir: str, data_dir: str | None = None, catalog: Catalog | None = None):
    """A trained model folder → (model, catalog, lookups, config). Pass ``catalog`` when it is
    already loaded for the model's protocol."""
    meta = json.loads((Path(model_dir) / "model.json").read_text())
    config = RetrievalConfig(**meta["config"])
    data_dir = data_dir or meta["data"]
    catalog = catalog or load_catalog(data_dir, PROTOCOLS[config.protocol].train)
    model = build_model(config, catalog)
    model.load_weights(str(Path(model_dir) / "weights" / "model")).expect_partial()
    model.new_item_offset = float(meta.get("new_item_offset", 0.0))
    return model, catalog, Lookups(catalog.item_ids, catalog.user_vocab), config
