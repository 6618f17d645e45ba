"""The exported query tower's TensorFlow Lite conversion, as the gateway calls it: once per
request, batch 1.

A request is a few thousand multiply-adds, so TensorFlow's per-call overhead would dominate it;
the TFLite interpreter's invoke is an order of magnitude cheaper (benchmarks/bench_gateway.py
shows the share). ``tworec export`` writes the conversion only once it answers what the
SavedModel answers (export/savedmodels.py). An interpreter is not thread-safe, so each gateway
thread gets its own, over the same model bytes.
"""
from __future__ import annotations

import threading
import warnings
from pathlib import Path

import numpy as np

from tworec.tf_setup import tf

SIGNATURE_PREFIX = "serving_default_"  # the converter's name for a signature input


def _interpreter(model: bytes):
    with warnings.catch_warnings():  # TF 2.20 warns that tf.lite moves to the ai-edge-litert package
        warnings.simplefilter("ignore")
        return tf.lite.Interpreter(model_content=model, num_threads=1)


class TfliteQueryTower:
    def __init__(self, model: bytes | str | Path):
        """``model``: the TFLite flatbuffer, or the path of a ``.tflite`` file."""
        self._model = model if isinstance(model, bytes) else Path(model).read_bytes()
        self._local = threading.local()
        self._runner()  # fails now, at load, on a model it cannot run

    @property
    def inputs(self) -> dict:
        """Signature input name → (shape with batch 1, numpy dtype)."""
        _, inputs, _ = self._runner()
        return {name: (shape, dtype) for _, name, shape, dtype in inputs}

    def _runner(self):
        """This thread's (interpreter, [(tensor index, input name, shape, dtype)], output index),
        sized for batch 1."""
        runner = getattr(self._local, "runner", None)
        if runner is None:
            interpreter = _interpreter(self._model)
            for d in interpreter.get_input_details():
                interpreter.resize_tensor_input(d["index"], [1 if s < 0 else int(s) for s in d["shape_signature"]])
            interpreter.allocate_tensors()
            inputs = [(d["index"], d["name"].split(":")[0].removeprefix(SIGNATURE_PREFIX), tuple(d["shape"]),
                       d["dtype"]) for d in interpreter.get_input_details()]
            (output,) = interpreter.get_output_details()  # the one output: the query embedding
            runner = self._local.runner = (interpreter, inputs, output["index"])
        return runner

    def __call__(self, **request) -> np.ndarray:
        """One request's inputs by signature name, without the batch dimension → the query [dim]."""
        interpreter, inputs, output = self._runner()
        for index, name, shape, dtype in inputs:
            interpreter.set_tensor(index, np.asarray(request[name], dtype).reshape(shape))
        interpreter.invoke()
        return np.array(interpreter.get_tensor(output)[0])
