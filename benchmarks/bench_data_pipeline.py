"""Data pipeline throughput: interactions/second for the synthetic dataset on this machine.

    python benchmarks/bench_data_pipeline.py [--interactions 1000000] [--repeats 1]

Anchor: a DirectRunner user report of ~4k elements/s on 1M CSV lines (apache/beam#18495).
Prints the median over repeats and the ratio to the anchor; writes JSON to --json if given.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time

from common import add_output_options, save

ANCHOR_PER_SECOND = 4_000


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--interactions", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=1)
    add_output_options(parser)
    args, beam_args = parser.parse_known_args(argv)

    from tworec.beam.config import DataConfig, SyntheticConfig
    from tworec.beam.pipeline import run

    config = DataConfig(dataset="synthetic",
                        synthetic=SyntheticConfig(interactions=args.interactions))
    rates = []
    for i in range(args.repeats):
        out = tempfile.mkdtemp(prefix="tworec-bench-data-")
        try:
            started = time.perf_counter()
            stats = run(config, out, beam_args)
            seconds = time.perf_counter() - started
        finally:
            shutil.rmtree(out, ignore_errors=True)
        written = stats["reconciliation"]["interactions"]["written"]
        rates.append(written / seconds)
        print(f"run {i + 1}: {written:,} interactions in {seconds:.1f}s = {rates[-1]:,.0f}/s", flush=True)
    median = statistics.median(rates)
    result = {
        "benchmark": "data_pipeline", "interactions": args.interactions, "repeats": args.repeats,
        "interactions_per_second_median": round(median), "anchor_per_second": ANCHOR_PER_SECOND,
        "ratio_to_anchor": round(median / ANCHOR_PER_SECOND, 2), "cpus": os.cpu_count(),
    }
    print(f"median {median:,.0f} interactions/s on {os.cpu_count()} cores; "
          f"{result['ratio_to_anchor']}x the ~{ANCHOR_PER_SECOND:,}/s anchor (goal 5x)")
    return save(result, args.json, "data_pipeline", args.results)


if __name__ == "__main__":
    main(sys.argv[1:])
