"""A new user's first run, through the real ``tworec pipeline`` command: their own csv data with a
0-10 rating scale, a small catalog, and data too small to train on. Each either completes every
stage or stops with one message that says what to change, never with a traceback, and the
libraries' start-up noise stays out of the terminal."""
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from datasets import synthetic_csv

TWOREC = str(Path(sys.executable).with_name("tworec"))
NOISE = ("apitools", "cuInit", "oneDNN", "absl::InitializeLog", "Logging handler created", "XNNPACK")
PROGRESS = re.compile(r"(done in|failed after) [\d.]+s$| … \d+s$")  # the stages' progress lines
FAST = ["--set", "retrieval.encoder=tiny", "--retrieval-epochs", "3", "--ranker-epochs", "3"]


def _tworec(*args, timeout=900):
    done = subprocess.run([TWOREC, *args], capture_output=True, text=True, timeout=timeout)
    return done.returncode, done.stdout, done.stderr


@pytest.fixture(scope="module")
def zero_to_ten(tmp_path_factory):
    return synthetic_csv(tmp_path_factory.mktemp("ten") / "csv", items=120, interactions=2500, rating_scale=2.0)


def test_a_0_to_10_csv_stops_at_the_data_stage_naming_the_fix_and_with_it_writes_every_row(zero_to_ten, tmp_path):
    code, out, err = _tworec("pipeline", "--dataset", "csv", "--input", str(zero_to_ten), "--out", str(tmp_path))
    assert code == 2, out + err
    assert "rejected rows (dead_letter/)" in out  # the summary table
    assert "building csv dataset failed after" in err  # the progress line
    message = err[err.index("tworec pipeline: "):]
    assert message.startswith("tworec pipeline: the data job rejected") and "interactions" in message, err
    assert "rating_out_of_range" in message and "interactions.csv:" in message  # the top reason, a row of it
    assert "fix: --rating-range 0,10" in message
    assert "Traceback" not in out + err and not any(n in out + err for n in NOISE)
    assert not (tmp_path / "retrieval").exists()
    # The fix, on the same run folder: the failed data stage runs again with the new setting.
    code, out, err = _tworec("pipeline", "--dataset", "csv", "--input", str(zero_to_ten), "--out", str(tmp_path),
                             "--rating-range", "0,10", "--until", "data")
    assert code == 0, out + err
    stats = json.loads((tmp_path / "data" / "stats.json").read_text())
    assert stats["reconciliation"]["interactions"] == {"read": 2500, "written": 2500, "rejected": 0, "balanced": True}
    assert "wrote 2,500, rejected 0" in out  # the data job's summary table, printed by the pipeline
    assert not (tmp_path / "retrieval").exists()  # --until data


def test_300_items_and_6000_interactions_complete_every_stage(tmp_path_factory):
    data = synthetic_csv(tmp_path_factory.mktemp("small") / "csv", items=300, interactions=6000)
    run = tmp_path_factory.mktemp("small_run")
    code, out, err = _tworec("pipeline", "--dataset", "csv", "--input", str(data), "--out", str(run), *FAST)
    assert code == 0, out[-3000:] + err[-3000:]
    for stage in ("data", "retrieval", "retrieval_id_only", "index", "search", "ranker", "eval", "export"):
        assert f"[done] {stage} " in out, out
    assert (run / "repo" / "manifest.json").exists()
    # Long steps report to the terminal although the libraries' fd 2 goes to a log file.
    assert "fitting the new-item offset on validation done in" in err, err
    assert "Traceback" not in out + err
    assert not [n for n in NOISE if n in out + err], err
    # Run again with another setting: the finished stages were built with the old one, and the
    # pipeline says so instead of reusing them.
    code, out, err = _tworec("pipeline", "--dataset", "csv", "--input", str(data), "--out", str(run), *FAST,
                             "--set", "retrieval.temperature=0.1")
    assert code == 2 and "was built with other settings (temperature: 0.05 → 0.1)" in err, out + err


def test_too_little_data_stops_with_one_line_naming_the_minimum(tmp_path_factory):
    data = synthetic_csv(tmp_path_factory.mktemp("tiny") / "csv", items=200, interactions=500)
    code, out, err = _tworec("pipeline", "--dataset", "csv", "--input", str(data),
                             "--out", str(tmp_path_factory.mktemp("tiny_run")), *FAST)
    assert code == 2, out[-2000:] + err[-2000:]
    lines = [line for line in err.strip().splitlines() if not PROGRESS.search(line)]
    assert len(lines) == 1 and "needs at least" in lines[0] and "use more data" in lines[0], err
    assert "Traceback" not in out + err
