"""Proof of portability: does an artifact hold a path of this machine?

kache keys machine-local paths (the workspace, the target dir, HOME, CARGO_HOME,
RUSTUP_HOME, the temp dir) by placeholder, and has rustc remap them in everything it
writes, so that one entry serves every checkout. That is only right when the artifact
really holds no such path. Code can put one there that no remap reaches: an ``env!``
value (directly or through a macro of another crate), a proc macro that reads
``CARGO_MANIFEST_DIR`` or any other variable, a ``[env]`` value of
``.cargo/config.toml``, a generated file. So after every compile each output is read
once (the same read that hashes it) and searched for every spelling of every prefix;
an entry whose outputs hold one is *pinned* to that prefix: its manifest line records
the prefix, and a lookup from any other place misses.

The search is by bytes, without boundaries: ``/home/ann`` inside ``/home/anna`` pins
too (a lost share, never a wrong artifact). One place is not searched: the debug
sections (``.debug_*``) of ELF object code, alone or inside an archive (an rlib, a static
library). rustc's own debug info is remapped; what remains there comes from C or
assembly that a build script compiled (cc-rs gives the compiler absolute paths, which
kache cannot remap), and it changes what a debugger shows, not what the program does.
Pinning it would make every crate with C code, and everything above it, miss on every
machine whose ``CARGO_HOME`` differs.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing costs ~11 ms to import; annotations are strings here

from blake3 import blake3

if TYPE_CHECKING:
    from typing import BinaryIO

    from kache.engine.objfile import Bytes
    from kache.paths import Normalizer

__all__ = ["Scanner"]

_CHUNK = 1 << 20


class Scanner:
    """Hashes outputs and collects the sentinels whose prefixes they hold."""

    def __init__(self, norm: Normalizer) -> None:
        raw = {(p.encode("utf-8", "surrogateescape"), s) for p, s in norm.table}
        # A path may be baked percent-encoded (a file:// URL a proc macro makes of it).
        encoded = {(_percent_encoded(p), s) for p, s in raw}
        spellings = sorted(raw | encoded, key=lambda t: len(t[0]), reverse=True)
        self._table = spellings  # longest first
        # Search only for spellings that no shorter one already finds (a prefix of it).
        needles: list[bytes] = []
        for p, _ in sorted(spellings, key=lambda t: len(t[0])):
            if not any(p.startswith(n) for n in needles):
                needles.append(p)
        self._needles = needles
        # Every spelling is absolute (``/`` and more): the needles by the two bytes after
        # their slash, for the search from slash to slash (None: search needle by needle).
        heads: dict[bytes, list[bytes]] | None = {}
        for needle in needles:
            if heads is None or len(needle) < 3 or needle[:1] != b"/":
                heads = None
            else:
                heads.setdefault(needle[1:3], []).append(needle)
        self._heads = heads
        self._overlap = max((len(p) for p, _ in spellings), default=1) - 1
        self.found: set[str] = set()
        """Sentinels whose prefix some scanned output holds."""

    def hash_file(self, path: str) -> tuple[str, int]:
        """(blake3 hex, size) of a file, searching it on the way."""
        h = blake3()
        size = 0
        tail = b""
        hits: list[tuple[int, str]] = []
        with open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                h.update(chunk)
                window = tail + chunk if tail else chunk
                base = size - len(tail)
                size += len(chunk)
                hits.extend((base + i, sentinel) for i, sentinel in self._occurrences(window))
                tail = window[-self._overlap:] if self._overlap else b""
            if hits:
                debug = _debug_ranges(f)
                self.found.update(s for at, s in hits if not any(lo <= at < hi for lo, hi in debug))
        return h.hexdigest(), size

    def search(self, data: bytes) -> None:
        """Search bytes that are kept whole (rustc's messages)."""
        self.found.update(s for _, s in self._occurrences(data))

    def _occurrences(self, data: bytes) -> list[tuple[int, str]]:
        """(offset, sentinel) of every place in ``data`` where a needle starts.

        Outputs hold few slashes (~1,000–3,000 per MiB of rlib or executable), and
        ``bytes.find`` of one byte is a ``memchr``: going from slash to slash and looking
        at the two bytes after each costs ~0.25 ms per MiB, where one search per needle
        costs ~1.5 ms (``find`` of a short needle such as ``/tmp`` skips at most a few
        bytes at a time). Data dense with slashes (a .d file, a list of paths) is
        searched needle by needle after the first 1 in 256 bytes' worth of slashes.
        """
        heads = self._heads
        if heads is None:
            return self._each_needle(data, 0)
        out: list[tuple[int, str]] = []
        find = data.find
        budget = len(data) >> 8
        i = find(b"/")
        while i >= 0:
            group = heads.get(data[i + 1:i + 3])
            if group is not None:
                for needle in group:
                    if data.startswith(needle, i):
                        out.append((i, self._sentinel_at(data, i)))
                        break  # no needle is a prefix of another: one starts here at most
            budget -= 1
            if budget < 0:
                return out + self._each_needle(data, i + 1)
            i = find(b"/", i + 1)
        return out

    def _each_needle(self, data: bytes, start: int) -> list[tuple[int, str]]:
        """(offset, sentinel) of every needle found at or after ``start``, needle by needle."""
        out = []
        for needle in self._needles:
            i = data.find(needle, start)
            while i >= 0:
                out.append((i, self._sentinel_at(data, i)))
                i = data.find(needle, i + 1)
        return out

    def _sentinel_at(self, data: bytes, i: int) -> str:
        """The sentinel of the longest spelling at ``i`` (where a needle, itself a
        spelling, starts)."""
        for spelling, sentinel in self._table:
            if data.startswith(spelling, i):
                return sentinel
        raise AssertionError("a needle is a spelling")


_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~/")


def _percent_encoded(path: bytes) -> bytes:
    """``path`` as a URL holds it (RFC 3986: every byte but the unreserved ones and ``/``
    as ``%XX``)."""
    return b"".join(bytes([b]) if b in _UNRESERVED else b"%%%02X" % b for b in path)


# --------------------------------------------------------------------------- object files
#
# Only read when a search found something (rare): the ar archive's member headers, and in
# each ELF member (or an ELF file) the section headers, to know where .debug_* sections lie.

def _debug_ranges(f: BinaryIO) -> list[tuple[int, int]]:
    """File offsets [start, end) of the debug sections of the ELF objects in an open file
    (an ELF file, or an ar archive of them); empty for anything else or when the archive
    cannot be read; an ELF member that cannot be read adds none."""
    from kache.engine import objfile

    try:
        data = objfile.FileView(f)
        head = data[0:8]
        if head.startswith(objfile.ELF_MAGIC):
            return _elf_debug_ranges(data, 0, len(data))
        if head != objfile.AR_MAGIC:
            return []
        out: list[tuple[int, int]] = []
        for member in objfile.members(data):
            if data[member.start:member.start + 4] == objfile.ELF_MAGIC:
                out.extend(_elf_debug_ranges(data, member.start, member.start + member.size))
        return out
    except (OSError, ValueError):  # objfile.Malformed is a ValueError
        return []


def _elf_debug_ranges(data: Bytes, base: int, end: int) -> list[tuple[int, int]]:
    """The debug sections of the ELF file at ``base`` in ``data``; none if it cannot be read."""
    from kache.engine import objfile

    try:
        sections = objfile.section_headers(data, objfile.elf_header(data, base, end), base, end)
    except objfile.Malformed:
        return []
    return [(base + s.offset, base + s.offset + s.size) for s in sections
            if s.type != objfile.SHT_NOBITS and (s.name.startswith(b".debug") or s.name.startswith(b".zdebug"))]
