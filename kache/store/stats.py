"""Statistics for ``kache stats``: the event log folded into counts, plus store totals.

Nothing here takes a lock: the event log is read as it is (``events.read`` skips a
half-written last line), and the index is read in one short query per total. Numbers
(the ones ccache ``-s`` and sccache ``--show-stats`` show):

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
import time
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from kache import quickjson
from kache.store import events, layout
from kache.store.connection import StoreError
from kache.store.events import HIT_OUTCOMES, OUTCOMES
from kache.store.listing import iso
from kache.store.store import Store

__all__ = ["Counts", "Stats", "ProjectStats", "compute", "refresh_fold", "store_totals", "zero", "zeroed_at",
           "HIT_OUTCOMES"]


class Counts:
    """``calls`` and ``hit_rate`` of anything that counts ``hits``, ``misses``,
    ``passthrough`` and ``errors`` (the whole log, a project, a crate in the monitor)."""

    __slots__ = ()

    # What a subclass provides: dataclass fields, or properties computed from a fold.
    @property
    def hits(self) -> int:
        raise NotImplementedError

    @property
    def misses(self) -> int:
        raise NotImplementedError

    @property
    def passthrough(self) -> int:
        raise NotImplementedError

    @property
    def errors(self) -> int:
        raise NotImplementedError

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
    zeroed: float | None = None
    """When ``kache stats --zero`` zeroed the statistics: nothing older is counted."""
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
            "zeroed_at": iso(self.zeroed),
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
    if not os.path.exists(layout.index_path(store_root)):
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

    The whole log's fold is kept in ``tmp/stats-fold.json`` (see :func:`_folded_log`),
    so a later call folds only the events appended since: a full log is ~100k events,
    ~0.8 s to parse and fold on a slow machine. ``since`` folds the log afresh.
    After ``kache stats --zero`` (:func:`zero`), events older than the zeroing are not
    counted, with or without ``since``.
    """
    zeroed = zeroed_at(store_root)
    if since is None:
        fold = _folded_log(store_root, zeroed)
    else:
        fold = _new_fold()
        _fold(events.read_all(store_root, since if zeroed is None else max(since, zeroed)), fold)
    s = Stats(since=since, zeroed=zeroed)
    s.outcomes.update(fold["outcomes"])
    s.first_event, s.last_event = fold["first"], fold["last"]
    s.bytes_restored, s.bytes_stored = fold["restored"], fold["stored"]
    s.saved_ms, s.compile_ms = fold["saved"], fold["compile"]
    s.hit_ms = fold["hit_ms"]
    s.passthrough_reasons, s.miss_reasons, s.error_reasons = (
        _by_count(fold["passthrough"]), _by_count(fold["miss"]), _by_count(fold["error"]))
    s.projects = {root: ProjectStats(root, *c) for root, c in fold["roots"].items()}
    totals = store_totals(store_root)
    s.entries, s.logical_bytes, s.physical_bytes = (
        totals["entries"], totals["logical_bytes"], totals["physical_bytes"])
    return s


def refresh_fold(store_root: str) -> None:
    """Bring the kept fold (``tmp/stats-fold.json``) up to the end of the log, as
    ``kache stats`` would (the daemon does this while idle)."""
    _folded_log(store_root, zeroed_at(store_root))


def zeroed_at(store_root: str) -> float | None:
    """When the statistics were last zeroed (``stats-zero.json``), or None."""
    try:
        with open(layout.stats_zero_path(store_root), "rb") as f:
            doc = quickjson.loads(f.read())
    except (OSError, ValueError, RecursionError):
        return None
    t = doc.get("t") if doc.__class__ is dict else None
    return float(t) if t.__class__ in (int, float) and 0 <= t < 1e11 else None


def zero(store_root: str, now: float | None = None) -> Stats:
    """Zero the statistics: from now on ``kache stats`` counts only events after this
    moment, and the monitor counts from it too. The event log and the store's entries are
    left as they are (the monitor's stream and ``why-miss`` still read the log). Returns
    what was counted until now."""
    before = compute(store_root)
    t = round(time.time() if now is None else now, 3)
    path = layout.stats_zero_path(store_root)
    os.makedirs(store_root, mode=0o700, exist_ok=True)
    tmp = f"{path}.{os.getpid()}"
    try:
        with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w", encoding="utf-8") as f:
            f.write(quickjson.dumps({"t": t}))
        os.replace(tmp, path)
    except OSError as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise StoreError(f"cannot zero the statistics: {path}: {e.strerror or e}") from None
    return before


