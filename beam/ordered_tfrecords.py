"""TFRecord output that does not depend on the runner and whose memory does not grow with the data.

Beam's ``WriteToTFRecord`` puts each bundle's records into a shard the runner picks, so which file
holds a record, and in what order, changes from run to run (two DirectRunner workers swapped the
demo's two train shards between runs). Training reads the files in order, so a rebuilt data folder
trained a different model. Here a key's shard is a stable hash of the key, and each shard is
written in key order.

Records are not shuffled through the runner: Beam's in-process runners hold a shuffle's whole
input in memory, which made the data job's memory grow with the number of events. Each bundle
spills its records to one temporary file per shard where they are made; only the file names cross
the shuffle, and each shard is then sorted in one worker's memory (``RECORDS_PER_SHARD`` bounds
it) and written.
"""
from __future__ import annotations

import math
import os
import uuid

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from tworec.beam.spill import ChunkedFile, at_end_of_bundle, bucket_of, read_kept, remove_folder
from tworec.tfrecord_io import frame

RECORDS_PER_SHARD = 200_000  # with num_shards 0: a shard is sorted in one worker's memory
SPILL_CHUNK = 16  # keys pickled together: each holds all its records, and a bundle holds a chunk per shard


def shard_of(key, num_shards: int) -> int:
    """A shard for ``key`` that is the same in every process."""
    return bucket_of(repr(key), num_shards)


def shard_path(prefix: str, shard: int, num_shards: int, suffix: str) -> str:
    return f"{prefix}-{shard:05d}-of-{num_shards:05d}{suffix}"


def spill_dir(prefix: str) -> str:
    """Where the bundles' temporary files go: hidden beside the shards, so no reader's pattern
    (``PREFIX-*``) matches them."""
    head, tail = os.path.split(prefix)
    return FileSystems.join(head, f".spill-{tail}") if head else f".spill-{tail}"


def shards_for(records: int, fixed: int = 0) -> int:
    """``fixed``, or one shard per ``RECORDS_PER_SHARD`` records (at least one)."""
    return fixed or max(1, math.ceil(records / RECORDS_PER_SHARD))


class _SpillByShard(beam.DoFn):
    """(key, records) → appended to this bundle's temporary file for the key's shard; at the end of
    the bundle, (shard, file path) for each file it wrote. A retried bundle writes new files, and
    only the committed bundle's names reach the shard writer."""

    def __init__(self, directory: str):
        self._dir = directory

    def start_bundle(self):
        self._files = {}

    def process(self, element, num_shards):
        shard = shard_of(element[0], num_shards)
        if shard not in self._files:
            self._files[shard] = ChunkedFile(self._dir, f"{shard:05d}", chunk=SPILL_CHUNK)
        self._files[shard].add(element)

    def finish_bundle(self):
        for shard, spilled in sorted(self._files.items()):
            yield at_end_of_bundle((shard, spilled.close()[0]))
        self._files = {}


def _write_shard(shard: int, spilled, prefix: str, num_shards: int, suffix: str) -> str:
    """Sorts one shard's spilled (key, records) by key and writes it to a temporary name, then
    renames, so a reader never sees half a shard; a retried shard writes the same bytes again."""
    pieces = sorted(p for p in spilled if p)
    keyed = sorted((kv for p in pieces for kv in read_kept(p)), key=lambda kv: kv[0])
    path = shard_path(prefix, shard, num_shards, suffix)
    temporary = f"{path}.tmp-{uuid.uuid4().hex}"
    with FileSystems.create(temporary, compression_type=CompressionTypes.GZIP) as handle:
        for _, records in keyed:
            for record in records:
                handle.write(frame(record))
    if FileSystems.exists(path):
        FileSystems.delete([path])
    FileSystems.rename([temporary], [path])
    return path


class WriteOrderedTFRecords(beam.PTransform):
    """(key, records) → gzip TFRecord files ``PREFIX-SSSSS-of-NNNNN.tfrecord.gz``.

    Each key comes once, with its records in their order (e.g. one user's examples). A key's
    records go to the shard the key hashes to; each shard holds its keys in sorted order. The
    number of shards is ``num_shards``, or with 0 one per ``RECORDS_PER_SHARD`` records: counted
    from ``expected_records`` (a singleton PCollection[int]) when given, else from the input, which
    then makes in-process runners hold the input until it is counted. Every shard is written, so
    an empty input writes one empty shard, as readers expect at least one file. Output: the paths.
    """

    def __init__(self, prefix: str, num_shards: int = 0, suffix: str = ".tfrecord.gz",
                 expected_records=None):
        super().__init__()
        self._prefix, self._num_shards, self._suffix = prefix, num_shards, suffix
        self._expected = expected_records

    def expand(self, keyed):
        fixed, prefix, suffix = self._num_shards, self._prefix, self._suffix
        directory = spill_dir(prefix)
        expected = self._expected
        if expected is None:
            expected = (keyed | "Records" >> beam.Map(lambda kv: len(kv[1]))
                        | "Count" >> beam.CombineGlobally(sum))
        shards = beam.pvalue.AsSingleton(expected | "Shards" >> beam.Map(shards_for, fixed))
        spilled = keyed | "Spill" >> beam.ParDo(_SpillByShard(directory), shards)
        every_shard = (keyed.pipeline | "Seed" >> beam.Create([None])
                       | "EveryShard" >> beam.FlatMap(lambda _, n: [(s, None) for s in range(n)], shards))
        written = ((spilled, every_shard) | "Pieces" >> beam.Flatten()
                   | "Group" >> beam.GroupByKey()
                   | "Write" >> beam.Map(lambda kv, n: _write_shard(*kv, prefix, n, suffix), shards))
        _ = (written | "Done" >> beam.combiners.Count.Globally()
             | "RemoveSpill" >> beam.Map(lambda _: remove_folder(directory)))
        return written
