"""The gateway's generated gRPC code, built from serving/proto/recommender.proto.

``load()`` runs grpc_tools.protoc into ``serving/generated/`` when the generated files are missing
or older than the .proto (they are build outputs, ignored by git), then imports them. protoc runs
in its own interpreter: loading grpc_tools' compiler into a process that already holds
TensorFlow's protobuf runtime crashes it (a segfault on import, seen on fresh checkouts).
"""
from __future__ import annotations

import importlib
import os
import subprocess
import sys
import threading
from pathlib import Path

PROTO_DIR = Path(__file__).with_name("proto")
PROTO = PROTO_DIR / "recommender.proto"
GENERATED = Path(__file__).with_name("generated")
_lock = threading.Lock()
_modules = None


def build(force: bool = False) -> Path:
    """Generates recommender_pb2*.py next to an __init__.py; returns the folder."""
    target = GENERATED / "recommender_pb2_grpc.py"
    if not force and target.exists() and target.stat().st_mtime >= PROTO.stat().st_mtime:
        return GENERATED
    GENERATED.mkdir(exist_ok=True)
    (GENERATED / "__init__.py").write_text('"""Generated from serving/proto (tworec.serving.protos.build)."""\n')
    tmp = GENERATED / f".build-{os.getpid()}"
    tmp.mkdir(exist_ok=True)
    include = ("import grpc_tools, os, sys; from grpc_tools import protoc; "
               "inc = os.path.join(os.path.dirname(grpc_tools.__file__), '_proto'); "
               "sys.exit(protoc.main(['protoc', '-I' + inc] + sys.argv[1:]))")
    done = subprocess.run([sys.executable, "-c", include, f"-I{PROTO_DIR}", f"--python_out={tmp}",
                           f"--grpc_python_out={tmp}", str(PROTO)], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"protoc failed on {PROTO} (exit {done.returncode}): {done.stderr.strip()}")
    # The generated service module imports its messages as a top-level module; make it relative.
    grpc_module = (tmp / "recommender_pb2_grpc.py").read_text()
    (tmp / "recommender_pb2_grpc.py").write_text(
        grpc_module.replace("import recommender_pb2 as", "from . import recommender_pb2 as"))
    for name in ("recommender_pb2.py", "recommender_pb2_grpc.py"):
        os.replace(tmp / name, GENERATED / name)
    tmp.rmdir()
    return GENERATED


def load():
    """(recommender_pb2, recommender_pb2_grpc), building them first if needed."""
    global _modules
    with _lock:
        if _modules is None:
            build()
            package = __name__.rsplit(".", 1)[0] + ".generated"
            _modules = (importlib.import_module(package + ".recommender_pb2"),
                        importlib.import_module(package + ".recommender_pb2_grpc"))
    return _modules


if __name__ == "__main__":
    print(build(force="--force" in sys.argv))
