"""Trains the ranker under MirroredStrategy over two logical CPU devices (a subprocess: logical
devices must be set before TensorFlow initialises). Prints the training summary as JSON."""
import json
import sys

from tworec.tf_setup import tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

from tworec.ranking.config import RankerConfig  # noqa: E402
from tworec.ranking.train import train_ranker  # noqa: E402

data_dir, retrieval_dir, out_dir = sys.argv[1:4]
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
summary = train_ranker(data_dir, retrieval_dir, out_dir, RankerConfig.tiny(epochs=2), strategy=strategy, verbose=0).summary
print(json.dumps(summary))
