"""Is a short history worth more than none for an unknown user? A probe of the two-stage model.

    python benchmarks/probe_short_history.py --run RUN [--lengths 1 2 3 5 50]

Live state gives a new user's first items to the query tower in place of the no-history query;
this probe asks whether serving histories of at most L items as no history would score better.
It scores the two-stage model as ``tworec eval`` does (the user's state at that moment, the full
catalog, earlier items excluded), with the queries of unknown users (no user-id embedding) holding
1 to L items of history replaced by the no-history query (query vector, history count and hours
since the last item, for both stages). On the validation split (where a serving rule would be
fitted) and the test split: HitRate@10 over all events and over the unknown users' events with
history, and the difference from serving every history (L = 0), with a 95% interval from
resampling users.
"""
from __future__ import annotations

import argparse
import os

import numpy as np

from bench_replay import paired_difference
from common import add_output_options, save


def no_history_query(queries) -> np.ndarray:
    """The query vector of an unknown user with no history, from the split's own such queries (the
    query tower gives them all the same vector)."""
    empty = np.flatnonzero((queries.user_row == 0) & (queries.history_count == 0))
    if not len(empty):
        raise SystemExit("no unknown user without history in this split: nothing to compare with")
    vectors = queries.query[empty]
    if np.abs(vectors - vectors[0]).max() > 1e-5:
        raise SystemExit("unknown users' no-history queries differ: the query tower reads more than the history")
    return vectors[0]


def probe_split(run: str, split, lengths, rounds: int) -> dict:
    """One split's HitRate@10 for L = 0 (every history served) and each of ``lengths``, and each
    one's difference from L = 0; the queries are restored afterwards."""
    from tworec.contract import Split
    from tworec.evaluation.evaluate import TwoStageScorer
    from tworec.layout import RunLayout
    from tworec.towers.catalog import load_catalog
    from tworec.towers.scoring import JudgedSplit

    layout = RunLayout(run)
    data = layout.data.root
    judged = JudgedSplit(data, "temporal", load_catalog(data, Split.TRAIN), split=split)
    two_stage = TwoStageScorer(layout.ranker, data, judged)
    q = two_stage.queries
    empty, served = no_history_query(q), (q.query.copy(), q.history_count.copy(), q.hours_since_last.copy())
    count = served[1]
    with_history = (q.user_row == 0) & (count > 0)
    users = np.array([e["user_id"] for e in judged.examples])
    out, baseline = {"events": len(q), "unknown_with_history": int(with_history.sum())}, None
    for length in [0] + [n for n in lengths if n > 0]:
        gate = with_history & (count <= length)
        q.query[:], q.history_count[:], q.hours_since_last[:] = served  # in place: both stages read these
        q.query[gate], q.history_count[gate], q.hours_since_last[gate] = empty, 0.0, 0.0
        _, outcome = judged.evaluate(two_stage.first, two_stage.rerank)
        hits = np.where(outcome.ranks <= 10, outcome.ranks, 0)  # bench_replay's form: 0 = not in the top 10
        row = {"served_as_no_history": int(gate.sum()), "hitrate@10": round(float((hits > 0).mean()), 4),
               "hitrate@10_unknown_with_history": (round(float((hits[with_history] > 0).mean()), 4)
                                                   if with_history.any() else None)}
        if baseline is None:
            baseline = hits
        else:
            every = np.ones(len(hits), bool)
            row["difference_from_every_history"] = paired_difference(hits, baseline, users, every, rounds, 0)
        out[f"L={length}"] = row
        print(split.value, f"L={length}", row, flush=True)
    q.query[:], q.history_count[:], q.hours_since_last[:] = served
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", required=True, help="a run folder of `tworec pipeline` (its data and ranker)")
    parser.add_argument("--lengths", type=int, nargs="+", default=[1, 2, 3, 5, 50])
    parser.add_argument("--rounds", type=int, default=1000, help="bootstrap resamples of users")
    add_output_options(parser)
    args = parser.parse_args(argv)

    from tworec.contract import Split

    result = {"run": os.path.abspath(args.run),
              "splits": {s.value: probe_split(args.run, s, args.lengths, args.rounds) for s in (Split.VALID, Split.TEST)}}
    return save(result, args.json, "probe_short_history", args.results)


if __name__ == "__main__":
    main()
