"""The exported query tower as the gateway calls it: once per request, batch 1.

At load the serving signature is frozen (variables become constants) and compiled with XLA for
the one shape a request has (the signature's shapes with a batch of 1). Called through its plain
signature the tower spends most of its ~1 ms in TensorFlow's per-call Python overhead; compiled
and fed by DLPack it takes about half of that (benchmarks/bench_gateway.py shows the share)."""
from __future__ import annotations

import numpy as np

from tworec.tf_setup import tf

_ALIGNMENT = 64  # TensorFlow CHECK-fails (ending the process) on less-aligned DLPack memory


def _aligned(array: np.ndarray, shape: tuple, dtype) -> np.ndarray:
    """``array`` as ``shape``/``dtype`` in a new 64-byte-aligned buffer (one copy, cast included)."""
    dtype = np.dtype(dtype)
    size = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    raw = np.empty(size + _ALIGNMENT, np.uint8)
    offset = -raw.ctypes.data % _ALIGNMENT
    out = raw[offset:offset + size].view(dtype).reshape(shape)
    out[...] = np.reshape(array, shape)
    return out


class QueryTower:
    def __init__(self, savedmodel: str):
        from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

        self._loaded = tf.saved_model.load(savedmodel)
        signature = self._loaded.signatures["serving_default"]
        frozen = convert_variables_to_constants_v2(signature)
        (self._output,) = signature.structured_outputs  # the one output: the query embedding
        # (name, shape with batch 1, numpy dtype) in the frozen function's argument order.
        self._inputs = [(t.name.split(":")[0], (1, *t.shape[1:]), t.dtype.as_numpy_dtype) for t in frozen.inputs]
        structure = signature.structured_outputs
        compiled = tf.function(lambda *args: tf.nest.pack_sequence_as(structure, frozen(*args))[self._output],
                               jit_compile=True, autograph=False)
        specs = [tf.TensorSpec(shape, dtype) for _, shape, dtype in self._inputs]
        self._fn = compiled.get_concrete_function(*specs)
        self._fn(*[tf.zeros(s.shape, s.dtype) for s in specs])  # compile now, not on a request

    def __call__(self, **request) -> np.ndarray:
        """One request's inputs by signature name, without the batch dimension → the query [dim]."""
        # The aligned arrays stay referenced (args) until the call returns.
        args = [_aligned(request[name], shape, dtype) for name, shape, dtype in self._inputs]
        return self._fn(*[tf.experimental.dlpack.from_dlpack(a.__dlpack__()) for a in args]).numpy()[0]
