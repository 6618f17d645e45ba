"""The evaluation report: built from a real (tiny) run and opened in a real headless Chromium, which
must load every figure and show the metrics table; the numbers agree with the evaluation."""
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


@pytest.fixture(scope="module")
def run_dir(synthetic_data, tiny_retrieval, tiny_ranker, tmp_path_factory):
    """A run folder in the pipeline's layout, evaluated for real."""
    from tworec.evaluation.evaluate import evaluate
    from tworec.layout import RunLayout

    run = RunLayout(str(tmp_path_factory.mktemp("report_run")))
    os.symlink(synthetic_data, run.data.root)
    os.symlink(tiny_retrieval, run.retrieval)
    evaluate(run.data.root, [run.retrieval], run.eval, ranker_dir=str(tiny_ranker))
    return run


@pytest.fixture(scope="module")
def report(run_dir):
    from tworec.report.build import build_report
    from tworec.report.config import ReportConfig

    no_bench = os.path.join(run_dir.root, "no-bench-results.json")  # the report must do without one
    return build_report(ReportConfig(run=run_dir.root, bench=no_bench, scann_queries=50))


@pytest.fixture(scope="module")
def browser():
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        pytest.fail("Debian's chromium and chromium-driver are needed: `make test` installs them")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--window-size=1280,2000"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def _page_state(browser, page: Path) -> dict:
    browser.get(page.as_uri())
    return browser.execute_script("""
        const images = Array.from(document.images);
        return {
          ready: document.readyState,
          images: images.map(i => ({src: i.getAttribute('src'), loaded: i.complete && i.naturalWidth > 0,
                                    width: i.naturalWidth})),
          metricRows: document.querySelectorAll('table.metrics tbody tr').length,
          bestCells: document.querySelectorAll('table.metrics td.best').length,
          headings: Array.from(document.querySelectorAll('h2')).map(h => h.textContent),
        };""")


def test_every_figure_loads_and_the_table_is_there_in_chromium(report, run_dir, browser):
    state = _page_state(browser, report)
    assert state["ready"] == "complete"
    pngs = sorted(p.name for p in report.parent.glob("*.png"))
    assert sorted(i["src"] for i in state["images"]) == pngs and len(pngs) >= 3
    assert all(i["loaded"] and i["width"] > 300 for i in state["images"]), state["images"]
    from tworec.evaluation.artifact import EvalResults

    metrics = EvalResults.load(run_dir.eval).metrics["temporal"]
    rows = sum(len(segments) for segments in metrics.values())  # one row per model × segment
    assert state["metricRows"] >= rows and state["bestCells"] >= 4  # ≥ one best per metric column
    for heading in ("Accuracy", "HitRate@K curves", "Popularity bias", "Example users"):
        assert heading in state["headings"]


def test_a_missing_figure_is_caught_by_the_browser_check(report, browser, tmp_path):
    broken = tmp_path / "report"
    shutil.copytree(report.parent, broken)
    (broken / "popularity_bias.png").unlink()
    state = _page_state(browser, broken / "index.html")
    missing = [i["src"] for i in state["images"] if not i["loaded"]]
    assert missing == ["popularity_bias.png"]


def test_report_numbers_agree_with_the_evaluation(report, run_dir):
    from tworec.evaluation.artifact import EvalResults
    from tworec.report.build import REPORT_FIGURES

    results = EvalResults.load(run_dir.eval)
    numbers = json.loads((report.parent / REPORT_FIGURES).read_text())
    metrics = json.loads((report.parent / EvalResults.METRICS).read_text())
    assert metrics == results.metrics
    for segment, by_model in numbers["hitrate_curves"].items():
        for model, curve in by_model.items():
            assert len(curve) == 200 and all(np.diff(curve) >= 0)
            expected = metrics["temporal"][model][segment]
            assert curve[9] == pytest.approx(expected["hitrate@10"]) and curve[99] == pytest.approx(expected["hitrate@100"])
    details = results.details()
    for model, outcome in details.outcomes.items():
        top = outcome.top
        assert all(len(set(row)) == len(row) for row in top)  # no item twice in a top 10
        hit_in_top = (top == details.targets[:, None]).any(axis=1)
        assert np.array_equal(hit_in_top, outcome.ranks <= 10), model  # the top 10 agrees with the ranks
        assert 0 < numbers["coverage@10"][model] <= 1
    curve = next(iter(numbers["scann"].values()))
    leaves = [p["leaves_to_search"] for p in curve["points"]]
    assert leaves == sorted(set(leaves)) and leaves[-1] == curve["leaves"]  # up to every leaf
    assert all(0 <= p["recall"] <= 1 and p["qps"] > 0 for p in curve["points"]) and curve["brute_force_qps"] > 0


def test_the_exploration_section_shows_each_arm_its_interval_and_the_off_policy_estimate(tmp_path):
    from tworec.report.build import _exploration_html

    def arm(clicks, new, discoverable, median, reached):
        return {"clicks": clicks, "new_item_clicks": new, "discoverable_new_items": discoverable,
                "median_impressions_to_first_click": median, "reached_impressions_to_first_click": reached,
                "median_requests_to_first_click": 5000.0, "reached_requests_to_first_click": reached,
                "ci95": {"clicks": [clicks - 40, clicks + 40], "new_item_clicks": [new - 10, new + 10]}, "per_seed": []}

    sim = {"requests": 10_000, "new_items": 66, "seeds": 5,
           "arms": {"no_slot": arm(2923, 56, 3.4, 274, False), "thompson_slot": arm(2835, 168, 13.4, 217, True)},
           "curves": {"no_slot": [[0, 1.0], [5000, 0.9]], "thompson_slot": [[0, 1.0], [3000, 0.5]]},
           "ope": {"ips": 0.0065, "snips": 0.0065, "dr": 0.0057, "true": 0.0087, "ess": 2650, "max_weight": 56,
                   "ci95": {"ips": [0.0042, 0.0088]}, "per_seed": []},
           "goals": {"clicks_ratio": 0.986, "clicks_ratio_lower": 0.981, "discoverable_ratio": 2.5, "median_ratio": 0.82}}
    numbers = {}
    page = _exploration_html(sim, tmp_path, numbers)
    assert "clicks 98.6% (paired by seed, 95% lower end 98.1%)" in page and "2.5x" in page
    assert (tmp_path / "exploration.png").stat().st_size > 1000
    assert "thompson slot" in page and "2,835 [2,795, 2,875]" in page and "not reached in every seed" in page
    assert "IPS 0.0065" in page and "[0.0042, 0.0088]" in page and "2,650" in page
    assert set(numbers["exploration"]["arms"]) == {"no_slot", "thompson_slot"}
