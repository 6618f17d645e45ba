"""Per-step training losses under MultiWorkerMirroredStrategy, one process per worker on loopback.

    python multiworker_losses.py DATA_DIR single WEIGHTS.npz          # one process, the baseline
    python multiworker_losses.py DATA_DIR worker WEIGHTS.npz INDEX PORT0,PORT1

``single`` trains on one device and writes its initial weights to WEIGHTS.npz; each ``worker``
(TF_CONFIG set from INDEX and the ports) starts from them. Both print JSON {"losses": [...]}: the
loss Keras logged per step, the global batch's mean."""
import json
import os
import sys

data_dir, mode, weights_path = sys.argv[1:4]
if mode == "worker":
    index, ports = int(sys.argv[4]), sys.argv[5].split(",")
    os.environ["TF_CONFIG"] = json.dumps({"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
                                          "task": {"type": "worker", "index": index}})

import numpy as np  # noqa: E402

from tworec.tf_setup import keras, tf  # noqa: E402
from tworec.contract import Split  # noqa: E402
from tworec.layout import DataLayout  # noqa: E402
from tworec.towers.catalog import load_catalog  # noqa: E402
from tworec.towers.config import RetrievalConfig  # noqa: E402
from tworec.towers.features import Lookups, interaction_dataset  # noqa: E402
from tworec.towers.train import build_model  # noqa: E402
from training_probe import BatchLosses  # noqa: E402
from tworec.training import default_strategy  # noqa: E402

STEPS = 6
strategy = default_strategy()  # MultiWorkerMirroredStrategy when TF_CONFIG names several workers
config = RetrievalConfig.tiny(id_dropout=0.0, user_dropout=0.0, batch_size=64, learning_rate=0.01)
catalog = load_catalog(data_dir)
lookups = Lookups(catalog.item_ids, catalog.user_vocab)
data = interaction_dataset(DataLayout(data_dir).split_pattern(Split.TRAIN), lookups, config.history_length,
                           config.batch_size, drop_remainder=True).take(STEPS)
first = next(iter(data))


with strategy.scope():
    model = build_model(config, catalog)
    model.compute_loss(first)
    if mode == "worker":
        saved = np.load(weights_path)
        model.set_weights([saved[f"w{i}"] for i in range(len(saved.files))])
    model.compile(optimizer=keras.optimizers.SGD(config.learning_rate))
if mode == "single":
    np.savez(weights_path, **{f"w{i}": w for i, w in enumerate(model.get_weights())})
record = BatchLosses()
model.fit(data, epochs=1, callbacks=[record], verbose=0)
print(json.dumps({"losses": record.values, "replicas": strategy.num_replicas_in_sync,
                  "multi_worker": isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)}))
