"""Keeping the store in bounds: ``gc`` (repair of damaged entries, age and LRU eviction,
orphans, temp files, incremental dirs, memo rows of vanished files) and ``purge``
(everything, or one crate).

gc plans outside any lock on a snapshot of the index, then deletes in short write
transactions that re-check each choice (``Store.remove_unused``, ``Store.remove_orphans``):
a build that used an entry meanwhile keeps it, and a blob is only ever deleted under
the SQLite write lock, never while an entry that needs it is being recorded.

Sizes are *physical*: each blob counted once however many entries share it, as the
index records them (``Store.totals()``). Over the limit, gc evicts least recently used
entries until the store is at ``TARGET_FRACTION`` of the limit, so it does not run
again after the next few compiles. Entries used in the last
``PIN_SECS`` are never evicted: a build may be restoring them right now.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from kache.store import layout
from kache.store.store import PIN_SECS, Store

__all__ = ["GcReport", "gc", "checked_gc", "purge", "INDEX_CHECK_SECS", "TARGET_FRACTION", "ORPHAN_AGE_SECS",
           "TEMP_AGE_SECS", "STAMP_AGE_SECS"]

# Evict down to this fraction of the limit.
TARGET_FRACTION = 0.9
# A blob no entry references may be a put whose entry is not recorded yet.
ORPHAN_AGE_SECS = 3600.0
# Temp files (``tmp/put-*``, ``tmp/purge-*``) older than this are left over by a crash.
TEMP_AGE_SECS = 3600.0
# Stamps in the stamp dirs of ``tmp/`` (layout.STAMP_DIRS) older than this are dropped; the
# price is one re-validation or one repeated warning.
STAMP_AGE_SECS = 7 * 86400.0
# `kache gc` has SQLite check the index file itself (``PRAGMA quick_check`` reads every
# page: ~0.25 s at 100,000 entries, seconds from a cold disk) at most this often; in
# between, a query of gc's that finds the index damaged leads to the same check.
INDEX_CHECK_SECS = 86400.0
# Keys deleted per write transaction: at first BATCH, then as many as fit in about
# LOCK_SECS (up to MAX_BATCH), so builds never wait long for the lock.
BATCH = 256
MAX_BATCH = 8192
LOCK_SECS = 0.1


@dataclass
class GcReport:
    """What one gc run did; ``to_json`` is the ``--json`` document."""

    max_bytes: int
    target_bytes: int
    before_bytes: int
    after_bytes: int = 0
    evicted: dict[str, int] = field(default_factory=lambda: {"max-age": 0, "size": 0})
    """Entries evicted, by reason: ``max-age`` (unused too long), ``size`` (LRU, over the limit)."""
    evicted_bytes: int = 0
    pinned: int = 0
    """Entries used in the last PIN_SECS that kept the store above the target."""
    kept_recent: int = 0
    """Entries unused for longer than ``max_age`` but used in the last PIN_SECS: kept
    (a build may be restoring them right now)."""
    orphans_removed: int = 0
    orphan_bytes: int = 0
    temp_removed: int = 0
    temp_bytes: int = 0
    incremental_removed: int = 0
    incremental_bytes: int = 0
    broken_removed: int = 0
    """Entries removed because a blob they need was missing, truncated or altered."""
    damaged_blobs: int = 0
    memo_rows_removed: int = 0
    """Memo rows (file hashes, incremental session files) of files and dirs that are gone."""
    index_checked: float | None = None
    """When SQLite last found the index file sound (Unix time; this run or an earlier one)."""

    @property
    def entries_evicted(self) -> int:
        return sum(self.evicted.values())

    @property
    def freed_bytes(self) -> int:
        return self.evicted_bytes + self.orphan_bytes + self.temp_bytes + self.incremental_bytes

    def to_json(self) -> dict[str, Any]:
        return {
            "entries_evicted": self.entries_evicted,
            "evicted": dict(self.evicted),
            "evicted_bytes": self.evicted_bytes,
            "freed_bytes": self.freed_bytes,
            "pinned": self.pinned,
            "kept_recent": self.kept_recent,
            "orphans_removed": self.orphans_removed,
            "orphan_bytes": self.orphan_bytes,
            "temp_removed": self.temp_removed,
            "temp_bytes": self.temp_bytes,
            "incremental_removed": self.incremental_removed,
            "incremental_bytes": self.incremental_bytes,
            "broken_removed": self.broken_removed,
            "damaged_blobs": self.damaged_blobs,
            "memo_rows_removed": self.memo_rows_removed,
            "max_bytes": self.max_bytes,
            "target_bytes": self.target_bytes,
            "before_bytes": self.before_bytes,
            "after_bytes": self.after_bytes,
            "index_checked": self.index_checked,
        }


def _plan(store: Store, max_bytes: int, max_age: float | None, now: float, physical: int
          ) -> tuple[list[str], list[str], int, int, float, float]:
    """Choose entries to evict: (by age, by size, pinned count, kept recent count, age
    cutoff, pin cutoff). "Kept recent": older than ``max_age`` but used in the last
    PIN_SECS, so not evicted by age.

    ``physical`` is the store's size now: under the limit and with no age limit there is
    nothing to plan; under the limit, the blob reference counts are not read at all.
    """
    pin_cutoff = now - PIN_SECS
    age_cutoff = pin_cutoff if max_age is None else min(now - max_age, pin_cutoff)
    over = physical > max_bytes
    if not over and max_age is None:
        return [], [], 0, 0, age_cutoff, pin_cutoff
    users: dict[str, int] = defaultdict(int)
    sizes: dict[str, int] = {}
    blobs_of: dict[str, list[str]] = defaultdict(list)
    if over:
        for key, digest, size in store.blob_refs():
            users[digest] += 1
            sizes[digest] = max(size, sizes.get(digest, 0))
            blobs_of[key].append(digest)
        physical = sum(sizes.values())

    def drop(key: str) -> None:
        nonlocal physical
        for digest in blobs_of.get(key, ()):
            users[digest] -= 1
            if users[digest] == 0:
                physical -= sizes[digest]

    rows = store.summaries(order="lru", select="key, last_used")
    i = 0
    by_age: list[str] = []
    kept_recent = 0
    if max_age is not None:
        while i < len(rows) and rows[i][1] < age_cutoff:
            by_age.append(rows[i][0])
            drop(rows[i][0])
            i += 1
        while i + kept_recent < len(rows) and rows[i + kept_recent][1] < now - max_age:
            kept_recent += 1  # old enough to go, but used in the last PIN_SECS
    by_size: list[str] = []
    pinned = 0
    if physical > max_bytes:
        target = int(max_bytes * TARGET_FRACTION)
        while physical > target and i < len(rows) and rows[i][1] < pin_cutoff:
            by_size.append(rows[i][0])
            drop(rows[i][0])
            i += 1
        if physical > target:
            pinned = len(rows) - i  # sorted by last use: everything left is pinned
    return by_age, by_size, pinned, kept_recent, age_cutoff, pin_cutoff


def _evict(store: Store, keys: list[str], before: float | None) -> tuple[int, int]:
    """Delete ``keys`` in write transactions of about ``LOCK_SECS`` each: the batch grows
    from ``BATCH`` while transactions are quick (a large eviction does not pay a commit
    per 256 keys) and shrinks when one held the lock too long (builds wait for it). The
    WAL is checkpointed in bulk (``Store.bulk``), not after every batch."""
    count = freed = 0
    if not keys:
        return count, freed
    batch, i = BATCH, 0
    with store.bulk() as bulk:
        while i < len(keys):
            t0 = time.monotonic()
            removed, n = store.remove_unused(keys[i:i + batch], before=before)
            took = time.monotonic() - t0
            i += batch
            count += len(removed)
            freed += n
            if took < LOCK_SECS / 2:
                batch = min(batch * 2, MAX_BATCH)
            elif took > LOCK_SECS:
                batch = max(batch // 2, BATCH)
            bulk.maybe_checkpoint()
    return count, freed


def _tree_size(path: str) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except OSError:
                pass
    return total


def _age(path: str, now: float) -> float:
    st = os.lstat(path)
    return now - max(st.st_mtime, st.st_ctime)




def clean_tmp(root: str, now: float | None = None) -> tuple[int, int]:
    """Remove temp files left by crashed writers and old stamps. Returns (count, bytes).

    Top-level files of ``tmp/`` and the ``purge-*`` directories ``purge`` leaves when it
    is interrupted, older than ``TEMP_AGE_SECS``; stamps in the stamp directories older
    than ``STAMP_AGE_SECS`` (the directories stay). Other directories are left alone.
    """
    now = time.time() if now is None else now
    tmp = layout.tmp_dir(root)
    count = freed = 0
    try:
        items = list(os.scandir(tmp))
    except FileNotFoundError:
        return 0, 0
    for item in items:
        try:
            if item.name in layout.STAMP_DIRS and item.is_dir(follow_symlinks=False):
                for stamp in os.scandir(item.path):
                    if stamp.is_file(follow_symlinks=False) and _age(stamp.path, now) > STAMP_AGE_SECS:
                        size = stamp.stat(follow_symlinks=False).st_size
                        os.unlink(stamp.path)
                        count, freed = count + 1, freed + size
            elif item.is_dir(follow_symlinks=False):
                if item.name.startswith(layout.PURGE_PREFIX) and _age(item.path, now) > TEMP_AGE_SECS:
                    size = _tree_size(item.path)
                    shutil.rmtree(item.path, ignore_errors=True)
                    count, freed = count + 1, freed + size
            elif item.name in layout.KEPT_FILES:
                continue
            elif _age(item.path, now) > TEMP_AGE_SECS:
                size = item.stat(follow_symlinks=False).st_size
                os.unlink(item.path)
                count, freed = count + 1, freed + size
        except FileNotFoundError:
            continue  # removed by another gc meanwhile
    return count, freed


def clean_moved_aside(root: str, now: float) -> tuple[int, int]:
    """Remove damaged indexes moved aside (``index.db.corrupt-<time>`` and their -wal/-shm)
    once they are ``STAMP_AGE_SECS`` old: kept a week for a post-mortem. (count, bytes)."""
    count = freed = 0
    try:
        items = list(os.scandir(root))
    except FileNotFoundError:
        return 0, 0
    for item in items:
        if not layout.is_moved_aside_index(item.name) or not item.is_file(follow_symlinks=False):
            continue
        try:
            if _age(item.path, now) > STAMP_AGE_SECS:
                size = item.stat(follow_symlinks=False).st_size
                os.unlink(item.path)
                count, freed = count + 1, freed + size
        except FileNotFoundError:
            continue
    return count, freed


def _is_incremental_dir(path: str) -> bool:
    """Only what looks like cargo's incremental state is ever deleted (a guard against a
    bad row): an absolute path with an ``incremental`` component below the top level."""
    if not os.path.isabs(path):
        return False
    parts = [p for p in os.path.normpath(path).split(os.sep) if p]
    return "incremental" in parts[1:]


def clean_incremental_dirs(store: Store, now: float | None = None) -> tuple[int, int]:
    """Delete stale sessions in the incremental directories the wrapper noted.

    Only a session directory (``target/<profile>/incremental/<crate>-<hash>``) left
    untouched for an hour goes: rustc passes through unwrapped calls (your binaries) with
    incremental compilation on, and a build may be using its session right now. Rows of
    paths that no longer exist (or do not look like incremental state) are forgotten.
    Returns (session directories removed, bytes).
    """
    now = time.time() if now is None else now
    count = freed = 0
    forget = []
    for path, _seen in store.memos.incremental_dirs():
        if not _is_incremental_dir(path) or not os.path.isdir(path) or os.path.islink(path):
            forget.append(path)
            continue
        for session in os.scandir(path):
            try:
                # mtime only: rustc creates files in a session it uses, which bumps it.
                if not session.is_dir(follow_symlinks=False) or now - os.lstat(session.path).st_mtime <= TEMP_AGE_SECS:
                    continue
            except FileNotFoundError:
                continue
            size = _tree_size(session.path)
            shutil.rmtree(session.path, ignore_errors=True)
            if not os.path.exists(session.path):
                count, freed = count + 1, freed + size
    if forget:
        store.memos.forget_incremental(forget)
    return count, freed


def checked_gc(store: Store, max_bytes: int, *, max_age: float | None, clean_incremental: bool,
               now: float | None = None) -> GcReport:
    """``kache gc``: :func:`gc`, with the index file checked first when its last check is
    ``INDEX_CHECK_SECS`` old, and whenever one of gc's queries finds it damaged. A
    damaged index is moved aside and a new one started (then gc runs on that), and
    ``store.recovered`` says where it went."""
    from kache.store.connection import StoreError, is_damage

    now = time.time() if now is None else now
    checked = last_index_check(store.root)
    if checked is None or not 0 <= now - checked < INDEX_CHECK_SECS:
        store.recover_if_corrupt()
        checked = now
    try:
        report = gc(store, max_bytes, max_age=max_age, clean_incremental=clean_incremental, now=now,
                    index_checked=checked)
    except (StoreError, sqlite3.DatabaseError) as e:
        if not is_damage(e) or not store.recover_if_corrupt():
            raise
        report = gc(store, max_bytes, max_age=max_age, clean_incremental=clean_incremental, now=now,
                    index_checked=now)
    return report


def last_index_check(root: str) -> float | None:
    """When `kache gc` last found the index sound, from its last report (None: unknown)."""
    import json

    try:
        with open(layout.tmp_path(root, layout.GC_LAST), encoding="utf-8") as f:
            checked = json.load(f).get("index_checked")
    except (OSError, ValueError, AttributeError):
        return None
    return float(checked) if isinstance(checked, (int, float)) and not isinstance(checked, bool) else None


def gc(store: Store, max_bytes: int, *, max_age: float | None, clean_incremental: bool,
       now: float | None = None, index_checked: float | None = None) -> GcReport:
    """Evict, then sweep: see the module docstring. ``max_age`` in seconds (None: no age
    limit); ``now`` is for tests. ``index_checked``: when the caller last found the
    index file sound (else the last report's time is kept)."""
    now = time.time() if now is None else now
    if index_checked is None:
        index_checked = last_index_check(store.root)
    # Repair first: entries whose blobs are missing or damaged go (a stat per blob; a
    # blob whose stamp changed is re-hashed), so eviction plans on what is really there.
    # One read of the referenced blobs serves repair, the physical size and the orphan
    # sweep (each a scan of entry_blobs: ~0.05 s per 100,000 entries).
    sizes = store.integrity.blob_sizes()
    broken, damaged = store.integrity.repair(sizes=sizes)
    store.clamp_future(now)
    before = store.totals()["physical_bytes"] if broken or damaged else sum(sizes.values())
    report = GcReport(max_bytes=max_bytes, target_bytes=int(max_bytes * TARGET_FRACTION), before_bytes=before,
                      broken_removed=broken, damaged_blobs=damaged, index_checked=index_checked)
    by_age, by_size, report.pinned, report.kept_recent, age_cutoff, pin_cutoff = _plan(
        store, max_bytes, max_age, now, before)
    n, freed = _evict(store, by_age, age_cutoff)
    report.evicted["max-age"] = n
    report.evicted_bytes += freed
    n, freed = _evict(store, by_size, pin_cutoff)
    report.evicted["size"] = n
    report.evicted_bytes += freed
    # Unreferenced blobs may be puts whose entry is about to be recorded: only old ones go,
    # and each is re-checked under the write lock. (``sizes`` may still name blobs of
    # entries removed since: those are deleted with their last entry, or left for later.)
    report.orphans_removed, report.orphan_bytes = store.remove_orphans(
        store.integrity.orphan_blobs(used=sizes), older_than=ORPHAN_AGE_SECS, now=now)
    report.temp_removed, report.temp_bytes = clean_tmp(store.root, now)
    n, size = clean_moved_aside(store.root, now)
    report.temp_removed += n
    report.temp_bytes += size
    if clean_incremental:
        report.incremental_removed, report.incremental_bytes = clean_incremental_dirs(store, now)
    report.memo_rows_removed = store.memos.forget_vanished()
    # Orphans, temp files and memo rows are outside the physical size: it moved only if
    # entries went (or a build recorded one meanwhile, which the next gc counts).
    removed = report.entries_evicted or broken or damaged
    report.after_bytes = store.totals()["physical_bytes"] if removed else before
    _remember(store.root, report, now)
    return report


def _remember(root: str, report: GcReport, now: float) -> None:
    """Keep the last report in ``tmp/gc-last.json`` (doctor, the monitor and tests read it)."""
    import json

    try:
        path = layout.tmp_path(root, layout.GC_LAST)
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        tmp = f"{path}.{os.getpid()}"
        with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w", encoding="utf-8") as f:
            json.dump({"finished": now, **report.to_json()}, f)
        os.replace(tmp, path)
    except OSError:
        pass


def purge(store: Store, crate: str | None = None) -> tuple[int, int]:
    """Delete one crate's entries (``-``/``_`` alike; a build script by its package, as
    ``kache list`` names it), or every entry and blob.

    The store stays usable (its directories and index remain). Returns (entries
    deleted, bytes freed).
    """
    if crate is not None:
        from kache.store.entries import entries_named

        _, entries = entries_named(store, crate)
        return _evict(store, [e.key for e in entries], before=None)
    count, aside = store.clear()
    freed = 0
    if aside is not None:
        freed = _tree_size(aside)
        shutil.rmtree(aside, ignore_errors=True)
    return count, freed
