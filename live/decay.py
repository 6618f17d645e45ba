"""Exponentially decayed counts: the one definition the gateway's trending counters and the
ranker's training features share.

An event at time t counts 2 ** -((now - t) / half_life) at time ``now``. An item's counter stores
the log of its events' forward weights, ``log2(sum 2 ** (t_i / half_life))``: adding an event is
a log-add that never changes again, no value overflows however long the system runs, and
ordering items by their stored value orders them by their decayed count at any time (so a top-N
list stays valid until the next event). Reading at ``now``: ``2 ** (stored - now / half_life)``.
"""
from __future__ import annotations

import numpy as np

EMPTY = -np.inf  # the stored value of an item with no events


def log_weight(timestamp, half_life_s: float):
    """An event's forward weight, as a log2: what it adds (log-adds) to its item's stored value."""
    return np.asarray(timestamp, np.float64) / half_life_s


def log_add(stored, log_weights):
    """A stored value with more events log-added."""
    return np.logaddexp2(stored, log_weights)


def decayed(stored, now: float, half_life_s: float):
    """Stored values read as decayed counts at ``now``."""
    return np.exp2(np.asarray(stored, np.float64) - now / half_life_s)


def decayed_counts_at(event_times: np.ndarray, event_rows: np.ndarray, query_times: np.ndarray,
                      query_rows: np.ndarray, half_life_s: float) -> np.ndarray:
    """For each (query time, catalog row) pair: the decayed count at that time of the events of
    that row strictly before it. ``event_*`` [E] (any order); ``query_times`` [Q],
    ``query_rows`` [Q, C] → [Q, C] float64: what a live counter read at each query's time holds."""
    event_times, event_rows = np.asarray(event_times, np.int64), np.asarray(event_rows, np.int64)
    query_rows = np.asarray(query_rows, np.int64)
    out = np.zeros(query_rows.shape, np.float64)
    if not len(event_times) or not query_rows.size:
        return out
    order = np.lexsort((event_times, event_rows))  # by row, then time
    rows, times = event_rows[order], event_times[order]
    stored = np.empty(len(rows))
    starts = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]])
    for start, stop in zip(starts, np.r_[starts[1:], len(rows)]):  # each row's running stored value
        stored[start:stop] = np.logaddexp2.accumulate(log_weight(times[start:stop], half_life_s))
    # Each pair's last event strictly before the query: search (row, time) in the sorted events.
    span = int(max(times.max(), np.max(query_times)) - min(times.min(), np.min(query_times))) + 2
    base = min(times.min(), np.min(query_times))
    keys = rows * span + (times - base)
    pair_times = np.broadcast_to(np.asarray(query_times, np.int64)[:, None], query_rows.shape)
    found = np.searchsorted(keys, query_rows * span + (pair_times - base), side="left") - 1
    valid = (found >= 0) & (rows[np.maximum(found, 0)] == query_rows)
    out[valid] = decayed(stored[found[valid]], pair_times[valid], half_life_s)
    return out
