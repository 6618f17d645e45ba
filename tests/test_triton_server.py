"""A real Triton server from the PyPI wheel serves a TensorFlow SavedModel through the Python
backend, and answers over gRPC with tritonclient (inputs and outputs cross by DLPack)."""
import time

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
    with TritonServer(TritonConfig(str(repo), repository_poll_secs=1)) as server:
        assert server.grpc_address.startswith("127.0.0.1:")
        client = grpcclient.InferenceServerClient(server.grpc_address)
        assert client.is_model_ready("affine")
        request = grpcclient.InferInput("x", list(x.shape), "FP32")
        request.set_data_from_numpy(x)
        answers = [client.infer("affine", [request], outputs=[grpcclient.InferRequestedOutput("y")]).as_numpy("y")
                   for _ in range(3)]
        client.close()
        time.sleep(2.5)  # past two repository polls
        log = server.log_tail(1000)
    for y in answers:
        np.testing.assert_allclose(y, x @ weights + bias, rtol=1e-5, atol=1e-5)
    assert server.process is None  # stopped cleanly
    # Loaded once: the stub's first load must not look like a changed version to the polling
    # server (it writes model.py's bytecode unless publishing did). And answering leaves the log
    # quiet: no traceback from handing outputs to the stub.
    assert log.count("successfully loaded 'affine'") == 1, log
    assert "Traceback" not in log, log


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


@pytest.mark.parametrize("runtime", ["xla", "tflite"])
def test_row_buckets_pad_chunk_and_batch_exactly(tmp_path, runtime):
    """``xla_row_buckets``: the signature is frozen and XLA-compiled per bucket at load (or, with
    ``tflite_model``, its TFLite conversion gets an interpreter per bucket); requests of any row
    count (padded up, chunked past the largest bucket, merged by the dynamic batcher) get exactly
    the signature's answer, with int and float inputs. Bucket buffers are reused, so padded rows
    hold an earlier call's values: only a call's own rows come back."""
    import dataclasses
    import threading

    from tworec.export.savedmodels import row_model_tflite

    import tensorflow as tf
    import tritonclient.grpc as grpcclient

    rng = np.random.default_rng(2)
    weights = rng.normal(size=(3, 2)).astype("float32")
    table = rng.normal(size=(10, 2)).astype("float32")

    class Rows(tf.Module):
        def __init__(self):
            super().__init__()
            self.w, self.table = tf.Variable(weights), tf.Variable(table)

        @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32, name="x"),
                                      tf.TensorSpec([None], tf.int32, name="ids")])
        def serve(self, x, ids):
            return {"y": tf.matmul(x, self.w) + tf.gather(self.table, ids)}

    module = Rows()
    tf.saved_model.save(module, str(tmp_path / "sm"), signatures={"serving_default": module.serve})
    config = ModelConfig("rows", inputs=(TensorSpec("x", "float32", (3,)), TensorSpec("ids", "int32", (1,), ())),
                         outputs=(TensorSpec("y", "float32", (2,)),), max_batch_size=64,
                         dynamic_batching_delay_us=2000, tf_threads=1, xla_row_buckets=(4, 16))
    repo = tmp_path / "repo"
    extra = None
    if runtime == "tflite":
        config = dataclasses.replace(config, tflite_model="model.tflite")
        extra = {"model.tflite": row_model_tflite(tmp_path / "sm")}
    publish_savedmodel(repo, config, tmp_path / "sm", extra_files=extra)

    def call(client, n, seed):
        r = np.random.default_rng(seed)
        x, ids = r.normal(size=(n, 3)).astype("float32"), r.integers(0, 10, size=(n, 1)).astype("int32")
        inputs = [grpcclient.InferInput("x", [n, 3], "FP32"), grpcclient.InferInput("ids", [n, 1], "INT32")]
        inputs[0].set_data_from_numpy(x)
        inputs[1].set_data_from_numpy(ids)
        y = client.infer("rows", inputs).as_numpy("y")
        np.testing.assert_allclose(y, x @ weights + table[ids[:, 0]], rtol=1e-5, atol=1e-5)
        return y.shape

    with TritonServer(TritonConfig(str(repo))) as server:
        client = grpcclient.InferenceServerClient(server.grpc_address)
        assert [call(client, n, n) for n in (1, 4, 5, 16, 40)] == [(n, 2) for n in (1, 4, 5, 16, 40)]
        failures = []

        def concurrent(seed):
            try:
                c = grpcclient.InferenceServerClient(server.grpc_address)
                for j in range(5):
                    call(c, 3 + seed, 100 * seed + j)
                c.close()
            except Exception as err:  # noqa: BLE001 - collected, asserted below
                failures.append(err)

        threads = [threading.Thread(target=concurrent, args=(s,)) for s in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        stats = client.get_inference_statistics("rows", as_json=True)["model_stats"][0]
        client.close()
        log = server.log_tail(400)
    assert not failures, failures
    # "direct": the compiled functions are called flat, past ConcreteFunction's per-call argument
    # binding (tworec.export.triton_python_model.flat_caller); "public" would mean TensorFlow's
    # internals changed and that saving is gone (answers stay right either way).
    if runtime == "xla":
        assert "rows v1: XLA-compiled for rows [4, 16], direct calls" in log
    else:
        assert "rows v1: TFLite model.tflite for rows [4, 16]" in log
    requests = int(stats["inference_stats"]["success"]["count"])
    assert requests == 5 + 30 and int(stats["execution_count"]) < requests  # the batcher merged requests
