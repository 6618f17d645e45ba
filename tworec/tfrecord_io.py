"""Read TFRecord files (gzip or plain) without TensorFlow: for tests, tools and small artifacts."""
from __future__ import annotations

import glob
import gzip
import struct


def iter_records(path: str):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as handle:
        while True:
            header = handle.read(12)  # uint64 length + uint32 masked crc of the length
            if not header:
                return
            if len(header) < 12:
                raise ValueError(f"{path}: truncated TFRecord header")
            (length,) = struct.unpack("<Q", header[:8])
            data = handle.read(length)
            if len(data) < length or len(handle.read(4)) < 4:
                raise ValueError(f"{path}: truncated TFRecord")
            yield data


def read_records(pattern: str) -> list:
    """All serialized records of the files matching ``pattern``, files in name order."""
    return [r for path in sorted(glob.glob(pattern)) for r in iter_records(path)]