def _by_count(counts: dict[str, int]) -> dict[str, int]:
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


# --------------------------------------------------------------------------- the fold
# A fold is a plain dict (it is kept as JSON): counts by outcome and by reason, per
# workspace root [hits, misses, passthrough, errors, saved_ms], byte and time totals,
# the first and last event time and every hit's wall time (for median and p95).

_COUNTERS = ("restored", "stored", "saved", "compile")
_REASONS = ("passthrough", "miss", "error")


def _new_fold() -> dict[str, Any]:
    return {"outcomes": dict.fromkeys(OUTCOMES, 0), "passthrough": {}, "miss": {}, "error": {}, "roots": {},
            "restored": 0, "stored": 0, "saved": 0, "compile": 0, "first": None, "last": None, "hit_ms": []}


def _fold(evs: list[dict[str, Any]], f: dict[str, Any]) -> None:
    """Add the (sane) events ``evs`` to the fold ``f``. Written for speed: locals, no
    per-event objects."""
    outcomes, per_root, hit_ms = f["outcomes"], f["roots"], f["hit_ms"]
    passthrough, miss_reasons, error_reasons = f["passthrough"], f["miss"], f["error"]
    restored, stored, saved_total, compile_total = f["restored"], f["stored"], f["saved"], f["compile"]
    first, last = f["first"], f["last"]
    num = (int, float)
    for ev in evs:
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
                reason = str(reason)
                miss_reasons[reason] = miss_reasons.get(reason, 0) + 1
            counts[1] += 1
        elif outcome == "passthrough":
            reason = str(ev.get("reason") or "unknown")
            passthrough[reason] = passthrough.get(reason, 0) + 1
            counts[2] += 1
        else:
            reason = str(ev.get("reason") or "unknown")
            error_reasons[reason] = error_reasons.get(reason, 0) + 1
            counts[3] += 1
    f["restored"], f["stored"], f["saved"], f["compile"] = restored, stored, saved_total, compile_total
    f["first"], f["last"] = first, last


def _merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """A new fold of the events of ``a`` and of ``b``."""
    out = _new_fold()
    for f in (a, b):
        for name in OUTCOMES:
            out["outcomes"][name] += f["outcomes"][name]
        for name in _REASONS:
            for reason, n in f[name].items():
                out[name][reason] = out[name].get(reason, 0) + n
        for root, counts in f["roots"].items():
            mine = out["roots"].setdefault(root, [0, 0, 0, 0, 0])
            out["roots"][root] = [x + y for x, y in zip(mine, counts, strict=False)]
        for name in _COUNTERS:
            out[name] += f[name]
        if f["first"] is not None and (out["first"] is None or f["first"] < out["first"]):
            out["first"] = f["first"]
        if f["last"] is not None and (out["last"] is None or f["last"] > out["last"]):
            out["last"] = f["last"]
        out["hit_ms"] += f["hit_ms"]
    return out


def _is_fold(f: Any) -> bool:
    """Whether a fold read back from the cache has the shape and types ``_fold`` makes
    (a damaged or forged cache file is not used: the log is folded afresh)."""
    def count(v: Any) -> bool:
        return v.__class__ is int and 0 <= v < 1 << 62

    def time_(v: Any) -> bool:
        return v is None or v.__class__ in (int, float) and 0 <= v < 1e11

    try:
        return (f.__class__ is dict and f.keys() == _new_fold().keys()
                and f["outcomes"].__class__ is dict and f["outcomes"].keys() == set(OUTCOMES)
                and all(count(v) for v in f["outcomes"].values())
                and all(f[name].__class__ is dict and all(k.__class__ is str and count(v) for k, v in f[name].items())
                        for name in _REASONS)
                and f["roots"].__class__ is dict
                and all(k.__class__ is str and v.__class__ is list and len(v) == 5 and all(count(x) for x in v)
                        for k, v in f["roots"].items())
                and all(count(f[name]) for name in _COUNTERS) and time_(f["first"]) and time_(f["last"])
                and f["hit_ms"].__class__ is list
                and all(v.__class__ is float and -1e15 < v < 1e15 for v in f["hit_ms"]))
    except (AttributeError, TypeError):
        return False


