"""tf.data input pipelines: interaction TFRecords (tworec.contract) → the towers' features.

    user_row            int32 [B]      row of the user embedding (0 = unknown user)
    item_row            int32 [B]      catalog row of the target item
    history_rows        int32 [B, N]   catalog rows of the history, most recent first, -1 = padding
    history_timestamps  int64 [B, N]
    timestamp           int64 [B]
"""
from __future__ import annotations

import glob

from tworec import contract
from tworec.tf_setup import tf


class Lookups:
    """String → row tables for items (catalog rows) and users (1 + vocabulary index)."""

    def __init__(self, item_ids, user_vocab):
        self.items = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(tf.constant(list(item_ids)),
                                                tf.range(len(item_ids), dtype=tf.int32)), -1)
        self.users = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(tf.constant(list(user_vocab) or [""]),
                                                tf.range(1, max(len(user_vocab), 1) + 1, dtype=tf.int32)), 0)

    def features(self, parsed: dict, history_length: int) -> dict:
        history = parsed[contract.HISTORY_ITEM_IDS.name][:, :history_length]
        history_ts = parsed[contract.HISTORY_TIMESTAMPS.name][:, :history_length]
        rows = tf.ragged.map_flat_values(self.items.lookup, history)
        return {
            "user_row": self.users.lookup(parsed[contract.USER_ID.name]),
            "item_row": self.items.lookup(parsed[contract.ITEM_ID.name]),
            "history_rows": rows.to_tensor(default_value=-1, shape=[None, history_length]),
            "history_timestamps": history_ts.to_tensor(default_value=0, shape=[None, history_length]),
            "timestamp": parsed[contract.TIMESTAMP.name],
        }


def interaction_dataset(pattern: str, lookups: Lookups, history_length: int, batch_size: int,
                        shuffle: bool = False, seed: int = 0, drop_remainder: bool = False,
                        repeat: bool = False):
    files = sorted(glob.glob(pattern))
    if not files:
        raise FileNotFoundError(f"no TFRecords match {pattern}")
    spec = contract.tfrecord_spec(contract.INTERACTION_FEATURES)
    ds = tf.data.TFRecordDataset(files, compression_type="GZIP")
    if shuffle:
        ds = ds.shuffle(100_000, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    # Examples whose item is missing from the catalog cannot be targets (the data job rejects
    # them; this guards hand-made inputs), so they are dropped before batching.
    ds = ds.filter(lambda record: lookups.items.lookup(
        tf.io.parse_single_example(record, {contract.ITEM_ID.name: spec[contract.ITEM_ID.name]})
        [contract.ITEM_ID.name]) >= 0)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    ds = ds.map(lambda batch: lookups.features(tf.io.parse_example(batch, spec), history_length),
                num_parallel_calls=tf.data.AUTOTUNE)
    # Across workers, each global batch is split between them (every worker reads every file):
    # the same global batches as one process, whatever the number of files.
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.with_options(options).prefetch(tf.data.AUTOTUNE)
