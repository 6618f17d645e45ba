"""Per-step training losses of the same model, data and initial weights on one device and under
MirroredStrategy with two logical CPU devices. Run as a subprocess: logical devices must be set
before TensorFlow initialises. Prints JSON {"single": [...], "mirrored": [...]}."""
import json
import sys

from tworec.tf_setup import keras, tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

from tworec.contract import Split  # noqa: E402
from tworec.layout import DataLayout  # noqa: E402
from tworec.towers.catalog import load_catalog  # noqa: E402
from tworec.towers.config import RetrievalConfig  # noqa: E402
from tworec.towers.features import Lookups, interaction_dataset  # noqa: E402
from tworec.towers.train import build_model  # noqa: E402
from training_probe import BatchLosses  # noqa: E402

data_dir, gather = sys.argv[1], sys.argv[2] == "gather"
STEPS = 8
config = RetrievalConfig.tiny(id_dropout=0.0, user_dropout=0.0, batch_size=64,
                              cross_replica_negatives=gather, learning_rate=0.01)
catalog = load_catalog(data_dir)
lookups = Lookups(catalog.item_ids, catalog.user_vocab)
data = interaction_dataset(DataLayout(data_dir).split_pattern(Split.TRAIN), lookups,
                           config.history_length, config.batch_size, drop_remainder=True).take(STEPS)
first = next(iter(data))


def losses(strategy, initial=None):
    """(initial weights, per-step losses, the first batch's loss before and after the steps)."""
    with strategy.scope():
        model = build_model(config, catalog)
        model.compute_loss(first)
        if initial is not None:
            model.set_weights(initial)
        model.compile(optimizer=keras.optimizers.SGD(config.learning_rate))
    weights = model.get_weights()
    before = float(model.compute_loss(first))
    record = BatchLosses()
    model.fit(data, epochs=1, callbacks=[record], verbose=0)
    return weights, record.values, [before, float(model.compute_loss(first))]


initial, single, first_batch = losses(tf.distribute.OneDeviceStrategy("/cpu:0"))
_, mirrored, _ = losses(tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]), initial)
print(json.dumps({"single": single, "mirrored": mirrored, "first_batch": first_batch}))
