"""The gateway's calls into Triton: the ranker (scores for candidate rows) and the item tower
(embeddings for new items' text). Every call has a time budget; failures raise
``ModelUnavailable`` so the gateway can degrade (ranker) or answer UNAVAILABLE (item tower).

When Triton runs on the same host, the ranker's packed rows (~120 KB for 200 candidates) and its
scores cross through system shared memory registered with Triton (its shared-memory extension),
not inside the gRPC messages: one region per gateway thread, registered once."""
from __future__ import annotations

import os
import threading
import time

import numpy as np

from tworec import contract
from tworec.ranking.features import pack_ranker_rows

_TRITON_DTYPE = {"float32": "FP32", "int32": "INT32", "int64": "INT64"}
# A call's gRPC deadline is at least this: gRPC needs a positive one (it keeps deadlines in whole
# milliseconds, so a fast Triton may still answer a call whose budget was nearly spent).
_MIN_TIMEOUT_S = 1e-4
# Reconnect quickly after Triton restarts: gRPC's default backoff grows to minutes.
_CHANNEL_ARGS = [("grpc.initial_reconnect_backoff_ms", 100), ("grpc.min_reconnect_backoff_ms", 100),
                 ("grpc.max_reconnect_backoff_ms", 1000), ("grpc.max_receive_message_length", 64 << 20),
                 ("grpc.max_send_message_length", 64 << 20)]


class ModelUnavailable(RuntimeError):
    pass


def _described(name: str, array: np.ndarray):
    """An InferInput with ``array``'s name, shape and dtype, its data not yet set."""
    import tritonclient.grpc as grpcclient

    return grpcclient.InferInput(name, list(array.shape), _TRITON_DTYPE[array.dtype.name])


def _input(name: str, array: np.ndarray):
    array = np.ascontiguousarray(array)
    tensor = _described(name, array)
    tensor.set_data_from_numpy(array)
    return tensor


class _Region:
    """One system shared-memory region registered with Triton: inputs first, then the output."""

    def __init__(self, client, name: str, input_bytes: int, output_bytes: int, timeout_s: float):
        import tritonclient.utils.shared_memory as shm

        self.name, self.input_bytes, self.output_bytes = name, input_bytes, output_bytes
        self.request = None  # (key, ModelInferRequest naming this region) of its thread's last call
        self.handle = shm.create_shared_memory_region(name, "/" + name, input_bytes + output_bytes, create_only=True)
        try:
            client.register_system_shared_memory(name, "/" + name, input_bytes + output_bytes,
                                                 client_timeout=max(timeout_s, _MIN_TIMEOUT_S))
        except Exception:
            shm.destroy_shared_memory_region(self.handle)
            raise

    def release(self, client, timeout_s: float = 1.0) -> None:
        """Unregister (Triton keeps its own mapping while a request still uses it) and unmap."""
        import tritonclient.utils.shared_memory as shm

        if timeout_s > 0:
            try:
                client.unregister_system_shared_memory(self.name, client_timeout=timeout_s)
            except Exception:  # noqa: BLE001 - Triton may be gone or have forgotten it; the memory is ours
                pass
        shm.destroy_shared_memory_region(self.handle)


class _RankerSharedMemory:
    """Per gateway thread, a region sized for ``contract.MAX_CANDIDATES`` ranker rows, created and
    registered on the thread's first call.

    After any failed call the thread's region is dropped and the next call registers a new one: a
    restarted Triton has forgotten every registration, and a call that ran past its budget may
    still be queued in Triton, reading the region's inputs and writing its output, so the region
    must not carry the thread's next call. Dropped regions are released off the request path."""

    def __init__(self, client):
        from concurrent.futures import ThreadPoolExecutor

        self._client = client
        self._local = threading.local()
        self._regions: set = set()
        self._lock = threading.Lock()
        self._serial = 0
        self._releaser = ThreadPoolExecutor(1, thread_name_prefix="tworec-shm-release")

    def region(self, input_bytes: int, output_bytes: int, timeout_s: float) -> _Region:
        region = getattr(self._local, "region", None)
        if region is not None and (region.input_bytes < input_bytes or region.output_bytes < output_bytes):
            self.discard()
            region = None
        if region is None:
            with self._lock:
                self._serial += 1
                name = f"tworec_ranker_{os.getpid()}_{self._serial}"
            region = _Region(self._client, name, input_bytes, output_bytes, timeout_s)
            with self._lock:
                self._regions.add(region)
            self._local.region = region
        return region

    def discard(self) -> None:
        region = getattr(self._local, "region", None)
        if region is not None:
            self._local.region = None
            with self._lock:
                self._regions.discard(region)
            self._releaser.submit(region.release, self._client)

    def close(self) -> None:
        self._releaser.shutdown(wait=True)
        with self._lock:
            regions, self._regions = list(self._regions), set()
        deadline = time.monotonic() + 2.0  # a hung Triton must not hold up shutdown per region
        for region in regions:
            region.release(self._client, min(1.0, deadline - time.monotonic()))


def _is_refused_region(err) -> bool:
    """Triton's answer to a request naming a shared-memory region it does not have registered."""
    return "shared memory" in str(err).lower()


