"""Small artifacts a data run writes beside the TFRecords: vocabularies, popularity, cold items,
stats. Each is computed in the pipeline and written whole through Beam's FileSystems, so the job
writes to local disk, GCS or HDFS alike."""
from __future__ import annotations

import json

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
import numpy as np


class SplitSummary(beam.CombineFn):
    """SplitBatches → {"examples", "users", "items", "first_timestamp", "last_timestamp"}.

    A split has at most one batch per user, so users are counted by batches."""

    def create_accumulator(self):
        return [0, 0, set(), None, None]

    def add_input(self, acc, batch):
        acc[0] += len(batch.records)
        acc[1] += 1
        acc[2].update(batch.item_ids)
        acc[3] = batch.first_timestamp if acc[3] is None else min(acc[3], batch.first_timestamp)
        acc[4] = batch.last_timestamp if acc[4] is None else max(acc[4], batch.last_timestamp)
        return acc

    def merge_accumulators(self, accs):
        out = self.create_accumulator()
        for a in accs:
            out[0] += a[0]
            out[1] += a[1]
            out[2] |= a[2]
            for i, pick in ((3, min), (4, max)):
                if a[i] is not None:
                    out[i] = a[i] if out[i] is None else pick(out[i], a[i])
        return out

    def extract_output(self, acc):
        return {"examples": acc[0], "users": acc[1], "items": len(acc[2]),
                "first_timestamp": acc[3], "last_timestamp": acc[4]}


def ranked(counts) -> list:
    """(token, count) pairs, most frequent first, ties by token: a deterministic vocabulary order."""
    return sorted(counts, key=lambda kv: (-kv[1], kv[0]))


def popularity_quantiles(counts) -> dict:
    values = np.array(sorted(c for _, c in counts), dtype=np.int64)
    if not len(values):
        return {}
    qs = (0.5, 0.8, 0.9, 0.99, 1.0)
    out = {f"p{int(q * 100)}": int(np.quantile(values, q, method="lower")) for q in qs}
    top = max(1, int(len(values) * 0.2))
    out["share_of_interactions_in_top_20pct_items"] = round(float(values[-top:].sum() / values.sum()), 4)
    return out


def _write_text(content: str, path: str):
    with FileSystems.create(path) as handle:
        handle.write(content.encode("utf-8"))
    return path


class WriteFile(beam.PTransform):
    """A PCollection holding one string → that string written to ``path``."""

    def __init__(self, path: str):
        super().__init__()
        self._path = path

    def expand(self, content):
        return content | beam.Map(_write_text, self._path)


def lines(tokens) -> str:
    return "".join(f"{t}\n" for t in tokens)


def to_json(obj) -> str:
    return json.dumps(obj, indent=2, sort_keys=True) + "\n"
