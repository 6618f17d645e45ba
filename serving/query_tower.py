"""The exported query tower as the gateway calls it: once per request, batch 1.

At load the serving signature is frozen (variables become constants) and compiled with XLA for
the one shape a request has ([1, history length, ...]). Called through its plain signature the
tower spends most of its ~1 ms in TensorFlow's per-call Python overhead; compiled and fed by
DLPack it takes about half of that (benchmarks/bench_gateway.py shows the share)."""
from __future__ import annotations

import numpy as np

from tworec.tf_setup import tf

_ALIGNMENT = 64  # TensorFlow CHECK-fails (ending the process) on less-aligned DLPack memory


def _aligned(array: np.ndarray) -> np.ndarray:
    raw = np.empty(array.nbytes + _ALIGNMENT, np.uint8)
    offset = -raw.ctypes.data % _ALIGNMENT
    out = raw[offset:offset + array.nbytes].view(array.dtype).reshape(array.shape)
    out[...] = array
    return out


class QueryTower:
    OUTPUT = "query_embedding"

    def __init__(self, savedmodel: str, history_length: int, dim: int):
        from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

        self._loaded = tf.saved_model.load(savedmodel)
        signature = self._loaded.signatures["serving_default"]
        frozen = convert_variables_to_constants_v2(signature)
        self._order = [t.name.split(":")[0] for t in frozen.inputs]
        shapes = {"user_row": [1], "timestamp": [1], "history_mask": [1, history_length],
                  "history_timestamps": [1, history_length], "history_embeddings": [1, history_length, dim]}
        dtypes = {t.name.split(":")[0]: t.dtype for t in frozen.inputs}
        structure = signature.structured_outputs
        compiled = tf.function(lambda *args: tf.nest.pack_sequence_as(structure, frozen(*args))[self.OUTPUT],
                               jit_compile=True, autograph=False)
        self._fn = compiled.get_concrete_function(*[tf.TensorSpec(shapes[n], dtypes[n]) for n in self._order])
        self._fn(*[tf.zeros(shapes[n], dtypes[n]) for n in self._order])  # compile now, not on a request

    def __call__(self, user_row: int, history_embeddings: np.ndarray, history_mask: np.ndarray,
                 timestamp: int, history_timestamps: np.ndarray) -> np.ndarray:
        """One request: history arrays [history length, ...] → the query embedding [dim]."""
        feeds = {"user_row": np.array([user_row], np.int32), "timestamp": np.array([timestamp], np.int64),
                 "history_embeddings": history_embeddings[np.newaxis].astype(np.float32, copy=False),
                 "history_mask": history_mask[np.newaxis].astype(np.float32, copy=False),
                 "history_timestamps": history_timestamps[np.newaxis].astype(np.int64, copy=False)}
        # The aligned arrays stay referenced (feeds → args) until the call returns.
        args = [_aligned(feeds[n]) for n in self._order]
        return self._fn(*[tf.experimental.dlpack.from_dlpack(a.__dlpack__()) for a in args]).numpy()[0]
