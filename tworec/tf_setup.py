"""Import TensorFlow the way this project needs it: Keras 2 (tf-keras) for TFRS, quiet logs.

Every module that uses TensorFlow imports ``tf`` and ``keras`` from here, so the environment is
set before TensorFlow is first imported."""
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402

__all__ = ["tf", "keras"]
