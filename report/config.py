"""Typed configuration of ``tworec report`` (the command line derives its flags from it)."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from tworec.layout import RunLayout
from tworec.settings import setting

DEFAULT_BENCH = os.path.join("bench", "results.json")


@dataclass(frozen=True)
class ReportConfig:
    run: str = setting("", "a run folder from `tworec pipeline` (needs data/ and eval/)", required=True)
    out: str | None = setting(None, "output folder (default RUN/report)")
    bench: str | None = setting(None, "benchmark results (default RUN/bench/results.json, then "
                                      "./bench/results.json, when present)")
    examples: int = setting(4, "example users shown with every model's top 10")
    scann_queries: int = setting(200, "queries of the ScaNN recall-vs-speed curve on this run's items")
    seed: int = setting(0, "seed of the example users and curve queries")

    @property
    def output(self) -> Path:
        return Path(self.out or RunLayout(self.run).report)

    def bench_results(self) -> dict | None:
        candidates = [self.bench] if self.bench else [os.path.join(self.run, DEFAULT_BENCH), DEFAULT_BENCH]
        for path in candidates:
            if path and os.path.exists(path):
                with open(path) as handle:
                    return json.load(handle)
        return None


