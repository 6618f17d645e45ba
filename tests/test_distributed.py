"""Training past one machine, in miniature on loopback: MultiWorkerMirroredStrategy with two worker
processes (TF_CONFIG) against one process with the same global batch, and ParameterServerStrategy
with the item table partitioned over two parameter servers (an in-process cluster)."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from helpers.training_probe import free_ports

HELPERS = Path(__file__).parent / "helpers"
PS_STUCK = 86  # ps_training.py's exit code when its watchdog finds the cluster stuck


def _result(done):
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_two_workers_log_the_mean_loss_of_one_process_with_the_same_global_batch(synthetic_data, tmp_path):
    helper, weights = str(HELPERS / "multiworker_losses.py"), str(tmp_path / "initial.npz")
    single = _result(subprocess.run([sys.executable, helper, str(synthetic_data), "single", weights],
                                    capture_output=True, text=True, timeout=600))
    ports = ",".join(map(str, free_ports(2)))
    workers = [subprocess.Popen([sys.executable, helper, str(synthetic_data), "worker", weights, str(i), ports],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    results = []
    for w in workers:
        out, err = w.communicate(timeout=600)
        results.append(_result(subprocess.CompletedProcess(w.args, w.returncode, out, err)))
    assert single["replicas"] == 1 and not single["multi_worker"]
    for r in results:
        assert r["multi_worker"] and r["replicas"] == 2
        assert len(r["losses"]) == len(single["losses"]) == 6
        # The mean over the global batch, not the sum over the two replicas (which would be ~2x).
        np.testing.assert_allclose(r["losses"], single["losses"], rtol=2e-4, atol=2e-5)
    assert results[0]["losses"] == results[1]["losses"]


def test_parameter_servers_hold_the_item_table_partitioned_and_training_updates_it(synthetic_data):
    for attempt in range(2):  # a second cluster (new ports, new servers) only if the first hung
        done = subprocess.run([sys.executable, str(HELPERS / "ps_training.py"), str(synthetic_data)],
                              capture_output=True, text=True, timeout=600)
        if done.returncode != PS_STUCK:
            break
        print(f"in-process cluster stuck (attempt {attempt + 1}); its threads:\n{done.stderr[-6000:]}")
    result = _result(done)
    shards = result["shards"]["item_id_embedding"]
    # Two shards, one on each parameter server, that together are the whole table.
    assert sorted(device.split("/device")[0] for device, _ in shards) == ["/job:ps/replica:0/task:0",
                                                                          "/job:ps/replica:0/task:1"]
    assert sum(rows for _, rows in shards) == result["vocab"]
    assert result["embeddings_match"]  # a lookup reads the right shard
    assert np.isfinite(result["losses"]).all() and len(result["losses"]) == 3
    before, after = result["first_batch"]
    assert after < before and result["rows_changed"] > 0.5  # the workers' steps reached the servers
