"""``tworec train-retrieval``: the two-tower model trained under a ``tf.distribute`` strategy
(MirroredStrategy over every visible GPU, else the CPU; MultiWorkerMirroredStrategy when TF_CONFIG
names several workers), with checkpoints, resume, TensorBoard, early stopping on validation
HitRate and the new-item offset fitted after training. The folder it writes is a
``RetrievalArtifact`` (towers/artifact.py).

On several machines: run the same command on each, with TF_CONFIG naming all of them and this
one's index (``{"cluster": {"worker": ["host0:port", "host1:port"]}, "task": {"type": "worker",
"index": 0}}``). Every worker reads the whole data folder (each takes its share of every global
batch), so it must be on shared storage; worker 0 writes the model folder."""
from __future__ import annotations

import tempfile
import time

from tworec.contract import PROTOCOLS
from tworec.errors import UserError
from tworec.layout import DataLayout
from tworec.progress import spinner
from tworec.tf_setup import keras, tf
from tworec.towers.artifact import RetrievalArtifact
from tworec.towers.catalog import Catalog, data_vocabularies, load_catalog
from tworec.towers.config import RetrievalConfig
from tworec.towers.encoder_cache import build_encoder, content_vectors, token_states
from tworec.towers.features import Lookups, interaction_dataset
from tworec.towers.model import FinetuneParts, TwoTowerModel
from tworec.towers.live_counts import PostTrainingEvents
from tworec.towers.scoring import RetrievalScorer
from tworec.towers.selection import (
    ValidationHitRate, fit_click_prior, fit_live_weight, fit_new_item_offset, validation_split,
)
from tworec.training import (
    Throughput, TrainingFolder, adam, default_strategy, fit_summary, is_chief, progress_callbacks, training_callbacks,
    transfer_weights, verbosity,
)


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


class TooFewExamples(UserError):
    """The train split is too small to train on; the message says how many it needs."""


MIN_TRAIN_EXAMPLES = 64  # fewer cannot make one meaningful in-batch softmax


def batch_size_for(data_dir: str, split, config: RetrievalConfig, replicas: int) -> int:
    """``config.batch_size``, or for a train split smaller than one batch (the reduced form for small
    data) the whole split as one batch; TooFewExamples below MIN_TRAIN_EXAMPLES."""
    examples = DataLayout(data_dir).split_examples(split)
    if examples is None or examples >= config.batch_size:
        return config.batch_size
    if examples < MIN_TRAIN_EXAMPLES:
        raise TooFewExamples(f"retrieval needs at least {MIN_TRAIN_EXAMPLES} examples in the {split.value} split; "
                             f"{data_dir} has {examples}: use more data")
    return examples - examples % replicas


