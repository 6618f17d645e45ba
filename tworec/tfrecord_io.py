"""The TFRecord format without TensorFlow: reading files (gzip or plain) for tests, tools and small
artifacts, and framing records for writers that control their own file order (the data job's
beam/ordered_tfrecords.py)."""
from __future__ import annotations

import glob
import gzip
import struct

import google_crc32c


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


def iter_matching(pattern: str):
    """The serialized records of the files matching ``pattern``, files in name order, lazily."""
    return (r for path in sorted(glob.glob(pattern)) for r in iter_records(path))


def read_records(pattern: str) -> list:
    """All serialized records of the files matching ``pattern``, files in name order."""
    return list(iter_matching(pattern))


def _masked_crc32c(data: bytes) -> int:
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def frame(record: bytes) -> bytes:
    """One record as TFRecord bytes: length, its masked CRC32C, the data, the data's masked CRC32C."""
    length = struct.pack("<Q", len(record))
    return b"".join([length, struct.pack("<I", _masked_crc32c(length)), record,
                     struct.pack("<I", _masked_crc32c(record))])
