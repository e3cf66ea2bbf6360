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

import os
TYPE_CHECKING = False  # typing costs ~11 ms to import; annotations are strings here

from blake3 import blake3

if TYPE_CHECKING:
    from typing import BinaryIO

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
        out = []
        for needle in self._needles:
            if needle not in data:
                continue
            i = data.find(needle)
            while i >= 0:
                for spelling, sentinel in self._table:
                    if data.startswith(spelling, i):
                        out.append((i, sentinel))
                        break
                i = data.find(needle, i + 1)
        return out


_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~/")


def _percent_encoded(path: bytes) -> bytes:
    """``path`` as a URL holds it (RFC 3986: every byte but the unreserved ones and ``/``
    as ``%XX``)."""
    return b"".join(bytes([b]) if b in _UNRESERVED else b"%%%02X" % b for b in path)


# --------------------------------------------------------------------------- object files
#
# Only read when a search found something (rare): the ar archive's member headers, and in
# each ELF member (or an ELF file) the section headers, to know where .debug_* sections lie.

_AR_MAGIC = b"!<arch>\n"
_ELF_MAGIC = b"\x7fELF"


def _debug_ranges(f: BinaryIO) -> list[tuple[int, int]]:
    """File offsets [start, end) of the debug sections of the ELF objects in an open file
    (an ELF file, or an ar archive of them); empty for anything else or on any doubt."""
    try:
        f.seek(0)
        head = f.read(8)
        if head.startswith(_ELF_MAGIC):
            return _elf_debug_ranges(f, 0)
        if head != _AR_MAGIC:
            return []
        out: list[tuple[int, int]] = []
        end = f.seek(0, os.SEEK_END)
        pos = 8
        while pos + 60 <= end:
            f.seek(pos)
            header = f.read(60)
            if header[58:60] != b"`\n":
                return out
            size = int(header[48:58].decode("ascii").strip() or "0")
            data = pos + 60
            name = header[:16].decode("ascii", "replace")
            if name.startswith("#1/"):  # BSD: the name leads the data
                data += int(name[3:].strip() or "0")
            f.seek(data)
            if f.read(4) == _ELF_MAGIC:
                out.extend(_elf_debug_ranges(f, data))
            pos = pos + 60 + size + (size & 1)
        return out
    except (OSError, ValueError, UnicodeDecodeError):
        return []


def _elf_debug_ranges(f: BinaryIO, base: int) -> list[tuple[int, int]]:
    import struct

    f.seek(base)
    ident = f.read(64)
    if len(ident) < 52 or not ident.startswith(_ELF_MAGIC) or ident[4] not in (1, 2) or ident[5] not in (1, 2):
        return []
    wide = ident[4] == 2
    order = "<" if ident[5] == 1 else ">"
    if wide:
        shoff, = struct.unpack_from(order + "Q", ident, 0x28)
        shentsize, shnum, shstrndx = struct.unpack_from(order + "HHH", ident, 0x3A)
        entry = order + "IIQQQQ"
    else:
        shoff, = struct.unpack_from(order + "I", ident, 0x20)
        shentsize, shnum, shstrndx = struct.unpack_from(order + "HHH", ident, 0x2E)
        entry = order + "IIIIII"
    if not shoff or shentsize < struct.calcsize(entry):
        return []

    def section(i: int) -> tuple[int, ...]:
        f.seek(base + shoff + i * shentsize)
        return struct.unpack(entry, f.read(struct.calcsize(entry)))

    if shnum == 0:  # extended numbering: the count is in section 0
        shnum = section(0)[5]
    if shnum > 1 << 20:
        return []
    sections = [section(i) for i in range(shnum)]
    if shstrndx == 0xFFFF:
        f.seek(base + shoff + 24 + (16 if wide else 0))  # sh_link of section 0
        shstrndx, = struct.unpack(order + "I", f.read(4))
    if not 0 <= shstrndx < shnum:
        return []
    names = sections[shstrndx]
    f.seek(base + names[4])
    strtab = f.read(min(names[5], 1 << 24))
    out = []
    for name_off, sh_type, _flags, _addr, offset, size in sections:
        name = strtab[name_off:strtab.find(b"\0", name_off)]
        if sh_type != 8 and (name.startswith(b".debug") or name.startswith(b".zdebug")):  # 8: NOBITS
            out.append((base + offset, base + offset + size))
    return out
