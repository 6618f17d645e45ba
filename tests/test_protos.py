"""The gateway's gRPC code is generated from the .proto, even in a process that already loaded
TensorFlow (grpc_tools' compiler crashes such a process when imported into it)."""
import subprocess
import sys

from conftest import REPO


def test_generated_code_builds_after_tensorflow_is_loaded():
    script = ("import os; os.environ.setdefault('TF_USE_LEGACY_KERAS', '1'); import tensorflow; "
              "from tworec.serving import protos; protos.build(force=True); pb2, grpc_pb2 = protos.load(); "
              "print(pb2.DESCRIPTOR.services_by_name['Recommender'].full_name)")
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "tworec.v1.Recommender"
