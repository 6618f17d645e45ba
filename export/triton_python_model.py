"""Triton Python-backend model that serves a TensorFlow SavedModel signature.

Copied into ``<repository>/<model>/<version>/model.py`` by tworec.export.triton_repo. It runs
inside Triton's Python stub, which ignores PYTHONPATH: the config parameter ``site_packages``
names the folders to add (with ``site.addsitedir`` so .pth files are honoured). Tensors cross
the stub boundary by DLPack: with numpy 2 the stub's ``as_numpy()`` and ``Tensor(name, ndarray)``
silently give empty data. Requests that the dynamic batcher hands over together are concatenated
along the batch dimension and run as one call when their shapes allow it.

With the parameter ``xla_row_buckets`` (e.g. "16,64,256,1024"; only for models that score each
row on its own, like the ranker) the signature is frozen (variables become constants) and
compiled with XLA once per bucket size at load time, with the inputs packed into one matrix per
dtype. A call pads its rows up to the nearest bucket (larger batches run in chunks of the largest
one), so serving never compiles. For a small model most of the plain signature's time is
TensorFlow's per-call and per-argument overhead in Python, which this removes. With the parameter
``tflite_model`` too, naming a TFLite conversion in the version folder, the buckets run that
instead (``PackedTflite``).
"""
import ctypes
import json
import os
import site

import numpy as np

try:
    import triton_python_backend_utils as pb_utils
except ImportError:  # imported outside Triton's stub (tools, tests): only execute() needs it
    pb_utils = None


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
        threads = int(params.get("tf_threads", "0") or 0)
        if threads:  # one thread: TensorFlow's idle pool threads spin and take the CPU Triton needs
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(threads)
        version_dir = os.path.join(args["model_repository"], args["model_version"])
        saved = tf.saved_model.load(os.path.join(version_dir, params.get("savedmodel", "model.savedmodel")))
        self._saved = saved  # keep the trackable objects alive
        self._fn = saved.signatures[params.get("signature", "serving_default")]
        self._inputs = [i["name"] for i in config["input"]]
        self._outputs = [o["name"] for o in config["output"]]
        self._batched = int(config.get("max_batch_size", 0)) > 0
        buckets = sorted({int(b) for b in params.get("xla_row_buckets", "").split(",") if b.strip()})
        tflite = os.path.join(version_dir, params["tflite_model"]) if params.get("tflite_model") else None
        self._compiled = None
        name = f"{config['name']} v{args['model_version']}"
        if buckets and self._batched and tflite:
            with open(tflite, "rb") as f:  # named by the config: a version without it is incomplete
                self._compiled = PackedTflite(tf, f.read(), self._inputs, self._outputs, buckets)
            pb_utils.Logger.log_info(f"{name}: TFLite {os.path.basename(tflite)} for rows {buckets}")
        elif buckets and self._batched:
            self._compiled = PackedXla(tf, self._fn, self._inputs, self._outputs, buckets)
            pb_utils.Logger.log_info(f"{name}: XLA-compiled for rows {buckets}, "
                                     f"{'direct' if self._compiled.direct else 'public'} calls")

    def _feeds(self, request) -> dict:
        # One inputs() call: get_input_tensor_by_name would rebuild the whole list for every name.
        tensors = {t.name(): t for t in request.inputs()}
        return {name: np.array(np.from_dlpack(tensors[name]), copy=True) for name in self._inputs}

    def _run(self, feeds: dict) -> dict:
        """Output name → numpy array."""
        if self._compiled is not None:
            return self._compiled(feeds)
        tf = self._tf
        result = self._fn(**{k: tf.constant(v) for k, v in feeds.items()})
        return {name: result[name].numpy() for name in self._outputs}

    def _run_merged(self, feeds: list):
        """Every request's outputs from one call over their concatenated rows, or None when their
        shapes differ or the merged call fails (then each runs alone, with its own error)."""
        if not self._batched or len(feeds) < 2 or any(isinstance(f, Exception) for f in feeds) or not all(
                f[n].shape[1:] == feeds[0][n].shape[1:] for f in feeds for n in self._inputs):
            return None
        try:
            merged = self._run({n: np.concatenate([f[n] for f in feeds]) for n in self._inputs})
        except Exception:  # noqa: BLE001 - fall back to one call per request, errors per request
            return None
        bounds = np.cumsum([0, *(len(f[self._inputs[0]]) for f in feeds)])
        return [{k: v[bounds[i]:bounds[i + 1]] for k, v in merged.items()} for i in range(len(feeds))]

    def execute(self, requests):
        """One response per request, in order; requests batched together run as one call."""
        feeds = [_or_error(self._feeds, r) for r in requests]
        outputs = self._run_merged(feeds) or [_or_error(self._run, f) for f in feeds]
        return [_response(o) for o in outputs]


def _or_error(function, argument):
    """``function(argument)``, or the exception it raised (or that ``argument`` already is): a failed
    request is reported to its caller, never fatal to Triton or to the other requests of its batch."""
    if isinstance(argument, Exception):
        return argument
    try:
        return function(argument)
    except Exception as err:  # noqa: BLE001
        return err


