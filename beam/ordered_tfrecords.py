"""TFRecord output that does not depend on the runner: the same records give the same files.

Beam's ``WriteToTFRecord`` puts each bundle's records into a shard the runner picks, so which file
holds a record, and in what order, changes from run to run (two DirectRunner workers swapped the
demo's two train shards between runs). Training reads the files in order, so a rebuilt data folder
trained a different model. Here a record's shard is a stable hash of its key, and each shard is
written in key order.
"""
from __future__ import annotations

import math
import uuid

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from tworec.beam.splits import unit_hash
from tworec.tfrecord_io import frame

RECORDS_PER_SHARD = 200_000  # with num_shards 0: a shard is sorted in one worker's memory


def shard_of(key, num_shards: int) -> int:
    """A shard for ``key`` that is the same in every process (Python's ``hash`` is salted)."""
    return min(int(unit_hash(repr(key)) * num_shards), num_shards - 1)


def shard_path(prefix: str, shard: int, num_shards: int, suffix: str) -> str:
    return f"{prefix}-{shard:05d}-of-{num_shards:05d}{suffix}"


def _write_shard(shard: int, keyed_records, prefix: str, num_shards: int, suffix: str) -> str:
    """Writes to a temporary name, then renames, so a reader never sees half a shard; a retried
    bundle writes the same bytes again."""
    path = shard_path(prefix, shard, num_shards, suffix)
    temporary = f"{path}.tmp-{uuid.uuid4().hex}"
    with FileSystems.create(temporary, compression_type=CompressionTypes.GZIP) as handle:
        for _, record in sorted(keyed_records):
            handle.write(frame(record))
    if FileSystems.exists(path):
        FileSystems.delete([path])
    FileSystems.rename([temporary], [path])
    return path


class WriteOrderedTFRecords(beam.PTransform):
    """(sort key, serialized record) → gzip TFRecord files ``PREFIX-SSSSS-of-NNNNN.tfrecord.gz``.

    A record goes to the shard its key hashes to; each shard is written sorted by (key, record).
    ``num_shards`` 0 makes one shard per ``RECORDS_PER_SHARD`` records. An empty input writes one
    empty shard, as readers expect at least one file. Output: the written paths."""

    def __init__(self, prefix: str, num_shards: int = 0, suffix: str = ".tfrecord.gz"):
        super().__init__()
        self._prefix, self._num_shards, self._suffix = prefix, num_shards, suffix

    def expand(self, keyed):
        fixed, prefix, suffix = self._num_shards, self._prefix, self._suffix
        records = keyed | "Count" >> beam.combiners.Count.Globally()
        shards = beam.pvalue.AsSingleton(
            records | "Shards" >> beam.Map(lambda n: fixed or max(1, math.ceil(n / RECORDS_PER_SHARD))))
        written = (keyed
                   | "Shard" >> beam.Map(lambda kv, n: (shard_of(kv[0], n), kv), n=shards)
                   | "Group" >> beam.GroupByKey()
                   | "Write" >> beam.Map(lambda group, n: _write_shard(*group, prefix, n, suffix), n=shards))
        empty = records | "EmptyShard" >> beam.FlatMap(
            lambda n, num_shards: [] if n else [_write_shard(0, [], prefix, num_shards, suffix)], num_shards=shards)
        return (written, empty) | "Paths" >> beam.Flatten()
