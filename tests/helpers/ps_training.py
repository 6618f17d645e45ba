"""The retrieval model trained with ParameterServerStrategy on an in-process cluster: two workers
and two parameter servers on loopback, the item tables partitioned across the servers. Prints JSON
{"shards": {variable: [[device, rows], ...]}, "losses": [...], "first_batch": [before, after],
"rows_changed": share of the table's rows trained, "embeddings_match": bool}."""
import faulthandler
import json
import os
import sys
import threading

# Should the in-process cluster still get stuck (threads asleep, no error), the run exits with
# every thread's stack and code STUCK instead of holding CI for minutes.
WATCHDOG_S, STUCK = 120, 86


def _stuck():
    faulthandler.dump_traceback(all_threads=True)
    os._exit(STUCK)


watchdog = threading.Timer(WATCHDOG_S, _stuck)
watchdog.daemon = True
watchdog.start()

from tworec.tf_setup import keras, tf
from tworec.contract import Split
from tworec.layout import DataLayout
from tworec.towers.catalog import load_catalog
from tworec.towers.config import RetrievalConfig
from tworec.towers.features import Lookups, interaction_dataset
from tworec.towers.train import build_model
from training_probe import EpochLosses, free_ports


data_dir = sys.argv[1]
p = free_ports(4)
cluster = tf.train.ClusterSpec({"worker": [f"127.0.0.1:{p[0]}", f"127.0.0.1:{p[1]}"],
                                "ps": [f"127.0.0.1:{p[2]}", f"127.0.0.1:{p[3]}"]})
# In one process, each server needs enough inter-op threads not to wait on another's work
# (TensorFlow's advice for in-process clusters): a worker's input pipeline has a parallel map
# whose functions need the same pool, and too few threads deadlock it.
server_config = tf.compat.v1.ConfigProto(inter_op_parallelism_threads=16)
servers = [tf.distribute.Server(cluster, job_name=job, task_index=i, protocol="grpc", config=server_config,
                                start=True) for job in ("worker", "ps") for i in range(2)]
resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(cluster, rpc_layer="grpc")
# Every variable with at least 2 rows is split in two, one shard per parameter server.
strategy = tf.distribute.experimental.ParameterServerStrategy(
    resolver, variable_partitioner=tf.distribute.experimental.partitioners.FixedShardsPartitioner(2))

config = RetrievalConfig.tiny(batch_size=64, learning_rate=0.01, id_dropout=0.0, user_dropout=0.0)
catalog = load_catalog(data_dir)
pattern = DataLayout(data_dir).split_pattern(Split.TRAIN)


def dataset_fn(context):
    lookups = Lookups(catalog.item_ids, catalog.user_vocab)  # built on the worker that reads
    return interaction_dataset(pattern, lookups, config.history_length, config.batch_size, shuffle=True,
                               drop_remainder=True, repeat=True)


lookups = Lookups(catalog.item_ids, catalog.user_vocab)
first = next(iter(interaction_dataset(pattern, lookups, config.history_length, config.batch_size,
                                      drop_remainder=True)))
with strategy.scope():
    model = build_model(config, catalog)
    before = float(model.compute_loss(first))  # builds the variables on the servers, partitioned
    model.compile(optimizer=keras.optimizers.Adam(config.learning_rate), steps_per_execution=1)
initial = tf.concat([v.read_value() for v in model.item_tower.id_embedding.embeddings.variables], 0).numpy()
record = EpochLosses()
model.fit(keras.utils.experimental.DatasetCreator(dataset_fn), epochs=3, steps_per_epoch=20, callbacks=[record],
          verbose=0)
table = model.item_tower.id_embedding.embeddings
shards = {"item_id_embedding": [[v.device, int(v.shape[0])] for v in table.variables]}
# The coordinator reads the partitioned table whole: the embeddings are the table's rows.
rows = tf.constant([1, 2, len(catalog.item_vocab) - 1], tf.int32)
whole = tf.concat([v.read_value() for v in table.variables], 0)
looked_up = model.item_tower.id_embedding(rows).numpy()
print(json.dumps({"shards": shards, "losses": record.values, "vocab": len(catalog.item_vocab) + 1,
                  "first_batch": [before, float(model.compute_loss(first))],
                  "rows_changed": float((abs(whole.numpy() - initial).max(1) > 0).mean()),
                  "embeddings_match": bool(abs(tf.gather(whole, rows).numpy() - looked_up).max() < 1e-6)}))
