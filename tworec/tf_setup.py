"""Import TensorFlow the way this project needs it: Keras 2 (tf-keras) for TFRS, quiet logs.

Every module that uses TensorFlow imports ``tf`` and ``keras`` from here, so the environment is
set before TensorFlow is first imported."""
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402

__all__ = ["tf", "keras"]


def limit_threads(threads: int) -> bool:
    """Caps TensorFlow's intra- and inter-op threads of this process (0: leave its defaults).

    For a serving process making many small calls: idle pool threads spin between ops and take
    CPU from the other work on the machine. Only possible before TensorFlow's runtime starts;
    returns whether it applied."""
    if threads <= 0:
        return False
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:  # the runtime is already running (e.g. tests that trained in-process)
        return False
    return True
