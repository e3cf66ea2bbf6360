"""Statistics for ``kache stats``: the event log folded into counts, plus store totals.

Nothing here takes a lock: the event log is read as it is (``events.read`` skips a
half-written last line), and the index is read in one short query per total. Numbers
(REFERENCE §8, as ccache ``-s`` and sccache ``--show-stats`` show them):

``hits``         ``local_hit`` + ``remote_hit``: outputs restored, rustc not run.
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
import statistics
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from kache.store import events
from kache.store.events import OUTCOMES
from kache.store.index import Store, StoreError

__all__ = ["Stats", "ProjectStats", "compute", "store_totals"]


@dataclass
class ProjectStats:
    """Counts of one workspace (the event's ``root``; ``""`` when the call did not say)."""

    root: str
    hits: int = 0
    misses: int = 0
    passthrough: int = 0
    errors: int = 0
    saved_ms: int = 0

    @property
    def calls(self) -> int:
        return self.hits + self.misses + self.passthrough + self.errors

    @property
    def hit_rate(self) -> float | None:
        cacheable = self.hits + self.misses
        return self.hits / cacheable if cacheable else None


@dataclass
class Stats:
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
        return self.outcomes["local_hit"] + self.outcomes["remote_hit"]

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
    def calls(self) -> int:
        return sum(self.outcomes.values())

    @property
    def hit_rate(self) -> float | None:
        cacheable = self.hits + self.misses
        return self.hits / cacheable if cacheable else None

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
        from datetime import datetime, timezone

        def iso(t: float | None) -> str | None:
            return None if t is None else datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="seconds")

        return {
            "hits": self.hits,
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


def _num(value: Any) -> float:
    """A numeric event field, 0 when absent or not a number (the log is not trusted)."""
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0.0


def store_totals(store_root: str) -> dict[str, int]:
    """``Store.totals()`` of the store at ``store_root``; zeros when there is no store yet."""
    if not os.path.exists(os.path.join(store_root, "index.db")):
        return {"entries": 0, "logical_bytes": 0, "physical_bytes": 0}
    store = Store(store_root, create=False)
    try:
        return store.totals()
    except StoreError:
        return {"entries": 0, "logical_bytes": 0, "physical_bytes": 0}
    finally:
        store.close()


def compute(store_root: str, since: float | None = None) -> Stats:
    """Fold the event log of the store at ``store_root`` (events at or after the unix
    time ``since``, or all) into a :class:`Stats`, with the store's totals."""
    s = Stats(since=since)
    outcomes = s.outcomes
    passthrough = Counter[str]()
    miss_reasons = Counter[str]()
    error_reasons = Counter[str]()
    projects = s.projects
    first = last = None
    for ev in events.read(store_root, since):
        outcome = ev.get("outcome")
        if outcome not in outcomes:
            continue
        outcomes[outcome] += 1
        t = ev.get("t")
        if isinstance(t, (int, float)):
            first = t if first is None or t < first else first
            last = t if last is None or t > last else last
        reason = ev.get("reason")
        root = ev.get("root")
        if not isinstance(root, str):
            root = ""
        proj = projects.get(root)
        if proj is None:
            proj = projects[root] = ProjectStats(root)
        if outcome == "local_hit" or outcome == "remote_hit":
            s.bytes_restored += int(_num(ev.get("bytes")))
            saved = int(_num(ev.get("saved_ms")))
            s.saved_ms += saved
            s.hit_ms.append(_num(ev.get("ms")))
            proj.hits += 1
            proj.saved_ms += saved
        elif outcome == "miss" or outcome == "dup":
            s.bytes_stored += int(_num(ev.get("bytes")))
            s.compile_ms += int(_num(ev.get("compile_ms")))
            if reason:
                miss_reasons[str(reason)] += 1
            proj.misses += 1
        elif outcome == "passthrough":
            passthrough[str(reason or "unknown")] += 1
            proj.passthrough += 1
        else:
            error_reasons[str(reason or "unknown")] += 1
            proj.errors += 1
    s.first_event, s.last_event = first, last
    s.passthrough_reasons = dict(passthrough.most_common())
    s.miss_reasons = dict(miss_reasons.most_common())
    s.error_reasons = dict(error_reasons.most_common())
    totals = store_totals(store_root)
    s.entries, s.logical_bytes, s.physical_bytes = (
        totals["entries"], totals["logical_bytes"], totals["physical_bytes"])
    return s
