"""Statistics for ``kache stats``: the event log folded into counts, plus store totals.

Nothing here takes a lock: the event log is read as it is (``events.read`` skips a
half-written last line), and the index is read in one short query per total. Numbers
(REFERENCE §8, as ccache ``-s`` and sccache ``--show-stats`` show them):

``hits``         every hit, wherever it came from: outputs restored, rustc not run.
``remote_hits``  the hits that came from the remote: fetched on demand (``remote_hit``)
                 or brought by the daemon's prefetch before the build asked (``prefetch_hit``).
``misses``       ``miss`` + ``dup``: rustc ran on a cacheable call (``dup``: every output
                 was already stored under another key). A ``miss`` with a ``reason`` was
                 not stored (``compile-failed``, ``input-changed-during-compile``, …).
``passthrough``  calls kache does not cache, by ``reason`` (``executable``, ``emit``, …).
``errors``       calls where the store failed; the build still ran rustc.
``hit_rate``     hits / (hits + misses) over cacheable calls; None when there were none.
"""

from __future__ import annotations

import math
import os
import sqlite3
import statistics
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from kache.store import events
from kache.store.entries import iso
from kache.store.events import HIT_OUTCOMES, OUTCOMES
from kache.store.index import Store, StoreError

__all__ = ["Counts", "Stats", "ProjectStats", "compute", "store_totals", "HIT_OUTCOMES"]


class Counts:
    """``calls`` and ``hit_rate`` of anything that counts ``hits``, ``misses``,
    ``passthrough`` and ``errors`` (the whole log, a project, a crate in the monitor)."""

    __slots__ = ()
    hits: int
    misses: int
    passthrough: int
    errors: int

    @property
    def calls(self) -> int:
        return self.hits + self.misses + self.passthrough + self.errors

    @property
    def hit_rate(self) -> float | None:
        """hits / (hits + misses) over cacheable calls; None when there were none."""
        cacheable = self.hits + self.misses
        return self.hits / cacheable if cacheable else None


@dataclass
class ProjectStats(Counts):
    """Counts of one workspace (the event's ``root``; ``""`` when the call did not say)."""

    root: str
    hits: int = 0
    misses: int = 0
    passthrough: int = 0
    errors: int = 0
    saved_ms: int = 0


@dataclass
class Stats(Counts):
    """What ``kache stats`` shows; ``to_json`` is the ``--json`` document."""

    since: float | None
    """Unix time of the oldest event counted (None: the whole log)."""
    outcomes: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OUTCOMES, 0))
    passthrough_reasons: dict[str, int] = field(default_factory=dict)
    miss_reasons: dict[str, int] = field(default_factory=dict)
    error_reasons: dict[str, int] = field(default_factory=dict)
    bytes_restored: int = 0
    bytes_stored: int = 0
    saved_ms: int = 0
    compile_ms: int = 0
    hit_ms: list[float] = field(default_factory=list, repr=False)
    first_event: float | None = None
    last_event: float | None = None
    entries: int = 0
    logical_bytes: int = 0
    physical_bytes: int = 0
    projects: dict[str, ProjectStats] = field(default_factory=dict)

    @property
    def hits(self) -> int:
        return self.outcomes["local_hit"] + self.remote_hits

    @property
    def remote_hits(self) -> int:
        return self.outcomes["remote_hit"] + self.outcomes["prefetch_hit"]

    @property
    def misses(self) -> int:
        return self.outcomes["miss"] + self.outcomes["dup"]

    @property
    def passthrough(self) -> int:
        return self.outcomes["passthrough"]

    @property
    def errors(self) -> int:
        return self.outcomes["error"]

    @property
    def dedup_saved_bytes(self) -> int:
        return max(0, self.logical_bytes - self.physical_bytes)

    def hit_time(self) -> dict[str, float] | None:
        """Wall time of hits in ms: mean, median, p95 (None without hits)."""
        if not self.hit_ms:
            return None
        ms = sorted(self.hit_ms)
        p95 = ms[max(0, math.ceil(0.95 * len(ms)) - 1)]
        return {"mean": round(statistics.fmean(ms), 1), "median": round(statistics.median(ms), 1),
                "p95": round(p95, 1)}

    def to_json(self) -> dict[str, Any]:
        return {
            "hits": self.hits,
            "remote_hits": self.remote_hits,
            "misses": self.misses,
            "passthrough": self.passthrough,
            "errors": self.errors,
            "entries": self.entries,
            "calls": self.calls,
            "hit_rate": None if self.hit_rate is None else round(self.hit_rate, 4),
            "outcomes": dict(self.outcomes),
            "passthrough_reasons": dict(sorted(self.passthrough_reasons.items(), key=lambda kv: -kv[1])),
            "miss_reasons": dict(sorted(self.miss_reasons.items(), key=lambda kv: -kv[1])),
            "error_reasons": dict(sorted(self.error_reasons.items(), key=lambda kv: -kv[1])),
            "bytes_restored": self.bytes_restored,
            "bytes_stored": self.bytes_stored,
            "time_saved_ms": self.saved_ms,
            "compile_ms": self.compile_ms,
            "hit_time_ms": self.hit_time(),
            "since": iso(self.since),
            "first_event": iso(self.first_event),
            "last_event": iso(self.last_event),
            "store": {
                "entries": self.entries,
                "logical_bytes": self.logical_bytes,
                "physical_bytes": self.physical_bytes,
                "dedup_saved_bytes": self.dedup_saved_bytes,
            },
            "projects": [
                {"root": p.root, "calls": p.calls, "hits": p.hits, "misses": p.misses,
                 "passthrough": p.passthrough, "errors": p.errors, "time_saved_ms": p.saved_ms,
                 "hit_rate": None if p.hit_rate is None else round(p.hit_rate, 4)}
                for p in sorted(self.projects.values(), key=lambda p: (-p.calls, p.root))
            ],
        }


