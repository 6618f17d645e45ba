"""A versioned NVIDIA Triton model repository in the standard layout:

    <repository>/<model>/config.pbtxt
    <repository>/<model>/<version>/model.py + model.savedmodel/     (Python backend, this wheel)
    <repository>/<model>/<version>/model.savedmodel/                (NGC: platform tensorflow_savedmodel)

Publishing writes version N+1 under a hidden name and renames it into place, so a server polling
the repository never sees half a version and the running version is never touched.
"""
from __future__ import annotations

import os
import py_compile
import shutil
import site
import sysconfig
from dataclasses import dataclass
from pathlib import Path

_TRITON_DTYPES = {"float32": "TYPE_FP32", "float64": "TYPE_FP64", "int32": "TYPE_INT32",
                  "int64": "TYPE_INT64", "bool": "TYPE_BOOL", "string": "TYPE_STRING"}
MODEL_PY = Path(__file__).with_name("triton_python_model.py")
SAVEDMODEL_DIR = "model.savedmodel"


@dataclass(frozen=True)
class TensorSpec:
    """One input or output: ``dims`` exclude the batch dimension when max_batch_size > 0."""

    name: str
    dtype: str  # numpy-style name: float32, int64, ...
    dims: tuple
    reshape: tuple | None = None  # the model's shape when it differs from dims, e.g. () for [1]

    def pbtxt(self) -> str:
        dims = ", ".join(str(d) for d in self.dims)
        reshape = ""
        if self.reshape is not None:
            reshape = " reshape: { shape: [ %s ] }" % ", ".join(str(d) for d in self.reshape)
        return f'  {{ name: "{self.name}" data_type: {_TRITON_DTYPES[self.dtype]} dims: [ {dims} ]{reshape} }}'


@dataclass(frozen=True)
class ModelConfig:
    name: str
    inputs: tuple
    outputs: tuple
    max_batch_size: int = 0
    dynamic_batching_delay_us: int | None = None  # None: no dynamic batching
    preferred_batch_sizes: tuple = ()
    instance_count: int = 1
    tf_threads: int = 0  # TensorFlow's intra- and inter-op threads in the stub; 0: its default
    # Row counts to pre-compile the signature for with XLA (models scoring rows independently);
    # empty: the plain signature.
    xla_row_buckets: tuple = ()
    # A TFLite conversion in the version folder (publish_savedmodel's ``extra_files``) that runs the
    # row buckets instead of XLA; the stub falls back to XLA for versions without the file.
    tflite_model: str = ""
    # Versions kept loaded: 2 lets a gateway still pinned to the previous version finish its
    # requests while it switches to the new one.
    versions_served: int = 1
    signature: str = "serving_default"  # the SavedModel signature the Python backend serves

    def _common(self) -> list:
        lines = [f'name: "{self.name}"', f"max_batch_size: {self.max_batch_size}",
                 "input [", ",\n".join(t.pbtxt() for t in self.inputs), "]",
                 "output [", ",\n".join(t.pbtxt() for t in self.outputs), "]",
                 f"instance_group [ {{ kind: KIND_CPU count: {self.instance_count} }} ]",
                 f"version_policy: {{ latest: {{ num_versions: {self.versions_served} }} }}"]
        if self.dynamic_batching_delay_us is not None:
            preferred = ""
            if self.preferred_batch_sizes:
                preferred = " preferred_batch_size: [ %s ]" % ", ".join(map(str, self.preferred_batch_sizes))
            lines.append(f"dynamic_batching {{ max_queue_delay_microseconds: "
                         f"{self.dynamic_batching_delay_us}{preferred} }}")
        return lines

    def python_backend_pbtxt(self, site_packages: str) -> str:
        """For the PyPI Triton build: the Python backend wrapping the SavedModel."""
        params = {"site_packages": site_packages, "savedmodel": SAVEDMODEL_DIR,
                  "signature": self.signature, "tf_threads": str(self.tf_threads),
                  "xla_row_buckets": ",".join(map(str, self.xla_row_buckets)), "tflite_model": self.tflite_model}
        lines = ['backend: "python"', *self._common()]
        lines += [f'parameters: {{ key: "{k}" value: {{ string_value: "{v}" }} }}'
                  for k, v in params.items()]
        return "\n".join(lines) + "\n"

    def savedmodel_platform_pbtxt(self) -> str:
        """For NGC Triton containers, whose TensorFlow backend loads the SavedModel itself."""
        return "\n".join(['platform: "tensorflow_savedmodel"', *self._common()]) + "\n"


def site_packages_path() -> str:
    """Where this interpreter's packages live, for the Python stub (which ignores PYTHONPATH)."""
    paths = [sysconfig.get_paths()["purelib"], *site.getsitepackages()]
    return os.pathsep.join(dict.fromkeys(p for p in paths if os.path.isdir(p)))


def versions(model_dir: str | Path) -> list:
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        return []
    return sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit())


def publish_savedmodel(repository: str | Path, config: ModelConfig, savedmodel: str | Path,
                       site_packages: str | None = None, version: int | None = None,
                       extra_files: dict | None = None) -> int:
    """Adds ``savedmodel`` as the next version of ``config.name``; returns that version number.
    ``extra_files`` (file name → bytes) go into the version folder beside it.

    The model folder gets ``config.pbtxt`` (Python backend) and ``config.ngc.pbtxt`` (the
    ``tensorflow_savedmodel`` platform variant, for NGC containers; see BUILD.md)."""
    model_dir = Path(repository) / config.name
    model_dir.mkdir(parents=True, exist_ok=True)
    version = version or (versions(model_dir) or [0])[-1] + 1
    if (model_dir / str(version)).exists():
        raise FileExistsError(f"{model_dir / str(version)} exists: versions are never overwritten")
    staging = model_dir / f".staging-{version}-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    shutil.copytree(savedmodel, staging / SAVEDMODEL_DIR)
    shutil.copy2(MODEL_PY, staging / "model.py")
    for name, content in (extra_files or {}).items():
        (staging / name).write_bytes(content)
    # The Python backend's stub writes model.py's bytecode into the version folder on its first
    # load (its interpreter ignores PYTHONDONTWRITEBYTECODE), and a polling Triton takes the new
    # __pycache__ for a changed version: it loaded every new version twice. Compiled here, with
    # this interpreter (the stub's Python version), the stub finds it current and writes nothing.
    py_compile.compile(str(staging / "model.py"), doraise=True)
    _write_atomic(model_dir / "config.pbtxt",
                  config.python_backend_pbtxt(site_packages or site_packages_path()))
    _write_atomic(model_dir / "config.ngc.pbtxt", config.savedmodel_platform_pbtxt())
    os.rename(staging, model_dir / str(version))
    return version


def _write_atomic(path: Path, text: str):
    if path.exists() and path.read_text() == text:
        return  # unchanged: a polling server must not see a config change and reload
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
