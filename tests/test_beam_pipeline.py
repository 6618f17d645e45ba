"""The data job's rules, on a slice of MovieLens-100K:

- no leakage: every history item is strictly earlier than its example;
- the cold-item holdout: no cold item in train, not even in a history;
- exact reconciliation: read = written + rejected, per reason, with injected bad rows;
- determinism: same inputs and seed → the same records in every split, vocabularies and stats.
"""
import json
import subprocess
import sys
from pathlib import Path

import apache_beam as beam
import pytest
from beam_helpers import test_pipeline
from apache_beam.testing.util import assert_that, equal_to

from datasets import movielens_slice
from tworec import contract, example_codec
from tworec.beam.pipeline import BuildDataset, DataConfig, run
from tworec.contract import Split
from tworec.tfrecord_io import read_records

# Bad rows (every reason the source can hit), appended to u.data after line 3000 of the slice.
BAD_ROWS = (
    b"\t242\t3\t881250949\n"            # bad_user_id (empty)
    b"196\t24 2\t3\t881250949\n"         # bad_item_id (space)
    b"196\t242\t3\tlast tuesday\n"       # bad_timestamp
    b"196\t242\t3\t-5\n"                 # bad_timestamp (negative)
    b"196\t242\t9\t881250949\n"          # rating_out_of_range
    b"196\t242\tNaN\t881250949\n"        # bad_rating
    b"196\t242\t3\n"                     # wrong_column_count
    b"196\t99999\t3\t881250949\n"        # unknown_item
    b"196\t242\t3\t881250949\n"          # duplicate of line 1
    b"\n"                                # empty_line
    b"19\xff6\t242\t3\t881250949\n"      # bad_encoding
    b"196\t242\t3\tNaN\n"                # bad_timestamp (NaN)
    b"19|6\t242\t3\t881250949\n"         # bad_user_id (a separator inside the id)
)
EXPECTED_REJECTIONS = {
    "bad_user_id": 2, "bad_item_id": 1, "bad_timestamp": 3, "rating_out_of_range": 1,
    "bad_rating": 1, "wrong_column_count": 1, "unknown_item": 1, "duplicate": 1,
    "empty_line": 1, "bad_encoding": 1,
}
SLICE = 3000
CONFIG = DataConfig(dataset="movielens-100k", history_length=20)


@pytest.fixture(scope="module")
def raw_folder(tmp_path_factory):
    return movielens_slice(tmp_path_factory.mktemp("ml") / "raw", SLICE, BAD_ROWS)


