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
too (a lost share, never a wrong artifact).
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing costs ~11 ms to import; annotations are strings here

from blake3 import blake3

if TYPE_CHECKING:
    from kache.paths import Normalizer

__all__ = ["Scanner"]

_CHUNK = 1 << 20


class Scanner:
    """Hashes outputs and collects the sentinels whose prefixes they hold."""

    def __init__(self, norm: Normalizer) -> None:
        spellings = sorted({(p.encode("utf-8", "surrogateescape"), s) for p, s in norm.table},
                           key=lambda t: len(t[0]), reverse=True)
        self._table = spellings  # longest first
        # Search only for spellings that no shorter one already finds (a prefix of it).
        needles = []
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
        with open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                h.update(chunk)
                size += len(chunk)
                window = tail + chunk if tail else chunk
                self.search(window)
                tail = window[-self._overlap:] if self._overlap else b""
        return h.hexdigest(), size

    def search(self, data: bytes) -> None:
        for needle in self._needles:
            if needle not in data:
                continue
            i = data.find(needle)
            while i >= 0:
                for spelling, sentinel in self._table:
                    if data.startswith(spelling, i):
                        self.found.add(sentinel)
                        break
                i = data.find(needle, i + 1)
