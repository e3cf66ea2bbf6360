"""Blob integrity: stamps, verification, repair, and dropping damaged blobs.

``blob_stamps`` keeps, per blob, the (inode, size, mtime_ns) it had when kache last wrote,
verified or restored it. A blob whose stat still matches is taken as intact (one
``stat``); any other is re-hashed before it is used, and a blob that no longer matches
its name is removed with its entries. A write, a truncation or a replacement changes the
stamp; ``cargo clean`` (a link count) does not.

Imported on the wrapper's hot path: stdlib only.
"""

from __future__ import annotations

import os
import time

from kache.store import blobs, layout
from kache.store.connection import StoreError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Container, Iterable
    from typing import Any

    from kache.store.connection import Connection

__all__ = ["Integrity", "DamagedBlob", "stamp_of"]


class DamagedBlob(StoreError):
    """A blob an entry needs is missing, truncated or no longer matches its hash."""

    def __init__(self, digest: str, problem: str) -> None:
        super().__init__(f"blob {digest[:16]}: {problem}")
        self.digest = digest
        self.problem = problem


def stamp_of(st: os.stat_result) -> tuple[int, int, int]:
    return (st.st_ino, st.st_size, st.st_mtime_ns)


class Integrity:
    """The blobs of one store checked against their names (``store.integrity``).

    ``verified``: blobs this process wrote or checked; their stamps are (re)recorded on
    the next write. ``remove_entries(keys)`` removes entries and the blobs only they use
    (the store's, given here so that dropping a damaged blob drops its entries).
    """

    __slots__ = ("conn", "root", "verified", "remove_entries")

    def __init__(self, conn: Connection, remove_entries: Callable[[list[str]], object]) -> None:
        self.conn = conn
        self.root = conn.root
        self.verified: set[str] = set()
        self.remove_entries = remove_entries

    def have_intact(self, digest: str, size: int) -> bool:
        """Whether the blob exists and is intact; a damaged one is deleted (its entries
        notice at their next use)."""
        path = layout.blob_path(self.root, digest)
        if not os.path.exists(path):
            return False
        if self.blob_problem(digest, size) is None:
            return True
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        return False

    def blob_stamps(self, digests: Iterable[str]) -> dict[str, tuple[int, int, int]]:
        digests = list(digests)
        out: dict[str, tuple[int, int, int]] = {}
        for i in range(0, len(digests), 500):
            chunk = digests[i:i + 500]
            q = f"SELECT hash, ino, size, mtime_ns FROM blob_stamps WHERE hash IN ({','.join('?' * len(chunk))})"
            for r in self.conn.db.execute(q, chunk):
                out[r[0]] = (r[1], r[2], r[3])
        return out

    def blob_problem(self, digest: str, size: int, stamp: tuple[int, int, int] | None = None, *,
                     stamp_known: bool = False, rehash: bool = False) -> str | None:
        """None when the blob is intact, else what is wrong with it ("missing", "size …",
        "content does not match its hash").

        Cheap: a blob whose stat matches its recorded stamp is taken as intact; any other
        is re-hashed (``rehash`` always re-hashes). ``stamp_known`` says the caller looked
        the stamp up already (``stamp`` None then means there is none).
        """
        path = layout.blob_path(self.root, digest)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return "missing"
        if st.st_size != size:
            return f"size {st.st_size}, expected {size}"
        if not stamp_known:
            stamp = self.blob_stamps([digest]).get(digest)
        if rehash or stamp != stamp_of(st):
            try:
                actual = blobs.hash_file(path)[0]
            except OSError as e:
                return f"unreadable ({e.strerror})"
            if actual != digest:
                return "content does not match its hash"
            self.verified.add(digest)  # re-hashed: its new stamp is recorded on the next write
        return None

    def files_problem(self, files: list[dict[str, Any]]) -> tuple[str, str] | None:
        """The first of an entry's ``files`` (``hash``, ``size``) whose blob is missing or
        damaged, as (hash, problem); None when all are intact. One stamp query, then a
        ``stat`` each (re-hashed when the stamp moved): see :meth:`blob_problem`."""
        stamps = self.blob_stamps(f["hash"] for f in files)
        for f in files:
            problem = self.blob_problem(f["hash"], f["size"], stamps.get(f["hash"]), stamp_known=True)
            if problem is not None:
                return f["hash"], problem
        return None

    def note_verified(self, digest: str) -> None:
        """A blob this process just wrote or hashed (e.g. imported from an archive)."""
        self.verified.add(digest)

    def stamp_blobs(self, digests: Iterable[str] | None = None) -> None:
        """Record the current stamps of the given blobs, or of those this process wrote
        or re-hashed (inside a write transaction; after any ``utime`` of a hardlinked
        output, which moves its blob's mtime)."""
        rows = []
        for digest in self.verified if digests is None else digests:
            try:
                st = os.stat(layout.blob_path(self.root, digest))
            except OSError:
                continue
            rows.append((digest, *stamp_of(st)))
        if rows:
            self.conn.db.executemany("INSERT OR REPLACE INTO blob_stamps VALUES (?, ?, ?, ?)", rows)

    def drop_damaged(self, digest: str) -> list[str]:
        """Remove a damaged blob and every entry that uses it; returns the keys removed."""
        with self.conn.write() as db:
            keys = [r[0] for r in db.execute("SELECT key FROM entry_blobs WHERE hash = ?", (digest,))]
            db.execute("DELETE FROM blob_stamps WHERE hash = ?", (digest,))
            try:
                os.unlink(layout.blob_path(self.root, digest))
            except FileNotFoundError:
                pass
        self.verified.discard(digest)
        if keys:
            self.remove_entries(keys)
        return keys

    def blob_sizes(self) -> dict[str, int]:
        """Every blob an entry references, with its size: the physical total is their sum."""
        return {r[0]: r[1] for r in self.conn.db.execute("SELECT hash, MAX(size) FROM entry_blobs GROUP BY hash")}

    def damaged_blobs(self, *, rehash: bool = False, sizes: dict[str, int] | None = None) -> dict[str, str]:
        """Every referenced blob that is missing, has the wrong size, or (when its stamp
        changed, or with ``rehash`` always) no longer matches its hash: hash → problem.
        ``sizes``: :meth:`blob_sizes`, when the caller has read it already."""
        if sizes is None:
            sizes = self.blob_sizes()
        stamps = self.blob_stamps(sizes)
        out = {}
        for digest, size in sizes.items():
            problem = self.blob_problem(digest, size, stamps.get(digest), stamp_known=True, rehash=rehash)
            if problem:
                out[digest] = problem
        return out

    def repair(self, *, rehash: bool = False, sizes: dict[str, int] | None = None) -> tuple[int, int]:
        """Remove damaged blobs and the entries that use them; stamp the blobs found
        intact (so the next check is a ``stat`` each). ``rehash`` re-hashes every blob,
        not only those whose stamp changed; ``sizes`` as for :meth:`damaged_blobs`.
        Returns (entries, blobs) removed."""
        damaged = self.damaged_blobs(rehash=rehash, sizes=sizes)
        entries = 0
        for digest in damaged:
            entries += len(self.drop_damaged(digest))
        with self.conn.write():
            self.stamp_blobs()
        return entries, len(damaged)

    def check(self, *, verify_hashes: bool = False) -> list[str]:
        """Problems found: SQLite integrity; entries whose blobs are missing, have the wrong
        size, or no longer match their hash (re-hashed when their stamp changed; with
        ``verify_hashes``, every blob is re-hashed); orphan blobs. Read-only.
        """
        problems: list[str] = []
        db = self.conn.db
        result = db.execute("PRAGMA integrity_check").fetchone()[0]
        if result != "ok":
            problems.append(f"{layout.INDEX}: {result}")
        damaged = self.damaged_blobs(rehash=verify_hashes)
        if damaged:
            for key, digest in db.execute("SELECT key, hash FROM entry_blobs"):
                if digest in damaged:
                    problems.append(f"entry {key[:16]}: blob {digest[:16]}: {damaged[digest]}")
        orphans = self.orphan_blobs()
        if orphans:
            problems.append(f"{len(orphans)} orphan blob(s) no entry uses")
        return problems

    def orphan_blobs(self, older_than: float = 0.0, *, used: Container[str] | None = None) -> list[str]:
        """Blob files that no entry references (older than ``older_than`` seconds).
        ``used``: the referenced blobs, when the caller has read them already (a set read
        earlier misses blobs recorded since: ``Store.remove_orphans`` re-checks each under
        the write lock)."""
        if used is None:
            used = {r[0] for r in self.conn.db.execute("SELECT DISTINCT hash FROM entry_blobs")}
        out: list[str] = []
        now = time.time()
        store = layout.blobs_dir(self.root)
        if not os.path.isdir(store):
            return out
        for shard in os.scandir(store):
            if not shard.is_dir():
                continue
            for f in os.scandir(shard.path):
                if f.name not in used and (older_than <= 0 or now - f.stat().st_mtime > older_than):
                    out.append(f.path)
        return out
