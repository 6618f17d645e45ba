"""Recording events: check → claim (a re-sent event id is applied once) → the durable log → live
state. What ``RecordEvents`` runs, and what a restart replays.

Catalog changes made at serving time (UpsertItems, RemoveItems) go into the same log as records of
kind "upsert" and "remove", so a restarted gateway applies them again and the next data job sees
the items that were added.
"""
from __future__ import annotations

import collections
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from tworec.contract import Event, EventReject, event_problem
from tworec.live.config import LiveConfig
from tworec.live.event_log import EventLog, read_lines
from tworec.live.event_log import segments as log_segments
from tworec.live.state import LiveState, open_state

EVENT = "event"  # the kind of a log record; catalog changes are "upsert" and "remove"
DECISION = "decision"  # an exploration-slot decision, for off-policy evaluation


@dataclass
class Outcome:
    """What one RecordEvents call did."""

    accepted: int = 0
    duplicates: int = 0
    rejected: list = field(default_factory=list)  # [(index, reason)]


class EventRecorder:
    """One replica's event log and the live state, kept in step."""

    def __init__(self, config: LiveConfig, log: EventLog, state: LiveState):
        self.config, self.log, self.state = config, log, state
        self.counters = collections.Counter()  # events by outcome and reject reason
        self._lock = threading.Lock()

    @classmethod
    def open(cls, config: LiveConfig, log_dir: str, half_life_s: float) -> "EventRecorder":
        """Opens this replica's log folder (``log_dir/<replica>``) and the state store, whose counts
        decay with ``half_life_s`` (the served model's)."""
        folder = Path(log_dir) / config.replica
        log = EventLog(folder, config.segment_max_bytes, config.segment_max_s)
        return cls(config, log, open_state(config, half_life_s))

    def record(self, events: list, known_item, now: float | None = None) -> Outcome:
        """``events``: Event or EventReject (what parsing found) per request entry; ``known_item(id)``
        says whether the catalog has the item (only those count toward trending)."""
        now = time.time() if now is None else now
        outcome, fresh, seen_in_call = Outcome(), [], set()
        for index, event in enumerate(events):
            problem = event if isinstance(event, EventReject) else event_problem(event, int(now),
                                                                                  self.config.max_future_s)
            if problem is None and event.event_id in seen_in_call:
                problem = EventReject.REPEATED_IN_CALL
            if problem is not None:
                outcome.rejected.append((index, problem.value))
                continue
            seen_in_call.add(event.event_id)
            fresh.append(event)
        claimed = self.state.claim([e.event_id for e in fresh]) if fresh else []
        new = [e for e, ok in zip(fresh, claimed) if ok]
        outcome.duplicates = len(fresh) - len(new)
        if new:
            try:
                self.log.append([{"kind": EVENT, **e.to_json()} for e in new])
            except OSError:
                self.state.release([e.event_id for e in new])  # not durable: a re-send must be accepted
                raise
            self.state.record(new, [known_item(e.item_id) for e in new])
        outcome.accepted = len(new)
        with self._lock:
            self.counters["accepted"] += outcome.accepted
            self.counters["duplicates"] += outcome.duplicates
            for _, reason in outcome.rejected:
                self.counters[f"rejected_{reason}"] += 1
        return outcome

    def log_decision(self, payload: dict) -> None:
        """An exploration-slot decision (its candidates' posteriors, the item chosen, its propensity),
        for ``tworec eval-policy``; written in the background: the answer does not wait for it."""
        self.log.append_later([{"kind": DECISION, **payload}])

    def log_catalog_change(self, kind: str, payload: dict) -> None:
        """Makes an UpsertItems / RemoveItems durable before it is acknowledged."""
        self.log.append([{"kind": kind, "at": int(time.time()), **payload}])

    def replay(self, known_item, apply_catalog_change) -> dict:
        """At start: this replica's log applied again, in order. Catalog changes go to
        ``apply_catalog_change(kind, record)``; events, with an embedded store, rebuild the state
        (a shared store already holds them). Returns counts by record kind."""
        rebuild = self.config.state == "embedded"
        counts = collections.Counter()
        for segment in log_segments(self.log.folder):
            if segment.path == self.log.current:
                continue
            events = []
            for line in read_lines(segment.path):
                record = _decoded(line)
                kind = record.pop("kind", EVENT) if isinstance(record, dict) else "unreadable"
                counts[kind] += 1
                if kind == EVENT and rebuild:
                    event = _event(record)
                    if event is None:
                        counts["unreadable"] += 1
                    else:
                        events.append(event)
                elif kind in ("upsert", "remove"):
                    if events:
                        self._rebuild(events, known_item)
                        events = []
                    apply_catalog_change(kind, record)
            if events:
                self._rebuild(events, known_item)
        return dict(counts)

    def _rebuild(self, events: list, known_item) -> None:
        claimed = self.state.claim([e.event_id for e in events])
        new = [e for e, ok in zip(events, claimed) if ok]
        self.state.record(new, [known_item(e.item_id) for e in new])

    def close(self) -> None:
        self.log.close()
        self.state.close()


def _event(record: dict):
    try:
        return Event.from_json(record)
    except (KeyError, ValueError, TypeError):
        return None


def _decoded(line: bytes):
    import json

    try:
        return json.loads(line)
    except ValueError:
        return None