def _response(outputs):
    """The response for a request's outputs (name → array) or for its error."""
    if isinstance(outputs, Exception):
        return pb_utils.InferenceResponse(output_tensors=[],
                                          error=pb_utils.TritonError(f"{type(outputs).__name__}: {outputs}"))
    return pb_utils.InferenceResponse(output_tensors=[output_tensor(name, array) for name, array in outputs.items()])


# PyCapsule_SetName keeps the pointer it is given: the name must live as long as the module.
_USED_CAPSULE = b"used_dltensor"
_set_capsule_name = ctypes.pythonapi.PyCapsule_SetName
_set_capsule_name.argtypes = [ctypes.py_object, ctypes.c_char_p]
_set_capsule_name.restype = ctypes.c_int


def output_tensor(name: str, array: np.ndarray):
    """A response tensor sharing ``array``'s memory (with numpy 2, ``pb_utils.Tensor(name,
    ndarray)`` sends empty data, so it crosses by DLPack).

    The stub takes ownership of the DLPack capsule (it calls the deleter when the tensor goes) but
    renames it "used_dlpack" instead of the protocol's "used_dltensor". numpy's capsule destructor
    then reports a ValueError traceback to the log, once per output: a cost per call and a log
    flood at serving rates. Marking the capsule consumed the standard way keeps both away."""
    capsule = np.ascontiguousarray(array).__dlpack__()
    tensor = pb_utils.Tensor.from_dlpack(name, capsule)
    _set_capsule_name(capsule, _USED_CAPSULE)
    return tensor


class RowBuckets:
    """Runs a row-wise model at fixed row counts (buckets): a call pads its rows up to the nearest
    bucket and larger batches run in chunks of the largest one. Subclasses give ``_run(rows,
    inputs)`` for one bucket; ``_buffers[rows]`` are that bucket's input arrays, by input name."""

    buckets: list
    _buffers: dict
    _outputs: list

    def __call__(self, feeds: dict) -> dict:
        total = len(next(iter(feeds.values())))
        largest = self.buckets[-1]
        pieces = {name: [] for name in self._outputs}
        for start in range(0, total, largest):
            n = min(largest, total - start)
            bucket = next(b for b in self.buckets if b >= n)
            buffers = self._buffers[bucket]
            for name, buffer in buffers.items():
                buffer[:n] = feeds[name][start:start + n].reshape((n, *buffer.shape[1:]))
            # Rows past n hold an earlier call's values: rows are scored independently, and only
            # the first n outputs are kept.
            for name, out in self._run(bucket, buffers).items():
                pieces[name].append(np.array(out[:n]))
        return {name: p[0] if len(p) == 1 else np.concatenate(p) for name, p in pieces.items()}


class PackedXla(RowBuckets):
    """A row-wise signature, frozen and XLA-compiled for fixed row counts (buckets). Inputs travel
    packed as one [rows, width] matrix per dtype: two arguments instead of one per input."""

    def __init__(self, tf, signature, inputs: list, outputs: list, buckets: list):
        from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

        frozen = convert_variables_to_constants_v2(signature)
        specs = {t.name.split(":")[0]: t for t in frozen.inputs}
        frozen_order = [t.name.split(":")[0] for t in frozen.inputs]
        self._outputs, self.buckets = outputs, buckets
        self._columns = {}  # input → (dtype, first column, width, per-row shape)
        widths = {}
        for name in inputs:
            dtype, shape = specs[name].dtype.as_numpy_dtype, tuple(specs[name].shape[1:])
            width = int(np.prod(shape, dtype=np.int64))
            self._columns[name] = (np.dtype(dtype), widths.get(np.dtype(dtype), 0), width, shape)
            widths[np.dtype(dtype)] = widths.get(np.dtype(dtype), 0) + width
        self._dtypes = list(widths)
        structure, columns, dtypes = signature.structured_outputs, self._columns, self._dtypes

        @tf.function(jit_compile=True, autograph=False)
        def scored(*packed):
            by_dtype = dict(zip(dtypes, packed))
            rows = packed[0].shape[0]  # static: one concrete function per bucket
            named = {}
            for name, (dtype, start, width, shape) in columns.items():
                named[name] = tf.reshape(by_dtype[dtype][:, start:start + width], [rows, *shape])
            result = tf.nest.pack_sequence_as(structure, frozen(*[named[n] for n in frozen_order]))
            return [result[name] for name in outputs]

        # Per bucket: the compiled function (called flat), its packed input matrices with tensors
        # sharing their memory, and each input's columns of them as the bucket's buffers. All are
        # reused by every call (the stub runs one execute at a time).
        self._functions, self._buffers = {}, {}
        for rows in buckets:
            shapes = [tf.TensorSpec([rows, widths[d]], tf.as_dtype(d)) for d in self._dtypes]
            fn = scored.get_concrete_function(*shapes)
            arrays, tensors = shared_inputs(tf, [((rows, widths[d]), d) for d in self._dtypes])
            fn(*tensors)  # compiles now, not on a request
            self._functions[rows] = (flat_caller(tf, fn, tensors), tensors)
            packed = dict(zip(self._dtypes, arrays))
            self._buffers[rows] = {name: packed[dtype][:, first:first + width]
                                   for name, (dtype, first, width, _) in self._columns.items()}
        self.direct = all(getattr(call, "__name__", "") == "call_flat" for call, _ in self._functions.values())

    def _run(self, rows: int, inputs: dict) -> dict:
        call, tensors = self._functions[rows]  # ``inputs`` are views of the memory they read
        return {name: out.numpy() for name, out in zip(self._outputs, call(*tensors))}


