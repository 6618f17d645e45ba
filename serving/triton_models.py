"""The gateway's calls into Triton: the ranker (scores for candidate rows) and the item tower
(embeddings for new items' text). Every call has a time budget; failures raise
``ModelUnavailable`` so the gateway can degrade (ranker) or answer UNAVAILABLE (item tower)."""
from __future__ import annotations

import numpy as np

from tworec import contract
from tworec.ranking.features import pack_ranker_rows

_TRITON_DTYPE = {"float32": "FP32", "int32": "INT32", "int64": "INT64"}
# Reconnect quickly after Triton restarts: gRPC's default backoff grows to minutes.
_CHANNEL_ARGS = [("grpc.initial_reconnect_backoff_ms", 100), ("grpc.min_reconnect_backoff_ms", 100),
                 ("grpc.max_reconnect_backoff_ms", 1000), ("grpc.max_receive_message_length", 64 << 20),
                 ("grpc.max_send_message_length", 64 << 20)]


class ModelUnavailable(RuntimeError):
    pass


def _input(name: str, array: np.ndarray):
    import tritonclient.grpc as grpcclient

    array = np.ascontiguousarray(array)
    tensor = grpcclient.InferInput(name, list(array.shape), _TRITON_DTYPE[array.dtype.name])
    tensor.set_data_from_numpy(array)
    return tensor


class TritonModels:
    def __init__(self, address: str):
        import tritonclient.grpc as grpcclient

        self.address = address
        self.client = grpcclient.InferenceServerClient(address, channel_args=_CHANNEL_ARGS)

    def infer(self, model: str, version: int, inputs: dict, output: str, timeout_s: float) -> np.ndarray:
        import tritonclient.grpc as grpcclient

        try:
            result = self.client.infer(model, [_input(k, v) for k, v in inputs.items()], model_version=str(version),
                                       outputs=[grpcclient.InferRequestedOutput(output)],
                                       client_timeout=max(timeout_s, 0.001))
        except Exception as err:  # noqa: BLE001 - any transport or server error means "not available now"
            raise ModelUnavailable(f"{model} v{version} at {self.address}: {err}") from err
        return result.as_numpy(output)

    def rank(self, version: int, rows: dict, timeout_s: float) -> np.ndarray:
        """Ranker scores for rows named as tworec.contract.RANKER_INPUTS (scalars as [C]), sent
        packed per dtype (contract.ranker_packed_inputs)."""
        return self.infer("ranker", version, pack_ranker_rows(rows), contract.RANKER_OUTPUT.name,
                          timeout_s).reshape(-1)

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
        self.client.close()