# The fold of each log file is kept by inode, with the offset it covers and the bytes
# just before that offset (a file rewritten in place, or a reused inode, does not match).
_FOLD_VERSION = 1
_TAIL_BYTES = 64


def _folded_log(store_root: str, zeroed: float | None = None) -> dict[str, Any]:
    """The fold of the whole log (the rotated file, then the current one), or of its
    events at or after ``zeroed``.

    Each file's fold is read from ``tmp/stats-fold.json`` when it still describes that
    file (same inode, the file at least as long, the same bytes before its offset), and
    only the complete lines appended since are folded. The cache is rewritten when it
    changed, and only when the store's ``tmp/`` exists (stats creates nothing).
    """
    cache_path = layout.tmp_path(store_root, layout.STATS_FOLD)
    cached = _read_fold_cache(cache_path, zeroed)
    kept: list[dict[str, Any]] = []
    out = _new_fold()
    changed = False
    for n in (1, 0):
        try:
            with open(events.path(store_root, n), "rb") as f:
                st = os.fstat(f.fileno())
                entry = cached.get(st.st_ino)
                if entry is not None and entry["offset"] <= st.st_size and _tail(f, entry["offset"]) == entry["tail"]:
                    fold, offset = entry["fold"], entry["offset"]
                else:
                    fold, offset, changed = _new_fold(), 0, True
                f.seek(offset)
                data = f.read()
                end = data.rfind(b"\n") + 1  # a line being written is folded next time
                if end:
                    _fold_lines(data[:end], fold, zeroed)
                    offset += end
                    changed = True
                kept.append({"ino": st.st_ino, "offset": offset, "tail": _tail(f, offset), "fold": fold})
        except FileNotFoundError:
            continue
        out = _merge(out, fold)
    if changed or len(kept) != len(cached):
        _write_fold_cache(cache_path, kept, zeroed)
    return out


def _fold_lines(data: bytes, fold: dict[str, Any], since: float | None = None) -> None:
    """Add the events of ``data`` (whole lines) to ``fold``. One process: folding a long
    log's halves in a forked child was tried and measured (100,000 events, 11 MB, on the
    shared 2-core machine: medians 0.74-0.76 s forked against 0.60-0.73 s in one, best
    runs 0.44 against 0.48-0.52 s), and did not earn its fork-safety rules."""
    _fold(events.parse(data, since), fold)


def _tail(f: BinaryIO, offset: int) -> str:
    """The bytes of ``f`` just before ``offset``, in hex."""
    start = max(0, offset - _TAIL_BYTES)
    f.seek(start)
    return f.read(offset - start).hex()


def _read_fold_cache(cache_path: str, zeroed: float | None) -> dict[int, dict[str, Any]]:
    """inode -> {offset, tail, fold} from the cache file; {} when it is missing, from
    another version, damaged or forged, or folded before another zeroing."""
    try:
        with open(cache_path, "rb") as f:
            doc = quickjson.loads(f.read())
    except (OSError, ValueError, RecursionError):
        return {}
    out: dict[int, dict[str, Any]] = {}
    if doc.__class__ is not dict or doc.get("version") != _FOLD_VERSION or doc.get("files").__class__ is not list:
        return {}
    if doc.get("zeroed") != zeroed:
        return {}
    for entry in doc["files"]:
        if (entry.__class__ is dict and entry.get("ino").__class__ is int and entry.get("offset").__class__ is int
                and entry["offset"] >= 0 and entry.get("tail").__class__ is str and _is_fold(entry.get("fold"))):
            out[entry["ino"]] = entry
    return out


def _write_fold_cache(cache_path: str, files: list[dict[str, Any]], zeroed: float | None) -> None:
    if not os.path.isdir(os.path.dirname(cache_path)):
        return
    tmp = f"{cache_path}.{os.getpid()}"
    try:
        with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w", encoding="utf-8") as f:
            f.write(quickjson.dumps({"version": _FOLD_VERSION, "zeroed": zeroed, "files": files}))
        os.replace(tmp, cache_path)
    except OSError:
        try:
            os.unlink(tmp)
        except OSError:
            pass
