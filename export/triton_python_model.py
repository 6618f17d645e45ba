"""Triton Python-backend model that serves a TensorFlow SavedModel signature.

Copied into ``<repository>/<model>/<version>/model.py`` by tworec.export.triton_repo. It runs
inside Triton's Python stub, which ignores PYTHONPATH: the config parameter ``site_packages``
names the folders to add (with ``site.addsitedir`` so .pth files are honoured). Tensors cross
the stub boundary by DLPack: with numpy 2 the stub's ``as_numpy()`` and ``Tensor(name, ndarray)``
silently give empty data. Requests that the dynamic batcher hands over together are concatenated
along the batch dimension and run as one call when their shapes allow it.
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
        self._batched = int(config.get("max_batch_size", 0)) > 0

    def _feeds(self, request) -> dict:
        return {name: np.array(np.from_dlpack(pb_utils.get_input_tensor_by_name(request, name)), copy=True)
                for name in self._inputs}

    def _run(self, feeds: dict) -> dict:
        tf = self._tf
        result = self._fn(**{k: tf.constant(v) for k, v in feeds.items()})
        return {name: result[name] for name in self._outputs}

    def _response(self, outputs: dict):
        tf = self._tf
        return pb_utils.InferenceResponse(output_tensors=[
            pb_utils.Tensor.from_dlpack(name, tf.experimental.dlpack.to_dlpack(tensor))
            for name, tensor in outputs.items()])

    @staticmethod
    def _error(err):
        return pb_utils.InferenceResponse(output_tensors=[],
                                          error=pb_utils.TritonError(f"{type(err).__name__}: {err}"))

    def execute(self, requests):
        try:
            feeds = [self._feeds(r) for r in requests]
        except Exception as err:  # noqa: BLE001 - reported to the callers, not fatal to Triton
            return [self._error(err) for _ in requests]
        if self._batched and len(feeds) > 1 and all(
                f[n].shape[1:] == feeds[0][n].shape[1:] for f in feeds for n in self._inputs):
            try:
                sizes = [len(f[self._inputs[0]]) for f in feeds]
                merged = self._run({n: np.concatenate([f[n] for f in feeds]) for n in self._inputs})
                bounds = np.cumsum([0, *sizes])
                tf = self._tf
                return [self._response({k: tf.identity(v[bounds[i]:bounds[i + 1]]) for k, v in merged.items()})
                        for i in range(len(feeds))]
            except Exception:  # noqa: BLE001 - fall back to one call per request, errors per request
                pass
        responses = []
        for f in feeds:
            try:
                responses.append(self._response(self._run(f)))
            except Exception as err:  # noqa: BLE001
                responses.append(self._error(err))
        return responses
