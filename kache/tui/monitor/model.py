"""What the monitor shows, as plain data: no textual here.

The app polls (in a thread) with :func:`poll`, which reads the events appended since the
last poll (:class:`kache.store.events.Tail`), the store's totals (one short read-only
query, :func:`kache.store.stats.store_totals`) and the daemon's status, and folds the
events into a :class:`Board` (under its lock); the app renders rows from the board.

Outcomes fall in the four groups of ``kache stats`` (:mod:`kache.store.stats`): hits
(local, remote, prefetched), misses (``miss``, ``dup``), pass-through and errors.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kache import units
from kache.store import events as events_mod
from kache.store import layout
from kache.store.events import HIT_OUTCOMES
from kache.store.listing import display_name
from kache.store.stats import Counts, store_totals, zeroed_at

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

__all__ = [
    "Board", "Event", "Tally", "Totals", "Poll", "poll", "daemon_status", "daemon_line", "hit_rate_series",
    "outcome_group", "OUTCOME_LABELS", "EVENT_SORTS", "TALLY_SORTS", "VIEWS", "short_path", "percent",
]

VIEWS = ("events", "projects", "crates")
EVENT_SORTS = ("time", "duration", "size", "crate")
"""Sort keys of the events view: newest first, slowest first, largest first, by name."""
TALLY_SORTS = ("calls", "hits", "misses", "saved", "name")
"""Sort keys of the projects and crates views (largest first; ``name`` alphabetical)."""

OUTCOME_LABELS = {
    "local_hit": "hit", "remote_hit": "remote hit", "prefetch_hit": "prefetched", "miss": "miss",
    "dup": "dup", "passthrough": "pass", "error": "error",
}
"""How each outcome reads in the stream: words, so it needs no colour."""

BUCKET_SECS = 60
"""Width of one step of the hit-rate line."""


def outcome_group(outcome: str) -> str:
    """``hit``, ``miss``, ``passthrough`` or ``error`` (an unknown outcome is an error)."""
    if outcome in HIT_OUTCOMES:
        return "hit"
    if outcome in ("miss", "dup"):
        return "miss"
    if outcome == "passthrough":
        return "passthrough"
    return "error"


def percent(rate: float | None) -> str:
    """``0.8`` → ``80%``; ``—`` when there were no cacheable calls."""
    return "—" if rate is None else f"{rate * 100:.0f}%"


def short_path(path: str, home: str | None) -> str:
    """``/home/ann/src/app`` → ``~/src/app``; ``""`` → ``(unknown)``."""
    if not path:
        return "(unknown)"
    home = (home or "").rstrip("/")
    if home and (path == home or path.startswith(home + "/")):
        return "~" + path[len(home):]
    return path


@dataclass(slots=True)
class Event:
    """One wrapper call as the stream shows it."""

    t: float
    crate: str
    """As shown: a build script by its package (``serde (build script)``)."""
    outcome: str
    reason: str = ""
    ms: float | None = None
    bytes: int | None = None
    root: str = ""
    saved_ms: int = 0
    """The compile time a hit saved."""

    @classmethod
    def from_json(cls, ev: dict[str, Any]) -> Event | None:
        """The event of one log line, or None when it has no time or outcome."""
        t, outcome = ev.get("t"), ev.get("outcome")
        if not isinstance(t, (int, float)) or not isinstance(outcome, str):
            return None
        ms, size, root, saved = ev.get("ms"), ev.get("bytes"), ev.get("root"), ev.get("saved_ms")
        return cls(
            t=float(t), crate=display_name(str(ev.get("crate") or "?"), ev.get("package")), outcome=outcome,
            reason=str(ev.get("reason") or ""),
            ms=float(ms) if isinstance(ms, (int, float)) else None,
            bytes=int(size) if isinstance(size, (int, float)) else None,
            root=root if isinstance(root, str) else "",
            saved_ms=int(saved) if isinstance(saved, (int, float)) else 0,
        )

    @property
    def group(self) -> str:
        return outcome_group(self.outcome)

    def matches(self, needle: str) -> bool:
        """Whether the crate or the project contains ``needle`` (lower case)."""
        return not needle or needle in self.crate.lower() or needle in self.root.lower()


@dataclass(slots=True)
class Tally(Counts):
    """Counts of one project (workspace root) or one crate, or of everything."""

    name: str
    hits: int = 0
    misses: int = 0
    passthrough: int = 0
    errors: int = 0
    saved_ms: int = 0
    last: float = 0.0

    def add(self, ev: Event, saved_ms: int) -> None:
        group = ev.group
        if group == "hit":
            self.hits += 1
            self.saved_ms += saved_ms
        elif group == "miss":
            self.misses += 1
        elif group == "passthrough":
            self.passthrough += 1
        else:
            self.errors += 1
        self.last = max(self.last, ev.t)

    def sort_key(self, sort: str) -> Any:
        if sort == "name":
            return self.name.lower()
        value = {"calls": self.calls, "hits": self.hits, "misses": self.misses, "saved": self.saved_ms}[sort]
        return (-value, self.name.lower())


@dataclass
class Totals:
    """The store's size, as :meth:`kache.store.store.Store.totals` counts it."""

    exists: bool
    entries: int = 0
    logical_bytes: int = 0
    physical_bytes: int = 0

    @property
    def dedup_saved_bytes(self) -> int:
        return max(0, self.logical_bytes - self.physical_bytes)