def train_retrieval(data_dir: str, out_dir: str, config: RetrievalConfig = RetrievalConfig(),
                    strategy: tf.distribute.Strategy | None = None, verbose: int | None = None,
                    callbacks=(), warm_start: str | None = None) -> RetrievalArtifact:
    """Trains on ``data_dir`` (a ``tworec data`` folder) and writes the model folder ``out_dir``.

    ``warm_start``: a previous model folder to continue from (a refresh on newer data): its
    vocabularies grow by the new data's new ids, appended, so every old id keeps its row and
    weights; new rows start fresh. Its architecture settings must equal ``config``'s, and the data
    folder it was trained on must still be readable (its catalog rebuilds it)."""
    layout = DataLayout(data_dir)
    protocol = PROTOCOLS[config.protocol]
    previous = _warm_start_source(warm_start, config)
    vocabularies = previous.vocabularies.grown(data_vocabularies(data_dir, protocol.train)[0]) if previous else None
    catalog = load_catalog(data_dir, protocol.train, vocabularies)
    strategy = strategy or default_strategy()
    if not is_chief(strategy):  # every worker saves (saving is collective); the chief's folder is the model
        out_dir = tempfile.mkdtemp(prefix="tworec-worker-")
    batch_size = batch_size_for(data_dir, protocol.train, config, strategy.num_replicas_in_sync)
    lookups = Lookups(catalog.item_ids, catalog.user_vocab)
    paths = TrainingFolder.paths(out_dir)

    def dataset(split, shuffle):
        return interaction_dataset(layout.split_pattern(split), lookups, config.history_length,
                                   batch_size, shuffle=shuffle, seed=config.seed, drop_remainder=True)

    train_data = dataset(protocol.train, True)
    with strategy.scope():
        model = build_model(config, catalog)
        model.compile(optimizer=adam(config.learning_rate, lazy=catalog.size > config.lazy_adam_above))
        first = next(iter(train_data))
        model(first)  # builds the model, so an interrupted run can resume from its backup
        model.compute_loss(first)
        warm = transfer_weights(_built(previous.restore().model, previous.config), model) if previous else {}
    throughput = Throughput(batch_size)
    started = time.time()
    # The TFRS protocol has no validation split: fixed epochs, no early stopping.
    validation = dataset(protocol.valid, False) if protocol.valid else None
    judged = None  # the validation split as eval judges test: for the selection and the offset
    if validation is not None and (config.selection_k or (config.uses_content and config.new_item_offset is None)):
        judged = validation_split(data_dir, catalog, config.validation_queries)
    selection = []
    monitor = "val_loss"
    if validation is not None and config.selection_k:
        selection = [ValidationHitRate(judged, lookups, config.history_length, config.selection_k)]
        monitor = selection[0].key
    cbs = [*selection,
           *training_callbacks(paths["backup"], paths["logs"], paths["checkpoint"] if validation is not None else None,
                               config.patience, config.min_steps_before_stopping, monitor),
           throughput, *progress_callbacks(batch_size, verbose), *callbacks]
    history = model.fit(train_data, validation_data=validation,
                        epochs=config.epochs, steps_per_epoch=config.steps_per_epoch or None,
                        callbacks=cbs, verbose=verbosity(verbose))
    offset_fit, live_fit = {}, {}
    if config.new_item_offset is not None:
        model.new_item_offset = float(config.new_item_offset)
    elif judged is not None and config.uses_content:
        with spinner("fitting the new-item offset on validation"):
            model.new_item_offset, offset_fit = fit_new_item_offset(
                model, judged, lookups, config.history_length, config.selection_k or 100)
    live_weight = config.live_weight or 0.0
    if config.live_weight is None and protocol.valid is not None:
        judged = judged or validation_split(data_dir, catalog, config.validation_queries)
        scorer = RetrievalScorer.of_model(model, lookups, config.history_length, judged)
        with spinner("fitting the live-count weight on validation"):
            live_weight, live_fit = fit_live_weight(scorer, judged, PostTrainingEvents.of_splits(data_dir, catalog),
                                                    config.live_half_life_s, config.live_tail_floor)
    click_prior = None
    if protocol.valid is not None and config.uses_content:
        judged = judged or validation_split(data_dir, catalog, config.validation_queries)
        with spinner("fitting the exploration click prior on validation"):
            click_prior = fit_click_prior(RetrievalScorer.of_model(model, lookups, config.history_length, judged),
                                          judged, config.click_prior_base_rate, seed=config.seed)
    held_out = None
    if protocol.valid is not None:
        judged = judged or validation_split(data_dir, catalog, config.validation_queries)
        held_out = judged.queries(model, lookups, config.history_length).query
    summary = {
        **fit_summary(strategy, history, monitor if validation is not None else None),
        "train_examples_per_second": round(throughput.per_second, 1),
        "batch_size": batch_size,
        "seconds": round(time.time() - started, 1),
        # validation HitRate@K per offset tried (K as the selection's)
        "new_item_offset_fit": {f"{o:g}": round(v, 4) for o, v in offset_fit.items()},
        # validation [HitRate@200, tail HitRate@10] per live weight tried
        "live_weight_fit": {f"{w:g}": v for w, v in live_fit.items()},
        "warm_start": {"from": str(previous.path.resolve()), **warm} if previous else None,
    }
    return RetrievalArtifact.save(out_dir, model, catalog, config, data_dir, summary, live_weight, click_prior,
                                  held_out)



def _built(model: TwoTowerModel, config: RetrievalConfig) -> TwoTowerModel:
    """``model`` with every layer built (a restored model builds its layers on first call)."""
    n = config.history_length
    model({"user_row": tf.constant([0]), "history_rows": tf.constant([[0] + [-1] * (n - 1)]),
           "history_timestamps": tf.zeros([1, n], tf.int64), "timestamp": tf.zeros([1], tf.int64)})
    return model


def _warm_start_source(path: str | None, config: RetrievalConfig) -> RetrievalArtifact | None:
    if path is None:
        return None
    previous = RetrievalArtifact.load(path)
    differences = config.architecture_differences(previous.config)
    if differences:
        raise UserError(f"cannot warm-start from {path}: its architecture differs ({', '.join(differences)})")
    return previous
