"""Training throughput: retrieval examples/second, content two-tower against the id-only baseline.

    python benchmarks/bench_training.py --data runs/demo/data [--epochs 1] [--repeats 3]

Both variants train on the same data in the same run (MirroredStrategy over what this machine has);
examples/second leaves out each epoch's first batch (tracing). Prints medians over repeats and the
content/id-only ratio: what the frozen MiniLM cache plus the content head cost per example.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile

from common import add_output_options, save


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="runs/demo/data")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    add_output_options(parser)
    args = parser.parse_args(argv)

    from tworec.towers.config import RetrievalConfig
    from tworec.towers.train import train_retrieval

    rates = {"content": [], "id_only": []}
    replicas = None
    for repeat in range(args.repeats):
        for variant in rates:
            out = tempfile.mkdtemp(prefix="tworec-bench-train-")
            try:
                summary = train_retrieval(args.data, out, RetrievalConfig(variant=variant, epochs=args.epochs,
                                                                          patience=args.epochs), verbose=0).summary
            finally:
                shutil.rmtree(out, ignore_errors=True)
            rates[variant].append(summary["train_examples_per_second"])
            replicas = summary["replicas"]
            print(f"repeat {repeat + 1}: {variant:<8} {rates[variant][-1]:>9,.0f} examples/s", flush=True)
    result = {"data": os.path.abspath(args.data), "epochs": args.epochs, "repeats": args.repeats,
              "replicas": replicas, "cpus": os.cpu_count()}
    for variant, values in rates.items():
        result[f"{variant}_examples_per_second_median"] = statistics.median(values)
    result["content_over_id_only"] = (result["content_examples_per_second_median"]
                                      / result["id_only_examples_per_second_median"])
    print(f"median: content {result['content_examples_per_second_median']:,.0f} examples/s, id-only "
          f"{result['id_only_examples_per_second_median']:,.0f} examples/s (content/id-only "
          f"{result['content_over_id_only']:.2f}) on {replicas} replica(s)")
    return save(result, args.json, "training", args.results)


if __name__ == "__main__":
    main()
