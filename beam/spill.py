"""Grouping and keeping data on disk, so the data job's memory does not grow with the data.

Beam's in-process runners hold a shuffle's whole input, and every PCollection that one stage makes
and a later stage reads, in the runner's memory; each worker then gets its share of them at once.
Here the data stays in files written where it is made, and only file names cross a stage.
Distributed runners run the same transforms; the folder must then be one every worker sees
(gs://, hdfs://, as for Beam's own temp_location).

    GroupByKeyOnDisk   (key, value) → (key, [values]): each bundle writes its elements to one file
                       per bucket of keys; only the file names are shuffled; a bucket is grouped in
                       one worker's memory, after being split again on disk while it is larger
                       than BUCKET_BYTES
    KeepOnDisk         elements → files of them (a bundle's, rolled at FILE_BYTES) → the file names
    read_kept(path)    one of those files → its elements, in the order written
    ForEachKept(fn)    kept files → a DoFn's outputs on their elements, read in the DoFn's stage
    ChunkedFile        the files' one format: pickled chunks of elements

Files are written once under a fresh name and never changed, so a retried bundle's files are
simply unused; the caller removes the folder when the pipeline is done (``remove_folder``).
"""
from __future__ import annotations

import math
import pickle
import uuid
from collections import defaultdict

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.windowed_value import WindowedValue

from tworec.beam.splits import unit_hash

BUCKETS = 64  # the first split of the keys: the grouping's units of parallel work
BUCKET_BYTES = 64 << 20  # a bucket larger than this on disk is split again before it is grouped in memory
CHUNK = 1024  # elements pickled together: one pickle call per small element costs more than the element
FILE_BYTES = 64 << 20  # a kept file is closed and the next begun past this size: files are the next stage's units of work


def bucket_of(key: str, buckets: int, *salt) -> int:
    """A bucket in [0, buckets) for ``key``, the same in every process (Python's ``hash`` is
    salted per process); another ``salt`` splits the keys another way."""
    return min(int(unit_hash(*salt, key) * buckets), buckets - 1)


class ChunkedFile:
    """Appends elements to a new file under ``folder`` in pickled chunks of ``chunk`` elements
    (default ``CHUNK``; fewer for large elements, as a chunk is held until it is written)."""

    def __init__(self, folder: str, tag: str, chunk: int | None = None):
        self.path = FileSystems.join(folder, f"{tag}-{uuid.uuid4().hex}")
        self._handle = FileSystems.create(self.path, compression_type=CompressionTypes.UNCOMPRESSED)
        self._chunk: list = []
        self._size = chunk or CHUNK
        self.bytes = 0

    def add(self, element) -> None:
        self._chunk.append(element)
        if len(self._chunk) >= self._size:
            self._flush()

    def _flush(self) -> None:
        if self._chunk:
            data = pickle.dumps(self._chunk, protocol=pickle.HIGHEST_PROTOCOL)
            self._handle.write(data)
            self.bytes += len(data)
            self._chunk = []

    def close(self) -> tuple[str, int]:
        """Writes what is left and closes; → (path, bytes)."""
        self._flush()
        self._handle.close()
        return self.path, self.bytes


def read_kept(path: str):
    """The elements of a file written by ``KeepOnDisk`` or ``GroupByKeyOnDisk``, in order."""
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
        while True:
            try:
                # A new unpickler per chunk: one unpickler's memo outlives a load, and each chunk
                # was pickled with a fresh memo (a shared one would resolve references wrongly).
                chunk = pickle.load(handle)
            except EOFError:
                return
            yield from chunk


def at_end_of_bundle(value):
    """``value`` as an output of ``finish_bundle`` (which must give its window and timestamp)."""
    return WindowedValue(value, GlobalWindow().max_timestamp(), (GlobalWindow(),))


class _SpillByBucket(beam.DoFn):
    """(key, value) → this bundle's file for the key's bucket; at the end of the bundle,
    (bucket, (path, bytes)) for each file it wrote."""

    def __init__(self, folder: str):
        self._folder = folder

    def start_bundle(self):
        self._files = {}

    def process(self, element):
        bucket = bucket_of(element[0], BUCKETS, 0)
        if bucket not in self._files:
            self._files[bucket] = ChunkedFile(self._folder, f"{bucket:05d}")
        self._files[bucket].add(element)

    def finish_bundle(self):
        for bucket, spilled in sorted(self._files.items()):
            yield at_end_of_bundle((bucket, spilled.close()))
        self._files = {}


