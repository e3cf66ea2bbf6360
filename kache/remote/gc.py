"""``kache remote gc``: delete what no build has used lately; keep the bucket under a size.

An archive's LastModified is its last use, to a day (an upload sets it, and
:meth:`Remote.record_use` refreshes it when a build fetches it). Over one listing of
the prefix, in order:

1. **unused**: archives whose LastModified is older than ``unused_for``.
2. **size**: when the archives and ``_mkeys`` objects left hold more than ``max_size``
   bytes, archives oldest LastModified first, until they hold no more.
3. **mkeys**: ``_mkeys`` objects none of whose keys has an archive left (or that list
   no valid key). Each is looked at again (HEAD) right before it goes, and kept when
   its ETag is not the one listed: an upload may just have announced a new key there.

Nothing written in the last ``grace`` seconds (``GRACE_SECS``) is deleted by any rule:
an upload running or just finished keeps its archive and its ``_mkeys`` object (the
archive is put first, so an ``_mkeys`` object never outlives the grace of an archive it
announces that gc could not see). Ages are read on the server's clock (the Date of its
replies), so a machine with a wrong clock cannot make a new object look old. Objects
whose names do not fit the layout are never touched, nor counted in the size.

Builds running meanwhile are safe: a fetch of an archive deleted under it is a miss
(404), and the build compiles. An archive used between the listing and its deletion is
deleted anyway; that costs one compile (and upload) later, never a wrong result.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Any, Protocol

from kache.errors import KacheError
from kache.remote.s3 import DELETE_BATCH, Remote, RemoteError, RemoteObject, parse_object_name

__all__ = ["GRACE_SECS", "DEFAULT_UNUSED_FOR", "RULES", "GcItem", "GcFailure", "GcReport", "Progress",
           "collect"]

GRACE_SECS = 3600.0
"""Nothing written this recently is deleted (an upload may be running)."""
DEFAULT_UNUSED_FOR = 30 * 86400.0
"""``kache remote gc`` with neither ``--unused-for`` nor ``--max-size``: 30 days."""
RULES = ("unused", "size", "mkeys")


@dataclass(slots=True)
class GcItem:
    """One archive or ``_mkeys`` object gc looked at; ``rule`` says why it goes."""

    obj: RemoteObject
    kind: str
    """``archive`` or ``mkeys``."""
    crate: str
    key: str
    """The archive's key, or the ``_mkeys`` object's cheap key."""
    rule: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"name": self.obj.name, "kind": self.kind, "crate": self.crate, "key": self.key,
                "size": self.obj.size, "last_modified": _iso(self.obj.modified), "age": round(self.obj.age),
                "rule": self.rule}


@dataclass
class GcFailure:
    """An object gc meant to delete (or read) and could not."""

    name: str
    message: str

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "message": self.message}


@dataclass
class GcReport:
    """What gc deleted (in a dry run: would delete), kept and failed to delete."""

    where: str
    """``s3://bucket/prefix``."""
    dry_run: bool
    unused_for: float | None
    max_size: int | None
    grace: float
    before_objects: int = 0
    before_bytes: int = 0
    """Archives and ``_mkeys`` objects listed (other objects are not counted)."""
    ignored_objects: int = 0
    ignored_bytes: int = 0
    """Objects under the prefix whose names do not fit the layout (never touched)."""
    deleted: list[GcItem] = field(default_factory=list)
    kept_recent: list[GcItem] = field(default_factory=list)
    """Archives the size rule would have deleted, kept because they are newer than the grace."""
    mkeys_changed: int = 0
    """``_mkeys`` objects that changed between the listing and their deletion (kept)."""
    failures: list[GcFailure] = field(default_factory=list)

    def totals(self, rule: str | None = None) -> tuple[int, int]:
        """(objects, bytes) deleted by one rule, or by all."""
        items = [i for i in self.deleted if rule is None or i.rule == rule]
        return len(items), sum(i.obj.size for i in items)

    @property
    def remaining_objects(self) -> int:
        return self.before_objects - len(self.deleted)

    @property
    def remaining_bytes(self) -> int:
        return self.before_bytes - self.totals()[1]

    @property
    def over_max_size(self) -> bool:
        return self.max_size is not None and self.remaining_bytes > self.max_size

    @property
    def ok(self) -> bool:
        return not self.failures

    def to_json(self) -> dict[str, Any]:
        def count(objects: int, nbytes: int) -> dict[str, int]:
            return {"objects": objects, "bytes": nbytes}

        return {
            "dry_run": self.dry_run,
            "remote": self.where,
            "policy": {"unused_for": self.unused_for, "max_size": self.max_size, "grace": self.grace},
            "before": count(self.before_objects, self.before_bytes),
            "deleted": {**{rule: count(*self.totals(rule)) for rule in RULES},
                        "total": count(*self.totals())},
            "remaining": count(self.remaining_objects, self.remaining_bytes),
            "over_max_size": self.over_max_size,
            "kept_recent": count(len(self.kept_recent), sum(i.obj.size for i in self.kept_recent)),
            "mkeys_changed": self.mkeys_changed,
            "ignored": count(self.ignored_objects, self.ignored_bytes),
            "objects": [i.to_json() for i in self.deleted],
            "failures": [f.to_json() for f in self.failures],
            "ok": self.ok,
        }


