"""Exponentially decayed counts: the one definition the gateway's trending counters and the
ranker's training features share.

An event at time t counts 2 ** -((now - t) / half_life) at time ``now``. An item's counter stores
the log of its events' forward weights, ``log2(sum 2 ** (t_i / half_life))``: adding an event is
a log-add that never changes again, no value overflows however long the system runs, and
ordering items by their stored value orders them by their decayed count at any time (so a top-N
list stays valid until the next event). Reading at ``now``: ``2 ** (stored - now / half_life)``.

The live-count feature that retrieval and the ranker read is an item's *share*: its decayed count
over the decayed count of all counted interactions (``share_feature``). A share does not change
with time (both counts decay alike) and does not follow traffic's volume, which differs between
the period a model's features were fitted on and the period it serves.
"""
from __future__ import annotations

import numpy as np

EMPTY = -np.inf  # the stored value of an item with no events
SHARE_SCALE = 1000.0  # per thousand interactions, so log1p tells hot items apart (on a share < 1 it is ~linear)


def log_weight(timestamp, half_life_s: float):
    """An event's forward weight, as a log2: what it adds (log-adds) to its item's stored value."""
    return np.asarray(timestamp, np.float64) / half_life_s


def log_add(stored, log_weights):
    """A stored value with more events log-added."""
    return np.logaddexp2(stored, log_weights)


def decayed(stored, now: float, half_life_s: float):
    """Stored values read as decayed counts at ``now``."""
    return np.exp2(np.asarray(stored, np.float64) - now / half_life_s)


def share(stored, stored_total):
    """Items' stored values and the stored value of all counted interactions → each item's share
    of the total's decayed count, at any time (0 for an item with no events)."""
    stored = np.asarray(stored, np.float64)
    if stored_total == EMPTY:  # no events at all (EMPTY - EMPTY would be nan)
        return np.zeros(stored.shape)
    return np.exp2(stored - stored_total)


def share_feature(shares) -> np.ndarray:
    """The item_live_count feature: ``log(1 + SHARE_SCALE × share)``, float32."""
    return np.log1p(SHARE_SCALE * np.asarray(shares, np.float64)).astype(np.float32)


class DecayedCounts:
    """The decayed count of every catalog row at any time, from a fixed set of events: built once
    (the events sorted by row and time, each with its row's running stored value), then read for
    any (time, row) pairs, so repeated reads do not sort and accumulate the events again.
    ``event_*`` [E], any order."""

    def __init__(self, event_times: np.ndarray, event_rows: np.ndarray, half_life_s: float):
        event_times, event_rows = np.asarray(event_times, np.int64), np.asarray(event_rows, np.int64)
        order = np.lexsort((event_times, event_rows))  # by row, then time
        self.rows, times = event_rows[order], event_times[order]
        self.half_life_s = half_life_s
        self.stored = np.empty(len(self.rows))
        starts = np.flatnonzero(np.r_[True, self.rows[1:] != self.rows[:-1]]) if len(self.rows) else []
        for begin, end in zip(starts, np.r_[starts[1:], len(self.rows)]):  # each row's running stored value
            self.stored[begin:end] = np.logaddexp2.accumulate(log_weight(times[begin:end], half_life_s))
        # One sorted key per event, row-major; a read clips its time into the row's band.
        self._base = int(times.min()) if len(times) else 0
        self._span = (int(times.max()) - self._base + 2) if len(times) else 1
        self._keys = self.rows * self._span + (times - self._base)

    def at(self, query_times: np.ndarray, query_rows: np.ndarray) -> np.ndarray:
        """``query_times`` [Q], ``query_rows`` [Q, C] → [Q, C] float64: each row's decayed count at
        its query's time of the events strictly before it."""
        query_rows = np.asarray(query_rows, np.int64)
        out = np.zeros(query_rows.shape, np.float64)
        if not len(self._keys) or not query_rows.size:
            return out
        times = np.asarray(query_times, np.int64)
        offsets = np.clip(times - self._base, 0, self._span - 1)[:, None]  # before all events: 0; after: past all
        found = np.searchsorted(self._keys, query_rows * self._span + offsets, side="left") - 1
        valid = (found >= 0) & (self.rows[np.maximum(found, 0)] == query_rows)
        pair_times = np.broadcast_to(times[:, None], query_rows.shape)
        out[valid] = decayed(self.stored[found[valid]], pair_times[valid], self.half_life_s)
        return out