class TritonModels:
    def __init__(self, address: str, shared_memory: bool = False):
        """``shared_memory``: send the ranker's rows through system shared memory; only for a
        Triton on this host (it maps the regions by name)."""
        import tritonclient.grpc as grpcclient

        self.address = address
        self.client = grpcclient.InferenceServerClient(address, channel_args=_CHANNEL_ARGS)
        self._shared = _RankerSharedMemory(self.client) if shared_memory else None
        if shared_memory:
            import grpc
            from tritonclient.grpc import service_pb2_grpc

            self._channel = grpc.insecure_channel(address, options=_CHANNEL_ARGS)
            self._inference = service_pb2_grpc.GRPCInferenceServiceStub(self._channel)

    def infer(self, model: str, version: int, inputs: dict, output: str, timeout_s: float) -> np.ndarray:
        import tritonclient.grpc as grpcclient

        try:
            result = self.client.infer(model, [_input(k, v) for k, v in inputs.items()], model_version=str(version),
                                       outputs=[grpcclient.InferRequestedOutput(output)],
                                       client_timeout=max(timeout_s, _MIN_TIMEOUT_S))
        except Exception as err:  # noqa: BLE001 - any transport or server error means "not available now"
            raise ModelUnavailable(f"{model} v{version} at {self.address}: {err}") from err
        return result.as_numpy(output)

    def rank(self, version: int, rows: dict, timeout_s: float) -> np.ndarray:
        """Ranker scores for rows named as tworec.contract.RANKER_INPUTS (scalars as [C]), sent
        packed per dtype (contract.ranker_packed_inputs): in this thread's shared-memory region when
        enabled, else inside the gRPC message."""
        if self._shared is not None:
            try:
                return self._rank_in_shared_memory(version, rows, timeout_s)
            except ModelUnavailable as err:
                self._shared.discard()
                if not _is_refused_region(err.__cause__):
                    raise
                # Triton lost the region (restarted): this call sends its rows inside the message.
        return self.infer("ranker", version, pack_ranker_rows(rows), contract.RANKER_OUTPUT.name,
                          timeout_s).reshape(-1)

    def _rank_in_shared_memory(self, version: int, rows: dict, timeout_s: float) -> np.ndarray:
        """The rows are packed straight into this thread's region: no message copy, no temporary."""
        import tritonclient.utils.shared_memory as shm

        count = len(rows[contract.RANKER_INPUTS[0].name])
        capacity = max(count, contract.MAX_CANDIDATES)
        layout = contract.ranker_packed_inputs(np.shape(rows["query_embedding"])[-1])
        score = np.dtype(contract.RANKER_OUTPUT.dtype)
        try:
            if timeout_s <= 0:
                raise TimeoutError("the call's budget is spent")
            row_bytes = sum(p.width * np.dtype(p.dtype).itemsize for p in layout)
            region = self._shared.region(capacity * row_bytes, score.itemsize * capacity, timeout_s)
            offsets = []

            def in_region(shape, dtype):
                start = offsets[-1][1] if offsets else 0
                view = shm.get_contents_as_numpy(region.handle, dtype, shape, offset=start)
                offsets.append((start, start + view.nbytes))
                return view

            packed = pack_ranker_rows(rows, allocate=in_region)
            request = self._shared_memory_request(version, region, packed, offsets, score.itemsize * count)
            self._inference.ModelInfer(request, timeout=max(timeout_s, _MIN_TIMEOUT_S))
        except Exception as err:  # noqa: BLE001 - as in ``infer``
            raise ModelUnavailable(f"ranker v{version} at {self.address}: {err}") from err
        return shm.get_contents_as_numpy(region.handle, score, [count], offset=region.input_bytes).copy()

    def _shared_memory_request(self, version: int, region: _Region, packed: dict, offsets: list,
                               output_bytes: int):
        """The ModelInferRequest naming this region's inputs and output (Triton's shared-memory
        parameters). Given the region, it depends only on the version and the row count, so the
        region keeps it and its thread sends it again; tritonclient's ``infer`` rebuilds it on
        every call."""
        from tritonclient.grpc import service_pb2

        key = (version, len(next(iter(packed.values()))))
        if region.request is not None and region.request[0] == key:
            return region.request[1]

        def in_region(tensor, start: int, size: int):
            tensor.parameters["shared_memory_region"].string_param = region.name
            tensor.parameters["shared_memory_offset"].int64_param = start
            tensor.parameters["shared_memory_byte_size"].int64_param = size

        request = service_pb2.ModelInferRequest(model_name="ranker", model_version=str(version))
        for (name, array), (start, stop) in zip(packed.items(), offsets):
            tensor = request.inputs.add(name=name, datatype=_TRITON_DTYPE[array.dtype.name], shape=array.shape)
            in_region(tensor, start, stop - start)
        in_region(request.outputs.add(name=contract.RANKER_OUTPUT.name), region.input_bytes, output_bytes)
        region.request = (key, request)
        return request

    def embed_items(self, version: int, input_ids: np.ndarray, attention_mask: np.ndarray,
                    category_rows: np.ndarray, timeout_s: float) -> np.ndarray:
        feeds = {"input_ids": input_ids.astype(np.int32), "attention_mask": attention_mask.astype(np.int32),
                 "item_category_rows": category_rows.astype(np.int32)}
        return self.infer("item_tower", version, feeds, contract.ITEM_TOWER_OUTPUT.name, timeout_s)

    def ready(self, model: str, version: int) -> bool:
        try:
            return bool(self.client.is_model_ready(model, str(version), client_timeout=1.0))
        except Exception:  # noqa: BLE001
            return False

    def close(self):
        if self._shared is not None:
            self._shared.close()
            self._channel.close()
        self.client.close()
