"""``tworec train-ranker``: mine lists with the trained retrieval model, train the ranker under a
``tf.distribute`` strategy, and write the folder a ``RankerArtifact`` owns (ranking/artifact.py)."""
from __future__ import annotations

import time

import numpy as np

from tworec.contract import Split
from tworec.errors import UserError
from tworec.layout import DataLayout
from tworec.ranking.artifact import RankerArtifact
from tworec.ranking.config import RankerConfig
from tworec.ranking.features import build_tables, user_attributes
from tworec.ranking.lists import RankingLists, list_dataset, mine_lists, repeat_new_item_positives
from tworec.ranking.model import RankingModel, build_scorer
from tworec.tf_setup import tf
from tworec.towers.artifact import RetrievalArtifact
from tworec.towers.live_counts import PostTrainingEvents
from tworec.towers.queries import split_queries
from tworec.training import (
    Throughput, TrainingFolder, adam, default_strategy, fit_summary, training_callbacks, transfer_weights, verbosity,
)


class TooFewLists(UserError):
    """The data gave the ranker fewer training lists than it needs; the message says how many."""


def train_ranker(data_dir: str, retrieval_dir: str, out_dir: str, config: RankerConfig = RankerConfig(),
                 strategy: tf.distribute.Strategy | None = None, verbose: int | None = None,
                 warm_start: str | None = None) -> RankerArtifact:
    """Trains the ranker of ``retrieval_dir`` on ``data_dir`` into ``out_dir``. ``warm_start``: a
    previous ranker folder to continue from (its retrieval model warm-started the new one, so
    every old id keeps its row); its attribute vocabulary grows the same way."""
    layout = DataLayout(data_dir)
    retrieval_artifact = RetrievalArtifact.load(retrieval_dir)
    retrieval = retrieval_artifact.restore(data_dir)
    model_r, catalog, lookups, rconfig = retrieval.model, retrieval.catalog, retrieval.lookups, retrieval.config
    item_embeddings = model_r.item_embeddings()
    previous = RankerArtifact.load(warm_start) if warm_start else None
    tables = build_tables(catalog, item_embeddings, user_attributes(data_dir),
                          previous.tables().attributes if previous else ())
    # Live counts as the gateway will hold them: validation interactions strictly before each list.
    live = retrieval_artifact.live_term(PostTrainingEvents.of_splits(data_dir, catalog))
    mined = [mine_lists(split_queries(model_r, lookups, layout.split_pattern(Split(s)), rconfig.history_length,
                                      limit=config.mining_queries or None),
                        item_embeddings, config, seed=config.seed + i, score_shift=model_r.score_shift(), live=live)
             for i, s in enumerate(config.splits)]
    lists = RankingLists.concat(mined)
    order = np.random.default_rng(config.seed).permutation(len(lists))
    held = max(1, int(len(lists) * config.holdout_fraction))
    train_lists, holdout_lists = lists.subset(np.sort(order[held:])), lists.subset(np.sort(order[:held]))
    if len(train_lists) < config.min_lists:
        raise TooFewLists(
            f"the ranker needs at least {config.min_lists:,} training lists (its min_lists setting); the {'/'.join(config.splits)} "
            f"split gave {len(train_lists):,} (interactions whose item retrieval put in its top {config.candidates}, "
            f"less {config.holdout_fraction:.0%} held out): use more data")
    train_lists = repeat_new_item_positives(train_lists, tables.item_row, config.new_item_positive_repeats)
    # Reduced form for small data: fewer lists than one batch train in batches of all of them.
    batch_size = min(config.batch_size, len(train_lists))

    strategy = strategy or default_strategy()
    train_data = list_dataset(train_lists, tables, batch_size, shuffle=True, seed=config.seed,
                              drop_remainder=True)
    holdout_data = list_dataset(holdout_lists, tables, config.batch_size)
    with strategy.scope():
        scorer = build_scorer(config, tables, len(catalog.user_vocab), len(catalog.categories), rconfig.temperature)
        model = RankingModel(scorer)
        model.compile(optimizer=adam(config.learning_rate, lazy=catalog.size > config.lazy_adam_above))
        model(next(iter(holdout_data)))  # builds the variables, so an interrupted run can resume
        warm = transfer_weights(RankingModel(previous.restore()[0]), model) if previous else {}
    throughput = Throughput(batch_size * config.list_size)
    paths = TrainingFolder.paths(out_dir)
    callbacks = [*training_callbacks(paths["backup"], paths["logs"], paths["checkpoint"], config.patience), throughput]
    started = time.time()
    history = model.fit(train_data, validation_data=holdout_data, epochs=config.epochs,
                        callbacks=callbacks, verbose=verbosity(verbose))
    summary = {
        "lists": {"train": len(train_lists), "holdout": len(holdout_lists), "list_size": config.list_size},
        "batch_size": batch_size,
        "warm_start": {"from": str(previous.path.resolve()), **warm} if previous else None,
        **fit_summary(strategy, history),
        "train_rows_per_second": round(throughput.per_second, 1),
        "seconds": round(time.time() - started, 1),
    }
    return RankerArtifact.save(out_dir, model, scorer, tables, config, retrieval_artifact, data_dir,
                               len(catalog.user_vocab), len(catalog.categories), summary)
