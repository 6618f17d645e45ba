"""``tworec train-ranker``: mine lists with the trained retrieval model, train the ranker under
``tf.distribute.MirroredStrategy``, write weights and the serving SavedModel.

A ranker folder holds:
    ranker.json     config, the retrieval model and data it was built on, training summary
    weights/        the best weights (TensorFlow checkpoint format)
    tables.npz      the feature tables (tworec.ranking.features.RankerTables) + attribute vocabulary
    savedmodel/     signatures: serving_default (what Triton serves: the inputs packed per dtype,
                    contract.ranker_packed_inputs → score) and "rows" (RANKER_INPUTS by name → score)
    checkpoints/, backup/, logs/   as in the retrieval trainer
"""
from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np

from tworec.contract import Split
from tworec.layout import DataLayout
from tworec.ranking.config import RankerConfig
from tworec.ranking.features import RankerTables, build_tables, user_attributes
from tworec.ranking.lists import RankingLists, list_dataset, mine_lists, repeat_new_item_positives
from tworec.ranking.model import RankingModel, RankingScorer, packed_serving_signature, serving_signature
from tworec.tf_setup import keras, tf
from tworec.towers.queries import split_queries
from tworec.towers.train import Throughput, default_strategy, fit_summary, load_retrieval, training_callbacks, \
    verbosity

SAVEDMODEL = "savedmodel"
ROWS_SIGNATURE = "rows"


def build_scorer(config: RankerConfig, tables: RankerTables, num_users: int, num_categories: int,
                 retrieval_temperature: float) -> RankingScorer:
    keras.utils.set_random_seed(config.seed)
    return RankingScorer(config, num_users=num_users, num_items=tables.num_item_ids - 1,
                         num_categories=num_categories, num_attributes=len(tables.attributes),
                         retrieval_temperature=retrieval_temperature, name="ranking_scorer")


def train_ranker(data_dir: str, retrieval_dir: str, out_dir: str, config: RankerConfig = RankerConfig(),
                 strategy: tf.distribute.Strategy | None = None, verbose: int | None = None) -> dict:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    layout = DataLayout(data_dir)
    retrieval, catalog, lookups, rconfig = load_retrieval(retrieval_dir, data_dir)
    item_embeddings = retrieval.item_embeddings()
    tables = build_tables(catalog, item_embeddings, user_attributes(data_dir))
    mined = [mine_lists(split_queries(retrieval, lookups, layout.split_pattern(Split(s)), rconfig.history_length),
                        item_embeddings, config, seed=config.seed + i, score_shift=retrieval.score_shift())
             for i, s in enumerate(config.splits)]
    lists = RankingLists.concat(mined)
    order = np.random.default_rng(config.seed).permutation(len(lists))
    held = max(1, int(len(lists) * config.holdout_fraction))
    train_lists, holdout_lists = lists.subset(np.sort(order[held:])), lists.subset(np.sort(order[:held]))
    train_lists = repeat_new_item_positives(train_lists, tables.item_row, config.new_item_positive_repeats)

    strategy = strategy or default_strategy()
    train_data = list_dataset(train_lists, tables, config.batch_size, shuffle=True, seed=config.seed,
                              drop_remainder=True)
    holdout_data = list_dataset(holdout_lists, tables, config.batch_size)
    with strategy.scope():
        scorer = build_scorer(config, tables, len(catalog.user_vocab), len(catalog.categories), rconfig.temperature)
        model = RankingModel(scorer)
        model.compile(optimizer=keras.optimizers.Adam(config.learning_rate))
        model(next(iter(holdout_data)))  # builds the variables, so an interrupted run can resume
    throughput = Throughput(config.batch_size * config.list_size)
    callbacks = [*training_callbacks(out, config.patience), throughput]
    started = time.time()
    history = model.fit(train_data, validation_data=holdout_data, epochs=config.epochs,
                        callbacks=callbacks, verbose=verbosity(verbose))
    model.save_weights(str(out / "weights" / "model"))
    shutil.rmtree(out / "backup", ignore_errors=True)
    save_tables(tables, out / "tables.npz")
    export_savedmodel(scorer, rconfig.embedding_dim, out / SAVEDMODEL)
    summary = {
        "retrieval": os.path.abspath(retrieval_dir),
        "data": os.path.abspath(data_dir),
        "config": json.loads(config.to_json()),
        "num_users": len(catalog.user_vocab),
        "num_categories": len(catalog.categories),
        "embedding_dim": rconfig.embedding_dim,
        "retrieval_temperature": rconfig.temperature,
        "lists": {"train": len(train_lists), "holdout": len(holdout_lists), "list_size": config.list_size},
        **fit_summary(strategy, history),
        "train_rows_per_second": round(throughput.per_second, 1),
        "seconds": round(time.time() - started, 1),
    }
    (out / "ranker.json").write_text(json.dumps(summary, indent=2))
    return summary


def save_tables(tables: RankerTables, path: Path):
    np.savez(path, item_row=tables.item_row, item_category_rows=tables.item_category_rows,
             item_embedding=tables.item_embedding, item_log_popularity=tables.item_log_popularity,
             user_attribute_rows=tables.user_attribute_rows, attributes=np.array(tables.attributes, dtype=str))


def load_tables(path) -> RankerTables:
    with np.load(path, allow_pickle=False) as z:
        return RankerTables(z["item_row"], z["item_category_rows"], z["item_embedding"], z["item_log_popularity"],
                            z["user_attribute_rows"], [str(a) for a in z["attributes"]])


def export_savedmodel(scorer: RankingScorer, embedding_dim: int, path: Path):
    """The scorer with its batched serving signature; replaced whole, never half-written."""
    module = tf.Module()
    module.scorer = scorer
    module.serve = packed_serving_signature(scorer, embedding_dim)
    module.serve_rows = serving_signature(scorer, embedding_dim)
    tmp = Path(f"{path}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tf.saved_model.save(module, str(tmp), signatures={"serving_default": module.serve,
                                                      ROWS_SIGNATURE: module.serve_rows})
    shutil.rmtree(path, ignore_errors=True)
    os.replace(tmp, path)


def load_ranker(ranker_dir: str):
    """A ranker folder → (scorer with its trained weights, tables, metadata)."""
    meta = json.loads((Path(ranker_dir) / "ranker.json").read_text())
    config = RankerConfig.from_dict(meta["config"])
    tables = load_tables(Path(ranker_dir) / "tables.npz")
    scorer = build_scorer(config, tables, meta["num_users"], meta["num_categories"], meta["retrieval_temperature"])
    model = RankingModel(scorer)
    model.load_weights(str(Path(ranker_dir) / "weights" / "model")).expect_partial()
    return scorer, tables, meta
