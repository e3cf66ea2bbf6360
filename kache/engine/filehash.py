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
from kache.store.store import Store

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from kache.paths import Normalizer

__all__ = ["FileHasher", "MIN_AGE_SECS", "ThinArchiveError"]

MIN_AGE_SECS = 2.0
NATIVE_READ_MAX = 256 << 20
"""A native library larger than this is keyed by its bytes, without reading it whole."""


class ThinArchiveError(Exception):
    """A thin archive whose members cannot be listed: the call cannot be keyed."""


THIN_ARCHIVE = "thin-archive"
"""What the memo holds for a thin archive: its digest is made anew on every call."""


class FileHasher:
    """Hashes files for one wrapper call, batching memo reads and writes."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._pending: list[tuple[str, int, int, int, int, int, str]] = []
        self._known: dict[str, str] = {}

    def hashes(self, paths: list[str]) -> dict[str, str | None]:
        """Absolute path → blake3 hex, or None when the file is missing or unreadable."""
        found = self._memoised([p for p in paths if p not in self._known], "", lambda p, st: blobs.hash_file(p)[0])
        self._known.update((p, d) for p, d in found.items() if d is not None)
        return {p: self._known.get(p, found.get(p)) for p in paths}

    def native_hashes(self, paths: list[str], norm: Normalizer) -> dict[str, str | None]:
        """Like :meth:`hashes`, for native libraries: an object or archive that holds a
        path of this machine in its debug strings gets :func:`objdigest.portable_digest`
        (the same on every machine whose copy differs only there); any other file its
        blake3. Memoised under the path and the normaliser's table, since the digest
        depends on both."""
        if not paths:
            return {}
        from blake3 import blake3

        from kache.engine.objdigest import VERSION, portable_digest
        from kache.engine.objfile import THIN_MAGIC

        def digest(path: str, st: os.stat_result) -> str:
            """The file's native digest, or THIN_ARCHIVE for a thin archive (memoised as
            such: whether a file is one follows from its bytes; its digest does not)."""
            with open(path, "rb") as f:
                if st.st_size > NATIVE_READ_MAX:  # not read whole: keyed by its bytes
                    thin = f.read(len(THIN_MAGIC)) == THIN_MAGIC
                    return THIN_ARCHIVE if thin else blobs.hash_file(path)[0]
                data = f.read()
            if data.startswith(THIN_MAGIC):
                return THIN_ARCHIVE
            return portable_digest(data, norm) or blake3(data).hexdigest()

        table = "\n".join(f"{p}\0{s}" for p, s in norm.table)
        tag = f"\0{VERSION}+thin:{blake3(table.encode('utf-8', 'surrogateescape')).hexdigest()[:16]}"
        out = self._memoised(paths, tag, digest)
        # A thin archive's own bytes do not change with its members' code: it is keyed by
        # what it names, read every time (no memo can see a member change through it).
        for p in paths:
            if out.get(p) == THIN_ARCHIVE:
                out[p] = self._thin_digest(p, digest)
        return out

    @staticmethod
    def _thin_digest(path: str, digest: Callable[[str, os.stat_result], str]) -> str:
        """blake3 of a thin archive and of every member file it names (each by its own
        native digest); raises ThinArchiveError when it cannot be read."""
        from blake3 import blake3

        from kache.engine.objfile import thin_members

        try:
            with open(path, "rb") as f:
                data = f.read(NATIVE_READ_MAX)
        except OSError as e:
            raise ThinArchiveError(f"{path}: {e}") from None
        members = thin_members(data)
        if members is None:
            raise ThinArchiveError(f"{path}: not a thin archive kache can read")
        h = blake3(b"thin\0" + blake3(data).digest())
        base = os.path.dirname(path)
        for name in members:
            member = os.path.join(base, name)
            try:
                d = digest(member, os.stat(member))
            except OSError:
                d = "missing"
            if d == THIN_ARCHIVE:  # ar flattens these; one that is not, is not keyed
                raise ThinArchiveError(f"{path}: its member {name} is a thin archive too")
            h.update(f"{name}\0{d}\n".encode("utf-8", "surrogateescape"))
        return f"thin:{h.hexdigest()}"

    def _memoised(self, paths: list[str], tag: str,
                  compute: Callable[[str, os.stat_result], str]) -> dict[str, str | None]:
        """``compute(path, stat)`` of each path, through the memo (rows keyed ``path + tag``)."""
        memo = self.store.file_hash_rows([p + tag for p in paths]) if paths else {}
        now_ns = time.time_ns()
        out: dict[str, str | None] = {}
        for p in paths:
            try:
                st = os.stat(p)
            except OSError:
                out[p] = None
                continue
            stamp = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
            row = memo.get(p + tag)
            if row is not None and row[:5] == stamp:
                out[p] = row[5]
                continue
            try:
                digest = compute(p, st)
            except OSError:
                out[p] = None
                continue
            if now_ns - max(st.st_mtime_ns, st.st_ctime_ns) > MIN_AGE_SECS * 1e9:
                self._pending.append((p + tag, *stamp, digest))
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