class Progress(Protocol):
    """Told about gc's work, always from the thread that called :func:`collect`.

    Phases: ``archives`` (deleting archives), ``check`` (reading ``_mkeys`` objects),
    ``mkeys`` (deleting ``_mkeys`` objects).
    """

    def start(self, phase: str, objects: int, nbytes: int) -> None: ...

    def advance(self, phase: str, nbytes: int, objects: int = 1) -> None: ...

    def finish(self, phase: str) -> None: ...


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


# --------------------------------------------------------------------------- gc


def collect(remote: Remote, *, unused_for: float | None = None, max_size: int | None = None,
            dry_run: bool = False, grace: float = GRACE_SECS, batch: int = DELETE_BATCH,
            progress: Progress | None = None) -> GcReport:
    """Apply the rules of the module to ``remote``; see there. With ``unused_for`` and
    ``max_size`` both None only ``_mkeys`` objects are collected.

    Raises RemoteError when the remote cannot be listed, a delete request fails, or the
    remote is read-only (a dry run is allowed: it writes nothing). Objects the server
    refuses to delete, or ``_mkeys`` objects that cannot be read, are report failures.
    """
    where = remote.url
    if remote.is_read_only and not dry_run:
        raise RemoteError(f"remote gc refused: {where}: the remote is read-only (cache.remote.read_only, "
                          "KACHE_REMOTE_READ_ONLY); "
                          "run gc where the remote is writable (a scheduled CI job with write access), "
                          "or pass --dry-run to see what it would delete")
    report = GcReport(where=where, dry_run=dry_run, unused_for=unused_for, max_size=max_size, grace=grace)
    archives, mkeys = _scan(remote, report)
    doomed = _by_age(archives, unused_for, grace)
    gone = {id(a) for a in doomed}
    left = [a for a in archives if id(a) not in gone]
    left_bytes = sum(a.obj.size for a in left) + sum(m.obj.size for m in mkeys)
    doomed += _by_size(left, left_bytes, max_size, grace, report)
    _delete(remote, doomed, "archives", report, progress, batch)
    present = {a.obj.name for a in archives} - {i.obj.name for i in report.deleted}
    dead = _dead_mkeys(remote, mkeys, present, grace, report, progress)
    _delete(remote, dead, "mkeys", report, progress, batch, check=_unchanged)
    return report


def _scan(remote: Remote, report: GcReport) -> tuple[list[GcItem], list[GcItem]]:
    """The archives and ``_mkeys`` objects under the prefix (one paginated listing)."""
    root = remote.prefix + "/" if remote.prefix else ""
    archives: list[GcItem] = []
    mkeys: list[GcItem] = []
    for obj in remote.list_objects(root):
        try:
            kind, crate, key = parse_object_name(obj.name[len(root):])
        except ValueError:
            report.ignored_objects += 1
            report.ignored_bytes += obj.size
            continue
        (archives if kind == "archive" else mkeys).append(GcItem(obj, kind, crate, key))
        report.before_objects += 1
        report.before_bytes += obj.size
    return archives, mkeys


def _by_age(archives: list[GcItem], unused_for: float | None, grace: float) -> list[GcItem]:
    """Archives unused for longer than ``unused_for`` (never less than the grace)."""
    if unused_for is None:
        return []
    limit = max(unused_for, grace)
    doomed = [a for a in archives if a.obj.age > limit]
    for a in doomed:
        a.rule = "unused"
    return doomed