def group_files(files, folder: str, level: int = 1):
    """(key, value) files of one bucket, as (path, bytes) pairs → (key, [values]) once per key, in
    no particular order (keys and values alike). Larger than ``BUCKET_BYTES``, they are first split
    by key into smaller files (removed once grouped), each grouped the same way; a part that does
    not shrink (one key holds it all) is grouped in memory as it is."""
    files = sorted(files)
    total = sum(size for _, size in files)
    if total > BUCKET_BYTES:
        parts = 2 * math.ceil(total / BUCKET_BYTES)  # halves the chance that uneven keys leave a part too large
        writers = {}
        for path, _ in files:
            for key, value in read_kept(path):
                part = bucket_of(key, parts, level)
                if part not in writers:
                    writers[part] = ChunkedFile(folder, f"split{level}-{part:05d}")
                writers[part].add((key, value))
        written = [w.close() for _, w in sorted(writers.items())]
        for path, size in written:
            if size < total:
                yield from group_files([(path, size)], folder, level + 1)
            else:
                yield from _group_in_memory([(path, size)])
            FileSystems.delete([path])
        return
    yield from _group_in_memory(files)


def _group_in_memory(files):
    groups = defaultdict(list)
    for path, _ in files:
        for key, value in read_kept(path):
            groups[key].append(value)
    for key in sorted(groups):
        yield key, groups.pop(key)


class GroupByKeyOnDisk(beam.PTransform):
    """PCollection[(str key, value)] → PCollection[(key, list of values)], like ``GroupByKey``
    (values in no particular order), with the data in files under ``folder`` rather than in the
    runner: the memory of any one step is bounded by ``BUCKET_BYTES`` of pickled elements (or by
    the largest single key's values), not by the input's size."""

    def __init__(self, folder: str):
        super().__init__()
        self._folder = folder

    def expand(self, keyed):
        folder = self._folder
        return (keyed
                | "Spill" >> beam.ParDo(_SpillByBucket(folder))
                | "FilesByBucket" >> beam.GroupByKey()
                | "Group" >> beam.FlatMap(lambda bucket_files: group_files(bucket_files[1], folder)))


class _KeepInFiles(beam.DoFn):
    def __init__(self, folder: str):
        self._folder = folder

    def start_bundle(self):
        self._file = None

    def process(self, element):
        if self._file is None:
            self._file = ChunkedFile(self._folder, "kept")
        self._file.add(element)
        if self._file.bytes >= FILE_BYTES:
            yield self._file.close()[0]
            self._file = None

    def finish_bundle(self):
        if self._file is not None:
            yield at_end_of_bundle(self._file.close()[0])
            self._file = None


class KeepOnDisk(beam.PTransform):
    """PCollection[X] → PCollection[str]: the paths of files under ``folder`` that hold the elements
    (read them with ``read_kept``). Several later stages can each read the files, where the
    PCollection itself would be held in memory for them all."""

    def __init__(self, folder: str):
        super().__init__()
        self._folder = folder

    def expand(self, elements):
        return elements | "Write" >> beam.ParDo(_KeepInFiles(self._folder))


class ForEachKept(beam.DoFn):
    """A kept file's path → ``fn.process`` (a DoFn's, with the same side inputs) on each of its
    elements. The reading happens in the consumer's own stage: a separate read step would be
    fused into the stage that wrote the files, which would then hold all it read for the consumer
    (a consumer with side inputs runs in a later stage)."""

    def __init__(self, fn: beam.DoFn):
        super().__init__()
        self._fn = fn

    def process(self, path, *side_inputs):
        for element in read_kept(path):
            yield from self._fn.process(element, *side_inputs) or ()


def remove_folder(folder: str) -> None:
    """Deletes what ``folder`` holds (retried bundles' files too), then the folder where a
    filesystem has folders; nothing when it does not exist."""
    held = [m.path for m in FileSystems.match([FileSystems.join(folder, "*")])[0].metadata_list]
    if held:
        FileSystems.delete(held)
    if FileSystems.exists(folder):
        FileSystems.delete([folder])
