"""What training the retrieval model and the ranker share: the distribution strategy, Keras
callbacks for resuming, TensorBoard, checkpoints and early stopping, throughput, and the summary
of a fit. Folder names are arguments: each model's artifact class owns its folder's layout."""
from __future__ import annotations

import sys
import time
from pathlib import Path

from tworec.errors import UserError
from tworec.progress import terminal
from tworec.tf_setup import keras, tf


class TrainingFolder:
    """The files training keeps in a model folder (the retrieval model's and the ranker's):
    final weights, the best checkpoint so far, the resume state and TensorBoard logs."""

    WEIGHTS = "weights/model"  # TensorFlow checkpoint prefix
    CHECKPOINT = "checkpoints/best"
    BACKUP = "backup"  # only while training: lets an interrupted run resume where it stopped
    LOGS = "logs"

    @classmethod
    def paths(cls, folder) -> dict:
        """{"backup", "logs", "checkpoint"} under ``folder`` (created)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        return {"backup": folder / cls.BACKUP, "logs": folder / cls.LOGS, "checkpoint": folder / cls.CHECKPOINT}

    @classmethod
    def finish(cls, folder, model) -> None:
        """Saves the final weights and drops the resume state: the run finished."""
        import shutil

        model.save_weights(str(Path(folder) / cls.WEIGHTS))
        shutil.rmtree(Path(folder) / cls.BACKUP, ignore_errors=True)

    @classmethod
    def restore(cls, folder, model) -> None:
        model.load_weights(str(Path(folder) / cls.WEIGHTS)).expect_partial()


def default_strategy() -> tf.distribute.Strategy:
    """MultiWorkerMirroredStrategy when TF_CONFIG names more than one worker (training on several
    machines: every worker runs the same command); otherwise MirroredStrategy over every visible
    GPU, or the CPU on a machine without one."""
    import json
    import os

    cluster = json.loads(os.environ.get("TF_CONFIG", "{}")).get("cluster", {})
    if len(cluster.get("worker", [])) + len(cluster.get("chief", [])) > 1:
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = tf.config.list_logical_devices("GPU")
    return tf.distribute.MirroredStrategy([d.name for d in gpus] or ["/cpu:0"])


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes the artifacts: the only one, or the multi-worker chief."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return True
    return resolver.task_type == "chief" or (resolver.task_type == "worker" and resolver.task_id == 0
                                             and "chief" not in resolver.cluster_spec().as_dict())


class LazyAdam(keras.optimizers.Adam):
    """Adam whose sparse updates (embedding tables: ``tf.IndexedSlices`` gradients) touch only the
    rows in the batch, their moments and values, so a step's cost does not grow with the catalog
    (Keras' Adam decays both moment tables and moves every row each step). Rows absent from a
    batch keep their moments until they come back, as in TensorFlow Addons' LazyAdam. Dense
    gradients get Keras' Adam exactly."""

    def update_step(self, gradient, variable):
        if not isinstance(gradient, tf.IndexedSlices):
            return super().update_step(gradient, variable)
        step = tf.cast(self.iterations + 1, variable.dtype)
        beta_1, beta_2 = tf.cast(self.beta_1, variable.dtype), tf.cast(self.beta_2, variable.dtype)
        alpha = tf.cast(self.learning_rate, variable.dtype) * tf.sqrt(1 - tf.pow(beta_2, step)) / (
            1 - tf.pow(beta_1, step))
        index = self._index_dict[self._var_key(variable)]
        m, v = self._momentums[index], self._velocities[index]
        rows, position = tf.unique(gradient.indices)  # a row twice in a batch: its gradients summed
        values = tf.math.unsorted_segment_sum(gradient.values, position, tf.shape(rows)[0])
        m_rows = beta_1 * tf.gather(m, rows) + (1 - beta_1) * values
        v_rows = beta_2 * tf.gather(v, rows) + (1 - beta_2) * tf.square(values)
        m.scatter_update(tf.IndexedSlices(m_rows, rows))
        v.scatter_update(tf.IndexedSlices(v_rows, rows))
        variable.scatter_sub(tf.IndexedSlices(alpha * m_rows / (tf.sqrt(v_rows) + self.epsilon), rows))


def adam(learning_rate: float, lazy: bool):
    """The training optimizer: ``LazyAdam`` or Keras' Adam."""
    return (LazyAdam if lazy else keras.optimizers.Adam)(learning_rate)


class Throughput(keras.callbacks.Callback):
    """Examples per second over the training batches, each epoch's first batch left out."""

    def __init__(self, batch_size: int):
        super().__init__()
        self.batch_size = batch_size
        self.examples = 0
        self.seconds = 0.0
        self._start = 0.0

    def on_train_batch_begin(self, batch, logs=None):
        self._start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        if batch > 0:  # the first batch of an epoch includes tracing and pipeline warm-up
            self.seconds += time.perf_counter() - self._start
            self.examples += self.batch_size

    @property
    def per_second(self) -> float:
        return self.examples / self.seconds if self.seconds else 0.0


class ProgressLines(keras.callbacks.Callback):
    """Where Keras writes one line per epoch (not a terminal), a line every ``interval`` seconds
    within the epoch: steps done, examples/s and the time left, so a long epoch is never silent."""

    def __init__(self, batch_size: int, interval: float = 60.0, stream=None):
        super().__init__()
        self.batch_size, self.interval, self.stream = batch_size, interval, stream

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch, self._started = epoch, time.time()
        self._last = self._started

    def on_train_batch_end(self, batch, logs=None):
        now = time.time()
        if now - self._last < self.interval:
            return
        self._last = now
        steps, done = self.params.get("steps"), batch + 1
        rate = done / max(now - self._started, 1e-9)
        left = f", {(steps - done) / rate:,.0f}s left" if steps else ""
        print(f"epoch {self._epoch + 1}: step {done:,}/{steps or '?'}, {rate * self.batch_size:,.0f} examples/s{left}",
              file=self.stream or terminal(), flush=True)


class EarlyStoppingAfterSteps(keras.callbacks.EarlyStopping):
    """``EarlyStopping`` that ignores the epochs ending before ``min_steps`` optimizer steps: they
    neither count as the best epoch nor use up patience."""

    def __init__(self, min_steps: int, **kwargs):
        super().__init__(**kwargs)
        self.min_steps = min_steps

    def on_epoch_end(self, epoch, logs=None):
        if int(self.model.optimizer.iterations.numpy()) >= self.min_steps:
            super().on_epoch_end(epoch, logs)


def training_callbacks(backup: Path, logs: Path, checkpoint: Path | None = None, patience: int = 3,
                       min_steps: int = 0, monitor: str = "val_loss") -> list:
    """Resume after interruption (``backup``), TensorBoard (``logs``), and with a ``checkpoint``
    path (training with validation data): best-weights checkpoints and early stopping, restoring
    the best weights, on ``monitor`` (a loss: lower is better; anything else, e.g. a hit rate:
    higher), judging no epoch before ``min_steps`` optimizer steps."""
    mode = "min" if monitor.endswith("loss") else "max"
    cbs = [keras.callbacks.BackupAndRestore(str(backup)),
           keras.callbacks.TensorBoard(str(logs), update_freq="epoch", profile_batch=0)]
    if checkpoint is not None:
        cbs += [keras.callbacks.ModelCheckpoint(str(checkpoint), monitor=monitor, mode=mode,
                                                save_best_only=True, save_weights_only=True),
                EarlyStoppingAfterSteps(min_steps, monitor=monitor, mode=mode, patience=patience,
                                        restore_best_weights=True)]
    return cbs


def fit_summary(strategy, history, monitor: str | None = None) -> dict:
    """What training did; with ``monitor``, its per-epoch values too. Losses are the global
    batch's mean (each replica's loss is its share of it, and Keras sums the replicas')."""
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
    """Keras' verbosity: a progress bar on terminals, a line per epoch in logs."""
    if verbose is not None:
        return verbose
    return 1 if sys.stdout.isatty() else 2


def progress_callbacks(batch_size: int, verbose) -> list:
    """``ProgressLines`` where Keras' own progress is a line per epoch."""
    return [ProgressLines(batch_size)] if verbosity(verbose) == 2 else []


class WarmStartError(UserError, ValueError):
    """A previous model cannot seed this one: their architectures differ."""


def transfer_weights(source, target) -> dict:
    """Warm start: ``source``'s trainable weights into ``target``, a model of the same architecture
    over grown vocabularies. Weights pair up in order; equal shapes are copied whole, and a weight
    whose first axis grew (an embedding table whose vocabulary gained rows at its end) gets the old
    rows, its new rows keeping their initial values. Returns {"copied", "grown"} counts;
    WarmStartError when the architectures differ."""
    old, new = source.trainable_weights, target.trainable_weights
    if len(old) != len(new):
        raise WarmStartError(f"cannot warm-start: {len(old)} weights against {len(new)} (another architecture)")
    counts = {"copied": 0, "grown": 0}
    for a, b in zip(old, new):
        if tuple(a.shape) == tuple(b.shape):
            b.assign(a)
            counts["copied"] += 1
        elif tuple(a.shape[1:]) == tuple(b.shape[1:]) and a.shape[0] < b.shape[0]:
            grown = b.numpy()
            grown[: a.shape[0]] = a.numpy()
            b.assign(grown)
            counts["grown"] += 1
        else:
            raise WarmStartError(f"cannot warm-start {b.name}: shape {tuple(a.shape)} → {tuple(b.shape)} (another "
                                 f"architecture)")
    return counts
