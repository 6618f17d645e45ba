"""beam/spill.py: grouping and keeping data in files gives what Beam's own GroupByKey and
PCollections give, with a bucket larger than its budget split again on disk (one key larger than
the budget included), and a file kept per size limit."""
import random
from collections import defaultdict

import apache_beam as beam
from apache_beam.testing.util import assert_that, equal_to
from beam_helpers import test_pipeline

from tworec.beam import spill


def _events(n_keys: int, per_key: int, seed: int = 0):
    rng = random.Random(seed)
    rows = [(f"user{k}", f"item{rng.randrange(1000)}\x1f{i}") for k in range(n_keys)
            for i in range(rng.randrange(1, per_key + 1))]
    rng.shuffle(rows)
    return rows


def _expected(rows):
    groups = defaultdict(list)
    for key, value in rows:
        groups[key].append(value)
    return sorted((k, sorted(v)) for k, v in groups.items())


def test_group_by_key_on_disk_equals_group_by_key(tmp_path):
    rows = _events(300, 12)
    with test_pipeline() as p:
        grouped = (p | beam.Create(rows) | beam.Reshuffle()
                   | spill.GroupByKeyOnDisk(str(tmp_path / "groups"))
                   | beam.Map(lambda kv: (kv[0], sorted(kv[1]))))
        assert_that(grouped, equal_to(_expected(rows)))
    # Every key once, in several buckets' files: the work was spread.
    assert len({p.name.split("-")[0] for p in (tmp_path / "groups").iterdir()}) > 10


def test_a_bucket_over_its_budget_is_split_on_disk_and_a_huge_key_still_groups(tmp_path, monkeypatch):
    rows = _events(200, 20, seed=1) + [("whale", f"w{i}") for i in range(3000)]
    random.Random(2).shuffle(rows)
    first = tmp_path / "bucket"
    first.mkdir()
    writer = spill.ChunkedFile(str(first), "00000")
    for row in rows:
        writer.add(row)
    path, size = writer.close()
    monkeypatch.setattr(spill, "BUCKET_BYTES", size // 10)
    monkeypatch.setattr(spill, "CHUNK", 16)
    groups = list(spill.group_files([(path, size)], str(tmp_path / "split")))
    assert len(groups) == len({k for k, _ in groups})  # each key once
    assert sorted((k, sorted(v)) for k, v in groups) == _expected(rows)
    assert list((tmp_path / "split").iterdir()) == []  # the split files are removed once grouped


def test_group_files_under_budget_groups_in_memory_without_splitting(tmp_path):
    rows = _events(50, 5, seed=3)
    writer = spill.ChunkedFile(str(tmp_path), "b")
    for row in rows:
        writer.add(row)
    groups = list(spill.group_files([writer.close()], str(tmp_path / "unused")))
    assert sorted((k, sorted(v)) for k, v in groups) == _expected(rows)
    assert not (tmp_path / "unused").exists()


def test_keep_on_disk_rolls_files_and_reads_back_in_order(tmp_path, monkeypatch):
    monkeypatch.setattr(spill, "FILE_BYTES", 4000)
    monkeypatch.setattr(spill, "CHUNK", 50)
    elements = [("user%d" % i, tuple(range(i % 7))) for i in range(2000)]
    with test_pipeline() as p:
        paths = p | beam.Create([elements]) | beam.FlatMap(lambda e: e) | spill.KeepOnDisk(str(tmp_path / "kept"))
        read = paths | beam.FlatMap(spill.read_kept)
        assert_that(read, equal_to(elements), label="every element once")
        assert_that(paths | beam.combiners.Count.Globally() | beam.Map(lambda n: n > 3),
                    equal_to([True]), label="several files")
    files = sorted((tmp_path / "kept").iterdir())
    # Within a file, the order written.
    for f in files:
        got = list(spill.read_kept(str(f)))
        assert got == sorted(got, key=lambda e: int(e[0][4:]))
    spill.remove_folder(str(tmp_path / "kept"))
    assert not (tmp_path / "kept").exists()


def _largest_runner_buffer(config, out: str) -> int:
    """Runs the data job in-process; the bytes of the largest PCollection buffer the runner held
    between stages (a grouping buffer not yet grouped counted at 50 bytes per value)."""
    from unittest import mock

    from apache_beam.runners.portability.fn_api_runner import execution

    from tworec.beam.pipeline import run

    buffers = []
    original = execution.BundleContextManager.get_buffer

    def recording(self, buffer_id, transform_id):
        buffer = original(self, buffer_id, transform_id)
        buffers.append(buffer)
        return buffer

    with mock.patch.object(execution.BundleContextManager, "get_buffer", recording):
        run(config, out, ["--direct_running_mode=in_memory", "--direct_num_workers=1"])

    def size(buffer) -> int:
        if isinstance(buffer, execution.ListBuffer):
            return sum(len(chunk) for chunk in buffer._inputs)
        if isinstance(buffer, execution.GroupingBuffer):  # encoded once grouped, its table emptied
            grouped = buffer._grouped_output or []
            return (sum(len(chunk) for part in grouped for chunk in part)
                    + 50 * sum(len(values) for values in buffer._table.values()))
        return 0

    return max(map(size, buffers))


def test_the_runner_holds_nothing_that_grows_with_the_events(tmp_path):
    """The data job's design property, on Beam's in-process runner: with the same users and items,
    four times the events leave the largest buffer the runner holds between stages about the
    same (Beam's own GroupByKey, or the sequences crossing a stage as elements, would grow with
    the events)."""
    from tworec.beam.config import DataConfig, SyntheticConfig

    largest = {}
    for events in (20_000, 80_000):
        config = DataConfig(synthetic=SyntheticConfig(interactions=events, users=400, items=2_000, seed=5))
        largest[events] = _largest_runner_buffer(config, str(tmp_path / str(events)))
    assert largest[80_000] < 1.5 * largest[20_000], largest