def _by_size(archives: list[GcItem], total: int, max_size: int | None, grace: float,
             report: GcReport) -> list[GcItem]:
    """Archives, least recently used first, until ``total`` is at most ``max_size``.
    Those newer than the grace are kept (``report.kept_recent``), still counted."""
    if max_size is None or total <= max_size:
        return []
    doomed = []
    for a in sorted(archives, key=lambda a: (a.obj.modified, a.obj.name)):
        if total <= max_size:
            break
        if a.obj.age < grace:
            report.kept_recent.append(a)
        else:
            a.rule = "size"
            doomed.append(a)
        total -= a.obj.size
    return doomed


def _dead_mkeys(remote: Remote, mkeys: list[GcItem], present: set[str], grace: float, report: GcReport,
                progress: Progress | None) -> list[GcItem]:
    """The ``_mkeys`` objects older than the grace none of whose keys is in ``present``
    (read in parallel; one that cannot be read is a failure, and kept)."""
    todo = [m for m in mkeys if m.obj.age >= grace]

    def dead(m: GcItem) -> bool:
        keys = remote.mkey_candidates(m.crate, m.key)
        return not any(remote.archive_name(m.crate, k) in present for k in keys)

    found: list[GcItem] = []
    for m, result in _parallel(remote, todo, dead, "check", progress):
        if isinstance(result, RemoteError):
            report.failures.append(GcFailure(m.obj.name, str(result)))
        elif result:
            m.rule = "mkeys"
            found.append(m)
    return sorted(found, key=lambda m: m.obj.name)


def _unchanged(remote: Remote, item: GcItem) -> bool | None:
    """Whether an object is still as listed (same ETag): True; changed: False; gone: None."""
    now = remote.stat(item.obj.name)
    return None if now is None else now.etag == item.obj.etag


def _delete(remote: Remote, items: list[GcItem], phase: str, report: GcReport, progress: Progress | None,
            batch: int, *, check: Callable[[Remote, GcItem], bool | None] | None = None) -> None:
    """Delete ``items`` ``batch`` at a time (a dry run only records them). ``check``,
    run on each item of a batch right before it is deleted, keeps the ones it does not
    answer True for (False: changed, counted; None: gone already)."""
    if report.dry_run:
        report.deleted.extend(items)
        return
    if progress is not None and items:
        progress.start(phase, len(items), sum(i.obj.size for i in items))
    try:
        for start in range(0, len(items), max(1, batch)):
            chunk = items[start:start + max(1, batch)]
            ready = chunk if check is None else _checked(remote, chunk, check, report)
            refused = remote.delete([i.obj.name for i in ready])
            for i in ready:
                if i.obj.name in refused:
                    why = f"remote DELETE failed: s3://{remote.bucket}/{i.obj.name}: {refused[i.obj.name]}"
                    report.failures.append(GcFailure(i.obj.name, why))
                else:
                    report.deleted.append(i)
            if progress is not None:
                progress.advance(phase, sum(i.obj.size for i in chunk), len(chunk))
    finally:
        if progress is not None and items:
            progress.finish(phase)


def _checked(remote: Remote, chunk: list[GcItem], check: Callable[[Remote, GcItem], bool | None],
             report: GcReport) -> list[GcItem]:
    ready = []
    for item, result in _parallel(remote, chunk, lambda i: check(remote, i), None, None):
        if isinstance(result, RemoteError):
            report.failures.append(GcFailure(item.obj.name, str(result)))
        elif result is False:
            report.mkeys_changed += 1
        elif result:
            ready.append(item)
    return sorted(ready, key=lambda i: i.obj.name)


def _parallel(remote: Remote, items: list[GcItem], work: Callable[[GcItem], Any], phase: str | None,
              progress: Progress | None) -> Iterable[tuple[GcItem, Any]]:
    """(item, result or RemoteError) of ``work`` over ``items``, ``remote.concurrency``
    at a time; progress is told from this thread."""
    if not items:
        return []
    if progress is not None and phase is not None:
        progress.start(phase, len(items), sum(i.obj.size for i in items))
    out: list[tuple[GcItem, Any]] = []
    try:
        with ThreadPoolExecutor(max_workers=min(remote.concurrency, len(items)),
                                thread_name_prefix="kache-remote-gc") as pool:
            futures = {pool.submit(work, i): i for i in items}
            for fut in as_completed(futures):
                item = futures[fut]
                try:
                    out.append((item, fut.result()))
                except KacheError as e:
                    out.append((item, e if isinstance(e, RemoteError) else RemoteError(str(e))))
                if progress is not None and phase is not None:
                    progress.advance(phase, item.obj.size)
    finally:
        if progress is not None and phase is not None:
            progress.finish(phase)
    return out
