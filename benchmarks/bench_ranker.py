"""Ranker latency per request for 200 and 1,000 candidates: the SavedModel in process, and the
same SavedModel served by Triton (Python backend) over gRPC on loopback, with the inputs packed
(one matrix per dtype) inside the gRPC message, packed in shared memory (what the gateway does
with the Triton it starts), and as ten named tensors inside the message.

    python benchmarks/bench_ranker.py --ranker runs/ml100k/ranker [--requests 300] [--repeats 3]

Prints median and p99 per request (medians over repeats; all variants take turns call by call,
so a drifting machine affects them alike), the Triton/in-process ratio, the
shared-memory/message ratio and the packed/named ratio.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import tempfile
import time

import numpy as np

from common import add_output_options, exit_on_sigterm, save


def _rows(tables, dim: int, n: int, rng) -> dict:
    from tworec.ranking.features import ranker_rows

    rows = rng.integers(0, len(tables.item_row), n)
    features = ranker_rows(tables, np.array([1]), tables.user_attribute_rows[[1]], rng.normal(size=(1, dim)).astype(np.float32), np.array([5.0]),
                           np.array([2.0]), rows[None, :], rng.uniform(-1, 1, (1, n)).astype(np.float32))
    return {k: np.ascontiguousarray(v[0]) for k, v in features.items()}


def _named_feeds(rows: dict) -> dict:
    """The ten RANKER_INPUTS as Triton takes them by name: a scalar per row as [rows, 1]."""
    from tworec import contract

    return {t.name: rows[t.name] if t.shape else rows[t.name].reshape(-1, 1) for t in contract.RANKER_INPUTS}


def _interleaved(calls: dict, inputs, requests: int) -> dict:
    """Per variant, milliseconds per call; the variants take turns call by call, so a machine whose
    speed drifts slows them alike."""
    for call in calls.values():
        call(inputs)
    out = {name: [] for name in calls}
    for _ in range(requests):
        for name, call in calls.items():
            started = time.perf_counter()
            call(inputs)
            out[name].append((time.perf_counter() - started) * 1000)
    return {name: np.array(times) for name, times in out.items()}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ranker", default="runs/demo/ranker")
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    add_output_options(parser)
    args = parser.parse_args(argv)

    from tworec import contract
    from tworec.export.repository import ranker_model_config, triton_specs
    from tworec.export.triton_repo import publish_savedmodel
    from tworec.ranking.artifact import RankerArtifact
    from tworec.ranking.model import ROWS_SIGNATURE
    from tworec.serving.triton import TritonConfig, TritonServer
    from tworec.serving.triton_models import TritonModels
    from tworec.tf_setup import tf

    ranker = RankerArtifact.load(args.ranker)
    tables = ranker.tables()
    dim = tables.item_embedding.shape[1]
    signature = tf.saved_model.load(str(ranker.savedmodel)).signatures[ROWS_SIGNATURE]
    in_process = lambda x: signature(**{k: tf.constant(v) for k, v in x.items()})["score"].numpy()  # noqa: E731
    repo = tempfile.mkdtemp(prefix="bench-ranker-")
    packed_config = ranker_model_config(dim)
    named_config = dataclasses.replace(packed_config, name="ranker_named", signature=ROWS_SIGNATURE,
                                       inputs=triton_specs(contract.RANKER_INPUTS, dim))
    for config in (packed_config, named_config):
        publish_savedmodel(repo, config, str(ranker.savedmodel))
    rng = np.random.default_rng(0)
    results = {"ranker": os.path.abspath(args.ranker), "candidates": {}}
    with TritonServer(TritonConfig(repo)) as server:
        models = TritonModels(server.grpc_address)
        shared = TritonModels(server.grpc_address, shared_memory=True)
        while not (models.ready(packed_config.name, 1) and models.ready(named_config.name, 1)):
            time.sleep(0.2)
        calls = {
            "in_process": in_process,
            "triton": lambda x: models.rank(1, x, 10.0),
            "triton_shared_memory": lambda x: shared.rank(1, x, 10.0),
            "triton_named_inputs": lambda x: models.infer(named_config.name, 1, _named_feeds(x),
                                                          contract.RANKER_OUTPUT.name, 10.0).reshape(-1),
        }
        for n in (200, 1000):
            inputs = _rows(tables, dim, n, rng)
            for name in ("triton", "triton_shared_memory", "triton_named_inputs"):
                np.testing.assert_allclose(calls[name](inputs), in_process(inputs), rtol=1e-4, atol=1e-4)
            runs = {name: [] for name in calls}
            for _ in range(args.repeats):
                for name, times in _interleaved(calls, inputs, args.requests).items():
                    runs[name].append(times)
            entry = {name: {"p50_ms": statistics.median(float(np.percentile(r, 50)) for r in rs),
                            "p99_ms": statistics.median(float(np.percentile(r, 99)) for r in rs)}
                     for name, rs in runs.items()}
            entry["triton_over_in_process_p50"] = entry["triton"]["p50_ms"] / entry["in_process"]["p50_ms"]
            entry["packed_over_named_p50"] = entry["triton"]["p50_ms"] / entry["triton_named_inputs"]["p50_ms"]
            entry["shared_memory_over_message_p50"] = (entry["triton_shared_memory"]["p50_ms"]
                                                       / entry["triton"]["p50_ms"])
            results["candidates"][str(n)] = entry
            print(f"{n:>5} candidates: in process p50 {entry['in_process']['p50_ms']:.2f} ms "
                  f"p99 {entry['in_process']['p99_ms']:.2f} ms | Triton p50 {entry['triton']['p50_ms']:.2f} ms "
                  f"p99 {entry['triton']['p99_ms']:.2f} ms (×{entry['triton_over_in_process_p50']:.2f}) | "
                  f"shared memory p50 {entry['triton_shared_memory']['p50_ms']:.2f} ms "
                  f"(shared/message ×{entry['shared_memory_over_message_p50']:.2f}) | "
                  f"named inputs p50 {entry['triton_named_inputs']['p50_ms']:.2f} ms "
                  f"(packed/named ×{entry['packed_over_named_p50']:.2f})", flush=True)
        models.close()
        shared.close()
    return save(results, args.json, "ranker", args.results)


if __name__ == "__main__":
    exit_on_sigterm()
    main()
