"""blake3 of input files, memoised on (device, inode, size, mtime_ns, ctime_ns).

A direct-mode lookup re-checks every file a compile read; with the memo that is a
``stat`` per file instead of a read. The race ccache describes (``inodecache.hpp``):

1. a file is written at time T and hashed (memo: mtime T, hash H1);
2. within the filesystem's timestamp granularity it is written again (mtime still T);
3. the memo would return H1 for the new content.

Defence: no memo is recorded for a file whose mtime or ctime is less than
``MIN_AGE_SECS`` old; such files are hashed every time.
"""

from __future__ import annotations

import os
import time

from kache.store import blobs
from kache.store.index import Store

__all__ = ["FileHasher", "MIN_AGE_SECS"]

MIN_AGE_SECS = 2.0


class FileHasher:
    """Hashes files for one wrapper call, batching memo reads and writes."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._pending: list[tuple[str, int, int, int, int, int, str]] = []
        self._known: dict[str, str] = {}

    def hashes(self, paths: list[str]) -> dict[str, str | None]:
        """Absolute path → blake3 hex, or None when the file is missing or unreadable."""
        out: dict[str, str | None] = {}
        todo = [p for p in paths if p not in self._known]
        memo = self.store.file_hash_rows(todo) if todo else {}
        now_ns = time.time_ns()
        for p in paths:
            if p in self._known:
                out[p] = self._known[p]
                continue
            try:
                st = os.stat(p)
            except OSError:
                out[p] = None
                continue
            stamp = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
            row = memo.get(p)
            if row is not None and row[:5] == stamp:
                digest = row[5]
            else:
                try:
                    digest, _ = blobs.hash_file(p)
                except OSError:
                    out[p] = None
                    continue
                if now_ns - max(st.st_mtime_ns, st.st_ctime_ns) > MIN_AGE_SECS * 1e9:
                    self._pending.append((p, *stamp, digest))
            self._known[p] = digest
            out[p] = digest
        return out

    def remember(self, path: str, digest: str) -> None:
        """Record a hash kache already knows (a file it just restored or stored)."""
        try:
            st = os.stat(path)
        except OSError:
            return
        self._known[path] = digest
        self._pending.append((path, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, digest))

    def flush(self) -> None:
        if self._pending:
            self.store.set_file_hashes(self._pending)
            self._pending = []
