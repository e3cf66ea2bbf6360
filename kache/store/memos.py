"""The index's memo tables: file hashes, tool identities, incremental crate dirs and the
files of their last snapshotted sessions. Each row saves work a later call would repeat;
a row that can no longer match costs only its space (``forget_vanished`` drops those).

``file_hashes``        blake3 memo keyed on (path, dev, inode, size, mtime_ns, ctime_ns).
``tool_memo``          memo of tool identities (``rustc -vV``) keyed on the binary's stat.
``incremental``        incremental dirs seen on wrapped calls, for gc to remove.
``incremental_files``  per incremental crate dir, the (dev, inode, size, mtime_ns) and
                       blob hash of each file of the last session snapshotted from it.

Imported on the wrapper's hot path: stdlib only.
"""

from __future__ import annotations

import os
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable

    from kache.store.connection import Connection

__all__ = ["Memos"]


class Memos:
    """The memo tables of one store's index (``store.memos``)."""

    __slots__ = ("conn",)

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def tool_memo(self, ident: str) -> str | None:
        row = self.conn.db.execute("SELECT value FROM tool_memo WHERE id = ?", (ident,)).fetchone()
        return None if row is None else str(row[0])

    def set_tool_memo(self, ident: str, value: str) -> None:
        self.conn.db.execute("INSERT OR REPLACE INTO tool_memo (id, value) VALUES (?, ?)", (ident, value))

    def file_hash_rows(self, paths: Iterable[str]) -> dict[str, tuple[int, int, int, int, int, str]]:
        out = {}
        paths = list(paths)
        for i in range(0, len(paths), 500):
            chunk = paths[i:i + 500]
            q = f"SELECT * FROM file_hashes WHERE path IN ({','.join('?' * len(chunk))})"
            for r in self.conn.db.execute(q, chunk):
                out[r["path"]] = (r["dev"], r["ino"], r["size"], r["mtime_ns"], r["ctime_ns"], r["hash"])
        return out

    def set_file_hashes(self, rows: list[tuple[str, int, int, int, int, int, str]]) -> None:
        if rows:
            self.conn.db.executemany("INSERT OR REPLACE INTO file_hashes VALUES (?, ?, ?, ?, ?, ?, ?)", rows)

    def incremental_files(self, crate_dir: str) -> dict[tuple[int, int], tuple[int, int, str]]:
        """(dev, inode) -> (size, mtime_ns, hash) of the files last snapshotted from the
        incremental crate dir ``crate_dir``."""
        return {(r[0], r[1]): (r[2], r[3], r[4]) for r in self.conn.db.execute(
            "SELECT dev, ino, size, mtime_ns, hash FROM incremental_files WHERE dir = ?", (crate_dir,))}

    def set_incremental_files(self, crate_dir: str, rows: list[tuple[int, int, int, int, str]]) -> None:
        """Replace the memo of ``crate_dir`` by ``rows`` of (dev, inode, size, mtime_ns, hash)."""
        with self.conn.write() as db:
            db.execute("DELETE FROM incremental_files WHERE dir = ?", (crate_dir,))
            db.executemany("INSERT OR REPLACE INTO incremental_files VALUES (?, ?, ?, ?, ?, ?)",
                           [(crate_dir, *r) for r in rows])

    def note_incremental(self, path: str) -> None:
        self.conn.db.execute("INSERT OR REPLACE INTO incremental (path, last_seen) VALUES (?, ?)",
                             (path, time.time()))

    def incremental_dirs(self) -> list[tuple[str, float]]:
        """Incremental directories noted by the wrapper: (path, last seen), oldest first."""
        return [(r[0], r[1]) for r in self.conn.db.execute(
            "SELECT path, last_seen FROM incremental ORDER BY last_seen")]

    def forget_incremental(self, paths: Iterable[str]) -> None:
        with self.conn.write() as db:
            db.executemany("DELETE FROM incremental WHERE path = ?", [(p,) for p in paths])

    def forget_vanished(self) -> int:
        """Drop memo rows of what no longer exists: file hashes of vanished files (an old
        checkout, a deleted temp dir) and session files of vanished incremental crate dirs
        (a new rustc or new flags give a new ``<crate>-<hash>`` dir). Such a row can never
        match again, so only its space goes. Returns how many rows were dropped."""
        db = self.conn.db
        paths = [r[0] for r in db.execute("SELECT path FROM file_hashes")]
        dirs = [r[0] for r in db.execute("SELECT DISTINCT dir FROM incremental_files")]
        gone_files = [(p,) for p in paths if not os.path.lexists(p)]
        gone_dirs = [(d,) for d in dirs if not os.path.isdir(d)]
        n = 0
        for sql, rows in (("DELETE FROM file_hashes WHERE path = ?", gone_files),
                          ("DELETE FROM incremental_files WHERE dir = ?", gone_dirs)):
            for i in range(0, len(rows), 2000):  # short transactions: builds wait little
                with self.conn.write() as w:
                    n += w.executemany(sql, rows[i:i + 2000]).rowcount
        return n
