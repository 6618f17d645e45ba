"""Triton Python-backend model that serves a TensorFlow SavedModel signature.

Copied into ``<repository>/<model>/<version>/model.py`` by tworec.export.triton_repo. It runs
inside Triton's Python stub, which ignores PYTHONPATH: the config parameter ``site_packages``
names the folders to add (with ``site.addsitedir`` so .pth files are honoured). Tensors cross
the stub boundary by DLPack: with numpy 2 the stub's ``as_numpy()`` and ``Tensor(name, ndarray)``
silently give empty data.
"""
import json
import os
import site

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
        for path in params.get("site_packages", "").split(os.pathsep):
            if path:
                site.addsitedir(path)
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        import tensorflow as tf

        self._tf = tf
        threads = int(params.get("intra_op_threads", "0") or 0)
        if threads:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
        version_dir = os.path.join(args["model_repository"], args["model_version"])
        saved = tf.saved_model.load(os.path.join(version_dir, params.get("savedmodel", "model.savedmodel")))
        self._saved = saved  # keep the trackable objects alive
        self._fn = saved.signatures[params.get("signature", "serving_default")]
        self._inputs = [i["name"] for i in config["input"]]
        self._outputs = [o["name"] for o in config["output"]]

    def execute(self, requests):
        tf = self._tf
        responses = []
        for request in requests:
            try:
                feeds = {}
                for name in self._inputs:
                    tensor = pb_utils.get_input_tensor_by_name(request, name)
                    feeds[name] = tf.constant(np.array(np.from_dlpack(tensor), copy=True))
                result = self._fn(**feeds)
                outputs = [
                    pb_utils.Tensor.from_dlpack(name, tf.experimental.dlpack.to_dlpack(result[name]))
                    for name in self._outputs
                ]
                responses.append(pb_utils.InferenceResponse(output_tensors=outputs))
            except Exception as err:  # noqa: BLE001 - reported to the caller, not fatal to Triton
                responses.append(pb_utils.InferenceResponse(
                    output_tensors=[], error=pb_utils.TritonError(f"{type(err).__name__}: {err}")))
        return responses