def store_totals(store_root: str) -> dict[str, int]:
    """``Store.totals()`` of the store at ``store_root``; zeros when there is no store yet."""
    if not os.path.exists(os.path.join(store_root, "index.db")):
        return {"entries": 0, "logical_bytes": 0, "physical_bytes": 0}
    store = Store(store_root, create=False)
    try:
        return store.totals()
    except (StoreError, sqlite3.DatabaseError):  # a damaged index: doctor's index check says so
        return {"entries": 0, "logical_bytes": 0, "physical_bytes": 0}
    finally:
        store.close()


def compute(store_root: str, since: float | None = None) -> Stats:
    """Fold the event log of the store at ``store_root`` (events at or after the unix
    time ``since``, or all) into a :class:`Stats`, with the store's totals.

    Written for speed (a full log is ~100k events): locals, no per-event objects.
    """
    s = Stats(since=since)
    outcomes = s.outcomes
    passthrough = Counter[str]()
    miss_reasons = Counter[str]()
    error_reasons = Counter[str]()
    per_root: dict[str, list[int]] = {}  # root -> [hits, misses, passthrough, errors, saved_ms]
    hit_ms = s.hit_ms
    restored = stored = saved_total = compile_total = 0
    first = last = None
    num = (int, float)
    for ev in events.read_all(store_root, since):
        outcome = ev.get("outcome")
        if outcome not in outcomes:
            continue
        outcomes[outcome] += 1
        t = ev.get("t")
        if t.__class__ in num:
            if first is None or t < first:
                first = t
            if last is None or t > last:
                last = t
        root = ev.get("root")
        if root.__class__ is not str:
            root = ""
        counts = per_root.get(root)
        if counts is None:
            counts = per_root[root] = [0, 0, 0, 0, 0]
        if outcome in HIT_OUTCOMES:
            v = ev.get("bytes")
            if v.__class__ in num:
                restored += int(v)
            v = ev.get("saved_ms")
            if v.__class__ in num:
                saved_total += int(v)
                counts[4] += int(v)
            v = ev.get("ms")
            hit_ms.append(float(v) if v.__class__ in num else 0.0)
            counts[0] += 1
        elif outcome == "miss" or outcome == "dup":
            v = ev.get("bytes")
            if v.__class__ in num:
                stored += int(v)
            v = ev.get("compile_ms")
            if v.__class__ in num:
                compile_total += int(v)
            reason = ev.get("reason")
            if reason:
                miss_reasons[str(reason)] += 1
            counts[1] += 1
        elif outcome == "passthrough":
            passthrough[str(ev.get("reason") or "unknown")] += 1
            counts[2] += 1
        else:
            error_reasons[str(ev.get("reason") or "unknown")] += 1
            counts[3] += 1
    s.first_event, s.last_event = first, last
    s.bytes_restored, s.bytes_stored, s.saved_ms, s.compile_ms = restored, stored, saved_total, compile_total
    s.passthrough_reasons = dict(passthrough.most_common())
    s.miss_reasons = dict(miss_reasons.most_common())
    s.error_reasons = dict(error_reasons.most_common())
    s.projects = {root: ProjectStats(root, *c) for root, c in per_root.items()}
    totals = store_totals(store_root)
    s.entries, s.logical_bytes, s.physical_bytes = (
        totals["entries"], totals["logical_bytes"], totals["physical_bytes"])
    return s