@dataclass
class Board:
    """Everything the monitor knows, folded from the events seen so far.

    ``recent`` keeps the newest ``keep`` events for the stream; the tallies and the
    hit-rate buckets count every event since ``since``. The poll thread folds events in
    under ``lock`` (a full log takes ~0.5 s, too long for the UI thread); readers of
    ``recent`` and the tallies take it too.
    """

    keep: int = 2000
    recent: deque[Event] = field(default_factory=deque)
    total: Tally = field(default_factory=lambda: Tally(""))
    remote_hits: int = 0
    projects: dict[str, Tally] = field(default_factory=dict)
    crates: dict[str, Tally] = field(default_factory=dict)
    buckets: dict[int, list[int]] = field(default_factory=dict)
    """Minute number → [hits, cacheable calls]."""
    counts_from: float | None = None
    """When ``kache stats --zero`` last zeroed the statistics: older events stay in the
    stream and are not counted, as ``kache stats`` does not count them."""
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)
    """Held while events are folded in (by the poll thread) and while rows are read."""

    def __post_init__(self) -> None:
        self.recent = deque(self.recent, maxlen=self.keep)

    def add(self, raw: Iterable[dict[str, Any]]) -> int:
        """Fold log lines in; returns how many were events."""
        n = 0
        for line in raw:
            ev = Event.from_json(line)
            if ev is None:
                continue
            n += 1
            self.recent.append(ev)
            if self.counts_from is None or ev.t >= self.counts_from:
                self._count(ev)
        return n

    def zeroed(self, at: float) -> bool:
        """The statistics were zeroed at ``at``: count only what came after, as ``kache
        stats`` does (the events the stream keeps are counted again from there). True
        when that changed the counts."""
        if self.counts_from is not None and at <= self.counts_from:
            return False
        self.counts_from = at
        self.total, self.remote_hits = Tally(""), 0
        self.projects, self.crates, self.buckets = {}, {}, {}
        for ev in self.recent:
            if ev.t >= at:
                self._count(ev)
        return True

    def _count(self, ev: Event) -> None:
        """Count one event in the tallies and the hit-rate buckets."""
        saved_ms = ev.saved_ms
        self.total.add(ev, saved_ms)
        if ev.outcome in ("remote_hit", "prefetch_hit"):
            self.remote_hits += 1
        project = self.projects.get(ev.root)
        if project is None:
            project = self.projects[ev.root] = Tally(ev.root)
        project.add(ev, saved_ms)
        crate = self.crates.get(ev.crate)
        if crate is None:
            crate = self.crates[ev.crate] = Tally(ev.crate)
        crate.add(ev, saved_ms)
        group = ev.group
        if group in ("hit", "miss"):
            bucket = self.buckets.setdefault(int(ev.t // BUCKET_SECS), [0, 0])
            bucket[0] += group == "hit"
            bucket[1] += 1

    def events(self, needle: str = "", sort: str = "time", limit: int = 500) -> list[Event]:
        """Recent events that match the filter, sorted; at most ``limit``."""
        needle = needle.lower()
        rows = [ev for ev in self.recent if ev.matches(needle)]
        if sort == "time":
            rows.reverse()
        elif sort == "duration":
            rows.sort(key=lambda ev: -(ev.ms or 0.0))
        elif sort == "size":
            rows.sort(key=lambda ev: -(ev.bytes or 0))
        else:
            rows.sort(key=lambda ev: (ev.crate.lower(), -ev.t))
        return rows[:limit]

    def tallies(self, view: str, needle: str = "", sort: str = "calls") -> list[Tally]:
        """The ``projects`` or ``crates`` rows that match the filter, sorted."""
        needle = needle.lower()
        table = self.projects if view == "projects" else self.crates
        rows = [t for t in table.values() if not needle or needle in t.name.lower()]
        rows.sort(key=lambda t: t.sort_key(sort))
        return rows


def hit_rate_series(buckets: dict[int, list[int]], now: float, n: int) -> list[float | None]:
    """Hit rate of each of the last ``n`` minutes, oldest first (None: no cacheable call)."""
    last = int(now // BUCKET_SECS)
    out: list[float | None] = []
    for b in range(last - n + 1, last + 1):
        counts = buckets.get(b)
        out.append(counts[0] / counts[1] if counts and counts[1] else None)
    return out


# --------------------------------------------------------------------------- polling


@dataclass
class Poll:
    """What one poll found: how many new events, the store's totals, the daemon's status."""

    new_events: int
    totals: Totals
    daemon: dict[str, Any] | None
    error: str | None = None


def daemon_status(store_root: str) -> dict[str, Any] | None:
    """The daemon's ``status`` reply, or None when no daemon runs (or kache has no client)."""
    try:
        from kache.daemon import client  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return None
    try:
        reply = client.request(store_root, {"v": 1, "op": "status"}, timeout=0.2)
    except Exception:  # a daemon that answers badly is shown as not running
        return None
    return reply if isinstance(reply, dict) and reply.get("ok", True) is not False else None


def poll(board: Board, tail: events_mod.Tail, store_root: str,
         status: Callable[[str], dict[str, Any] | None] = daemon_status) -> Poll:
    """Read once and fold the new events into ``board`` (counting from the moment the
    statistics were last zeroed, as ``kache stats``); never raises for a missing or busy
    store (the error is reported)."""
    error = None
    try:
        lines = tail.read()
    except OSError as e:
        lines, error = [], f"cannot read the event log: {e}"
    zeroed = zeroed_at(store_root)  # `kache stats --zero`, before or while the monitor runs
    with board.lock:
        if zeroed is not None:
            board.zeroed(zeroed)
        new = board.add(lines)
    exists = os.path.exists(layout.index_path(store_root))
    totals = Totals(exists)
    if exists:
        try:
            t = store_totals(store_root)
            totals = Totals(True, t["entries"], t["logical_bytes"], t["physical_bytes"])
        except Exception as e:  # sqlite3.OperationalError while a gc holds the lock, …
            error = f"cannot read the store: {e}"
    return Poll(new, totals, status(store_root), error)


def daemon_line(status: dict[str, Any] | None) -> str:
    """One line about the daemon and its transfers."""
    if status is None:
        return "daemon: not running"
    head = f"daemon: pid {status.get('pid', '?')}"
    uptime = status.get("uptime_s")
    if isinstance(uptime, (int, float)):
        head += f", up {units.format_duration(max(1.0, float(uptime)))}"
    parts = [head, f"queue {status.get('queue', 0)}"]
    failed = status.get("uploads_failed") or 0
    parts.append(f"uploaded {status.get('uploads_done', 0)}" + (f" ({failed} failed)" if failed else ""))
    parts.append(f"downloaded {status.get('downloads', 0)}")
    if status.get("prefetches"):
        parts.append(f"prefetched {status['prefetches']}")
    if status.get("last_error"):
        parts.append(f"last error: {status['last_error']}")
    parts.append(f"remote {status['remote']}" if status.get("remote") else "no remote")
    return " · ".join(parts)