class PackedTflite(RowBuckets):
    """The model's TensorFlow Lite conversion (``tworec export`` checks it against the SavedModel),
    one interpreter per bucket, sized at load. It is leaner than the XLA-compiled signature, which
    matters most when the CPU serves other processes between two calls (the comparison is in
    bench/results.md)."""

    def __init__(self, tf, model: bytes, inputs: list, outputs: list, buckets: list):
        import warnings

        self.buckets, self._outputs = buckets, outputs
        self._buffers, self._interpreters = {}, {}
        for rows in buckets:
            with warnings.catch_warnings():  # TF 2.20: tf.lite moves to the ai-edge-litert package
                warnings.simplefilter("ignore")
                interpreter = tf.lite.Interpreter(model_content=model, num_threads=1)
            # The signature names its tensors; resizing goes by index (TF 2.20's signature runner
            # cannot resize), with no runner left holding the interpreter's buffers.
            runner = interpreter.get_signature_runner()
            given, returned = runner.get_input_details(), runner.get_output_details()
            del runner
            missing = (set(inputs) - set(given)) | (set(outputs) - set(returned))
            if missing:
                raise ValueError(f"the TFLite model lacks tensors {sorted(missing)}")
            for name in inputs:
                interpreter.resize_tensor_input(given[name]["index"], [rows, *given[name]["shape_signature"][1:]])
            interpreter.allocate_tensors()
            shapes = {d["index"]: (tuple(d["shape"]), d["dtype"]) for d in interpreter.get_input_details()}
            self._buffers[rows] = {name: np.zeros(*shapes[given[name]["index"]]) for name in inputs}
            self._interpreters[rows] = (interpreter, {n: given[n]["index"] for n in inputs},
                                        {n: returned[n]["index"] for n in outputs})
            self._run(rows, self._buffers[rows])  # fails now, at load, on a model it cannot run

    def _run(self, rows: int, inputs: dict) -> dict:
        interpreter, given, returned = self._interpreters[rows]
        for name, index in given.items():
            interpreter.set_tensor(index, inputs[name])
        interpreter.invoke()
        return {name: interpreter.get_tensor(index) for name, index in returned.items()}


def flat_caller(tf, concrete, example_args):
    """``concrete`` called with its flat tensors, returning its flat outputs.

    ``ConcreteFunction.__call__`` binds Python arguments to its signature on every call, a cost
    that dominates a small model's call. The graph function under it (``_inference_function``; no captured inputs once
    frozen) takes the flat tensors directly. That is TensorFlow internals, so the direct path is
    used only when it exists and gives the public call's answer on ``example_args``."""
    public = lambda *args: tf.nest.flatten(concrete(*args))  # noqa: E731
    inner = getattr(concrete, "_inference_function", None)
    if inner is None or concrete.captured_inputs or not callable(getattr(inner, "call_flat", None)):
        return public
    try:
        direct = list(inner.call_flat(*example_args))
        expected = public(*example_args)
        same = len(direct) == len(expected) and all(
            np.array_equal(a.numpy(), b.numpy()) for a, b in zip(direct, expected))
    except Exception:  # noqa: BLE001 - any mismatch in the internals: keep the public path
        return public
    return inner.call_flat if same else public


_ALIGNMENT = 64  # TensorFlow's kernels CHECK-fail (killing the process) on less-aligned DLPack memory


def aligned_zeros(shape, dtype) -> np.ndarray:
    """A zeroed array whose data starts on a 64-byte boundary, for DLPack into TensorFlow."""
    dtype = np.dtype(dtype)
    size = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    raw = np.zeros(size + _ALIGNMENT, np.uint8)
    offset = -raw.ctypes.data % _ALIGNMENT
    return raw[offset:offset + size].view(dtype).reshape(shape)


def shared_inputs(tf, shapes_and_dtypes) -> tuple:
    """(aligned numpy arrays, TensorFlow tensors sharing their memory): a call's inputs are written
    into the arrays and the tensors passed, with no copy into TensorFlow."""
    arrays = [aligned_zeros(shape, dtype) for shape, dtype in shapes_and_dtypes]
    return arrays, [tf.experimental.dlpack.from_dlpack(a.__dlpack__()) for a in arrays]