@pytest.fixture(scope="module")
def two_runs(raw_folder, tmp_path_factory):
    """The same job twice: once through the Python API, once through the ``tworec data`` command
    (with a Beam option passed through), so both paths are covered."""
    config = DataConfig(**{**CONFIG.__dict__, "input": str(raw_folder)})
    out_a, out_b = tmp_path_factory.mktemp("run_a"), tmp_path_factory.mktemp("run_b")
    run(config, str(out_a), ["--direct_num_workers=2"])
    done = subprocess.run(
        [str(Path(sys.executable).with_name("tworec")), "data", "--dataset", "movielens-100k",
         "--input", str(raw_folder), "--out", str(out_b), "--history-length", "20",
         "--direct_num_workers=2"],
        capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "balanced" in done.stdout and "rejected rows" in done.stdout, done.stdout
    assert "building movielens-100k dataset done" in done.stderr
    return out_a, out_b


def _split_records(out: Path, split: Split) -> list:
    return sorted(
        tuple((k, tuple(v) if isinstance(v, list) else v) for k, v in sorted(
            example_codec.decode(contract.INTERACTION_FEATURES, r).items()))
        for r in read_records(str(out / split.value / "part-*.tfrecord.gz")))


def _stats(out: Path) -> dict:
    stats = json.loads((out / "stats.json").read_text())
    stats.pop("seconds")
    return stats


def _decoded(batch):
    return [example_codec.decode(contract.INTERACTION_FEATURES, r) for r in batch.records]


def test_history_never_leaks_and_cold_items_never_reach_train(raw_folder, tmp_path):
    config = DataConfig(**{**CONFIG.__dict__, "input": str(raw_folder)})
    with test_pipeline() as p:
        built = p | BuildDataset(config, str(tmp_path / "scratch"))
        examples = {
            name: batches | f"Decode_{name}" >> beam.FlatMap(_decoded)
            for name, batches in built["examples"].items()
        }
        cold = beam.pvalue.AsSingleton(built["cold_items"])

        def leaks(e):
            if any(t >= e["timestamp"] for t in e["history_timestamps"]):
                yield (e["user_id"], e["item_id"], e["timestamp"])
            if len(e["history_item_ids"]) != len(e["history_timestamps"]) or len(e["history_item_ids"]) > 20:
                yield ("bad history shape", e["user_id"], e["timestamp"])
            if e["history_timestamps"] != sorted(e["history_timestamps"], reverse=True):
                yield ("history not most-recent-first", e["user_id"], e["timestamp"])

        all_examples = [examples[s.value] for s in Split] | beam.Flatten()
        assert_that(all_examples | "Leaks" >> beam.FlatMap(leaks), equal_to([]), label="no leakage")

        def cold_in_train(e, cold_items):
            return [i for i in [e["item_id"], *e["history_item_ids"]] if i in cold_items]

        assert_that(examples[Split.TRAIN.value] | "ColdInTrain" >> beam.FlatMap(cold_in_train, cold),
                    equal_to([]), label="no cold item in train")
        # The rules are not vacuous: there are cold items, their interactions are kept in the
        # other splits, and histories are not empty.
        assert_that(built["cold_items"] | beam.Map(lambda s: len(s) > 50), equal_to([True]),
                    label="cold items held out")
        cold_elsewhere = (
            [examples[s.value] for s in (Split.COLD_TRAIN_PERIOD, Split.VALID, Split.TEST)]
            | "Later" >> beam.Flatten()
            | "IsCold" >> beam.FlatMap(lambda e, c: [1] if e["item_id"] in c else [], cold)
            | "CountCold" >> beam.combiners.Count.Globally()
            | "Some" >> beam.Map(lambda n: n > 100))
        assert_that(cold_elsewhere, equal_to([True]), label="cold interactions kept")
        with_history = (examples[Split.TRAIN.value]
                        | "HasHistory" >> beam.Filter(lambda e: len(e["history_item_ids"]) > 0)
                        | "CountH" >> beam.combiners.Count.Globally()
                        | "Many" >> beam.Map(lambda n: n > 1000))
        assert_that(with_history, equal_to([True]), label="histories present")
        # Histories are really the previous items: the most recent history entry of a user's
        # later example is an earlier example's target.
        valid_hist = (examples[Split.VALID.value]
                      | "Hist" >> beam.Filter(lambda e: len(e["history_item_ids"]) > 0)
                      | "CountV" >> beam.combiners.Count.Globally()
                      | "SomeV" >> beam.Map(lambda n: n > 100))
        assert_that(valid_hist, equal_to([True]), label="valid histories present")


def test_reconciliation_is_exact_with_injected_bad_rows(two_runs):
    out = two_runs[0]
    stats = _stats(out)
    assert stats["rejected"]["interaction"] == EXPECTED_REJECTIONS
    rec = stats["reconciliation"]["interactions"]
    assert rec["read"] == SLICE + len(BAD_ROWS.splitlines())
    assert rec["written"] == SLICE
    assert rec["balanced"] and stats["reconciliation"]["tfrs_protocol_covers_all"]
    written = sum(len(read_records(str(out / s.value / "part-*"))) for s in contract.TEMPORAL_SPLITS)
    assert written == SLICE
    tfrs = sum(len(read_records(str(out / s.value / "part-*"))) for s in contract.TFRS_SPLITS)
    assert tfrs == SLICE
    dead = [json.loads(line) for f in sorted((out / "dead_letter").glob("*.jsonl"))
            for line in f.read_text().splitlines()]
    assert sorted(d["origin"] for d in dead if d["kind"] == "interaction") == sorted(
        f"u.data:{SLICE + i}" for i in range(1, len(BAD_ROWS.splitlines()) + 1))
    assert all(d["reason"] and d["detail"] for d in dead)
    # 80/10/10 by time over the valid interactions; ties stay together so allow a little slack.
    splits = stats["splits"]
    later = splits["valid"]["examples"] + splits["test"]["examples"]
    assert abs(later - 0.2 * SLICE) < 0.02 * SLICE
    assert splits["train"]["last_timestamp"] < splits["valid"]["first_timestamp"]
    assert splits["valid"]["last_timestamp"] < splits["test"]["first_timestamp"]
    # The job's working files (grouping and sequences on disk) are gone with the job.
    for run_folder in two_runs:
        assert not (run_folder / ".scratch").exists()
        assert not [p for p in run_folder.rglob("*") if p.name.startswith((".spill", ".scratch"))]


def _files_in_order(out: Path, split: Split) -> dict:
    return {path.name: read_records(str(path)) for path in sorted((out / split.value).glob("part-*.tfrecord.gz"))}


def test_same_inputs_and_seed_give_the_same_dataset(two_runs):
    """Both runs use two DirectRunner workers: the same records land in the same files, in the same
    order (training reads them in order, so a rebuilt data folder trains the same model)."""
    a, b = two_runs
    for split in Split:
        records_a = _split_records(a, split)
        assert records_a == _split_records(b, split), split
        assert _files_in_order(a, split) == _files_in_order(b, split), split
    assert len(_split_records(a, Split.TRAIN)) > 1000
    for name in ("users", "items", "categories"):
        assert (a / "vocab" / f"{name}.txt").read_text() == (b / "vocab" / f"{name}.txt").read_text()
    assert (a / "popularity.tsv").read_text() == (b / "popularity.tsv").read_text()
    assert (a / "cold_items.txt").read_text() == (b / "cold_items.txt").read_text()
    assert _stats(a) == _stats(b)


def test_vocabularies_come_from_train_and_popularity_matches_it(two_runs):
    out = two_runs[0]
    train = _split_records(out, Split.TRAIN)
    train_items = {dict(r)["item_id"] for r in train}
    vocab = (out / "vocab" / "items.txt").read_text().split("\n")[:-1]
    assert set(vocab) == train_items
    cold = set((out / "cold_items.txt").read_text().split())
    assert not cold & set(vocab)
    counts = [int(line.split("\t")[1]) for line in (out / "popularity.tsv").read_text().splitlines()]
    assert counts == sorted(counts, reverse=True) and sum(counts) == len(train)


def test_ordered_tfrecords_do_not_depend_on_input_order(tmp_path):
    """WriteOrderedTFRecords: the same keyed records in any order and bundling give the same files,
    each shard holding its keys in order with each key's records in theirs, readable by
    TensorFlow; no spill file is left behind; an empty input still writes one shard."""
    import random

    from tworec.beam.ordered_tfrecords import WriteOrderedTFRecords, shard_of
    from tworec.tf_setup import tf

    keyed = [(f"user{u}", tuple(f"record {u}-{i}".encode() for i in range(1 + u % 4))) for u in range(40)]
    shuffled = random.Random(0).sample(keyed, len(keyed))
    outputs = {}
    for name, records in (("sorted", keyed), ("shuffled", shuffled)):
        with test_pipeline() as p:
            paths = (p | beam.Create(records) | beam.Reshuffle()
                     | WriteOrderedTFRecords(str(tmp_path / name / "part"), num_shards=3))
            assert_that(paths | beam.Map(lambda path: Path(path).name),
                        equal_to([f"part-0000{s}-of-00003.tfrecord.gz" for s in range(3)]))
        assert sorted(p.name for p in (tmp_path / name).iterdir()) == [
            f"part-0000{s}-of-00003.tfrecord.gz" for s in range(3)]
        outputs[name] = {path.name: read_records(str(path)) for path in sorted((tmp_path / name).glob("part-*"))}
    assert outputs["sorted"] == outputs["shuffled"]
    for name, records in outputs["sorted"].items():
        shard = int(name.split("-")[1])
        assert records == [r for k, rs in sorted(keyed) if shard_of(k, 3) == shard for r in rs]
    read_by_tf = [r.numpy() for r in tf.data.TFRecordDataset(
        sorted(str(p) for p in (tmp_path / "sorted").glob("part-*")), compression_type="GZIP")]
    assert sorted(read_by_tf) == sorted(r for _, rs in keyed for r in rs)

    with test_pipeline() as p:
        _ = p | beam.Create([], reshuffle=False).with_output_types(tuple) | WriteOrderedTFRecords(
            str(tmp_path / "empty" / "part"))
    assert [path.name for path in (tmp_path / "empty").iterdir()] == ["part-00000-of-00001.tfrecord.gz"]
    assert read_records(str(tmp_path / "empty" / "part-*")) == []


@pytest.fixture(scope="module")
def job_service():
    """Beam's local job service: the job-submission API that the Flink and Spark job servers
    expose, here without their jars."""
    import socket
    import time

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    service = subprocess.Popen([sys.executable, "-m", "apache_beam.runners.portability.local_job_service_main",
                                "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.2)
    else:
        service.kill()
        raise RuntimeError("the local job service did not start")
    yield f"localhost:{port}"
    service.terminate()
    service.wait(timeout=30)


def test_the_portable_runner_through_a_job_service_writes_the_same_dataset(two_runs, raw_folder, job_service,
                                                                           tmp_path):
    """The job submitted to a job service (PortableRunner, as on Flink or Spark) gives the same
    records in the same files as the local runner."""
    config = DataConfig(**{**CONFIG.__dict__, "input": str(raw_folder)})
    out = tmp_path / "portable"
    run(config, str(out), ["--runner=PortableRunner", f"--job_endpoint={job_service}",
                           "--environment_type=LOOPBACK"])
    local = two_runs[0]
    for split in Split:
        assert _split_records(out, split) == _split_records(local, split), split
        assert _files_in_order(out, split) == _files_in_order(local, split), split
    for name in ("users", "items", "categories"):
        assert (out / "vocab" / f"{name}.txt").read_text() == (local / "vocab" / f"{name}.txt").read_text()
    assert (out / "popularity.tsv").read_text() == (local / "popularity.tsv").read_text()
    assert _stats(out) == _stats(local)
