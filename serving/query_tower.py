"""The exported query tower as the gateway calls it: once per request, batch 1.

At load the serving signature is frozen (variables become constants) and compiled with XLA for
the one shape a request has (the signature's shapes with a batch of 1). Called through its plain
signature the tower spends most of its ~1 ms in TensorFlow's per-call Python overhead; compiled,
called flat and fed by DLPack from reused buffers it takes a fraction of that
(benchmarks/bench_gateway.py shows the share)."""
from __future__ import annotations

import threading

import numpy as np

from tworec.export.triton_python_model import flat_caller, shared_inputs
from tworec.tf_setup import tf


class QueryTower:
    def __init__(self, savedmodel: str):
        from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

        self._loaded = tf.saved_model.load(savedmodel)
        signature = self._loaded.signatures["serving_default"]
        frozen = convert_variables_to_constants_v2(signature)
        (self._output,) = signature.structured_outputs  # the one output: the query embedding
        # (name, shape with batch 1, numpy dtype) in the frozen function's argument order.
        self._inputs = [(t.name.split(":")[0], (1, *t.shape[1:]), t.dtype.as_numpy_dtype) for t in frozen.inputs]
        compiled = tf.function(lambda *args: tf.nest.pack_sequence_as(signature.structured_outputs,
                                                                      frozen(*args))[self._output],
                               jit_compile=True, autograph=False)
        specs = [tf.TensorSpec(shape, dtype) for _, shape, dtype in self._inputs]
        concrete = compiled.get_concrete_function(*specs)
        zeros = [tf.zeros(s.shape, s.dtype) for s in specs]
        concrete(*zeros)  # compile now, not on a request
        self._call = flat_caller(tf, concrete, zeros)
        self._local = threading.local()

    def _buffers(self):
        """This thread's aligned input arrays and the tensors that share their memory: a request
        is copied into them (one copy, cast included) instead of into new arrays."""
        buffers = getattr(self._local, "buffers", None)
        if buffers is None:
            buffers = self._local.buffers = shared_inputs(tf, [(shape, dtype) for _, shape, dtype in self._inputs])
        return buffers

    def __call__(self, **request) -> np.ndarray:
        """One request's inputs by signature name, without the batch dimension → the query [dim]."""
        arrays, tensors = self._buffers()
        for array, (name, shape, _) in zip(arrays, self._inputs):
            array[...] = np.reshape(request[name], shape)
        return np.array(self._call(*tensors)[0].numpy()[0])
