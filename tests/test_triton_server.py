"""A real Triton server from the PyPI wheel serves a TensorFlow SavedModel through the Python
backend, and answers over gRPC with tritonclient (inputs and outputs cross by DLPack)."""
import numpy as np
import pytest

from tworec.export.triton_repo import ModelConfig, TensorSpec, publish_savedmodel, versions
from tworec.serving.triton import TritonConfig, TritonServer


@pytest.fixture(scope="module")
def affine_savedmodel(tmp_path_factory):
    import tensorflow as tf

    rng = np.random.default_rng(0)
    weights = rng.normal(size=(4, 2)).astype("float32")
    bias = rng.normal(size=(2,)).astype("float32")

    class Affine(tf.Module):
        def __init__(self):
            super().__init__()
            self.w = tf.Variable(weights)
            self.b = tf.Variable(bias)

        @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="x")])
        def serve(self, x):
            return {"y": tf.matmul(x, self.w) + self.b}

    module = Affine()
    path = tmp_path_factory.mktemp("affine") / "savedmodel"
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})
    return path, weights, bias


def test_triton_serves_a_tensorflow_savedmodel(tmp_path, affine_savedmodel):
    import tritonclient.grpc as grpcclient

    savedmodel, weights, bias = affine_savedmodel
    repo = tmp_path / "repo"
    config = ModelConfig("affine", inputs=(TensorSpec("x", "float32", (4,)),),
                         outputs=(TensorSpec("y", "float32", (2,)),),
                         max_batch_size=16, dynamic_batching_delay_us=200)
    assert publish_savedmodel(repo, config, savedmodel) == 1
    assert versions(repo / "affine") == [1]

    x = np.random.default_rng(1).normal(size=(3, 4)).astype("float32")
    with TritonServer(TritonConfig(str(repo))) as server:
        assert server.grpc_address.startswith("127.0.0.1:")
        client = grpcclient.InferenceServerClient(server.grpc_address)
        assert client.is_model_ready("affine")
        request = grpcclient.InferInput("x", list(x.shape), "FP32")
        request.set_data_from_numpy(x)
        result = client.infer("affine", [request], outputs=[grpcclient.InferRequestedOutput("y")])
        y = result.as_numpy("y")
        client.close()
    np.testing.assert_allclose(y, x @ weights + bias, rtol=1e-5, atol=1e-5)
    assert server.process is None  # stopped cleanly


def test_second_publish_adds_a_version(tmp_path, affine_savedmodel):
    savedmodel, _, _ = affine_savedmodel
    config = ModelConfig("affine", inputs=(TensorSpec("x", "float32", (4,)),),
                         outputs=(TensorSpec("y", "float32", (2,)),))
    repo = tmp_path / "repo"
    assert publish_savedmodel(repo, config, savedmodel) == 1
    assert publish_savedmodel(repo, config, savedmodel) == 2
    assert versions(repo / "affine") == [1, 2]
    assert (repo / "affine" / "1" / "model.py").exists()
    ngc = (repo / "affine" / "config.ngc.pbtxt").read_text()
    assert 'platform: "tensorflow_savedmodel"' in ngc
