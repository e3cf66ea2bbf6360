"""One table of machine-local prefixes → key sentinels AND ``--remap-path-prefix`` flags.

The same compile in ``/home/a/src/x`` and ``/ci/build/x`` must get the same key, and
the artifact stored under that key must be right in both places. So every absolute
prefix that differs between machines is replaced, in the key, by a sentinel, and in
the artifact, by rustc itself (``--remap-path-prefix FROM=TO``) with a fixed target.
Both come from the one :class:`Normalizer` built per call; if they disagreed, the key
would describe a different binary than the one stored.

==============  =============================  ======================
sentinel        prefix                         remapped in artifacts to
==============  =============================  ======================
``<CWD>``       rustc's working directory      ``.``
``<TARGET>``    cargo's target (or build) dir  ``/kache/target``
``<CARGO>``     ``$CARGO_HOME`` (~/.cargo)     ``/kache/cargo-home``
``<RUSTUP>``    ``$RUSTUP_HOME`` (~/.rustup)   ``/kache/rustup-home``
``<HOME>``      ``$HOME``                      ``/kache/home``
``<TMP>``       the temp dir                   ``/kache/tmp``
==============  =============================  ======================

Matching is path-component aware (``/work`` never matches ``/workspace``) and the
longest prefix wins, in the key as in rustc (which applies the last matching
``--remap-path-prefix``, so flags are emitted shortest prefix first).
"""

from __future__ import annotations

import os
TYPE_CHECKING = False  # typing costs ~11 ms to import; annotations are strings here

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["Normalizer", "find_target_dir"]

# Characters that may stand right before a path inside a larger token
# (``-Ldependency=/x``, ``--extern a=/x``, ``cfg(x="/x")``, JSON ``"/x"``).
_BEFORE = frozenset("=:\"', ;(")
_AFTER = frozenset("/=:\"', ;)")

REMAP_TARGETS = {
    "<CWD>": ".",
    "<TARGET>": "/kache/target",
    "<CARGO>": "/kache/cargo-home",
    "<RUSTUP>": "/kache/rustup-home",
    "<HOME>": "/kache/home",
    "<TMP>": "/kache/tmp",
}

# Files cargo puts at the root of every target (and build) dir.
_TARGET_MARKERS = ("CACHEDIR.TAG", ".rustc_info.json")


def find_target_dir(out_dir: str | None) -> str | None:
    """The cargo target dir that holds ``out_dir``: the nearest ancestor with cargo's markers.

    ``target/debug/deps`` → ``target``; ``target/x86_64-…/release/build/foo-hash`` → ``target``.
    """
    if not out_dir:
        return None
    path = os.path.abspath(out_dir)
    for _ in range(5):
        parent = os.path.dirname(path)
        if parent == path:
            return None
        path = parent
        if any(os.path.exists(os.path.join(path, m)) for m in _TARGET_MARKERS):
            return path
    return None


class Normalizer:
    """Sentinel table for one rustc call."""

    def __init__(self, prefixes: Mapping[str, str | None]) -> None:
        table: list[tuple[str, str]] = []
        seen: set[str] = set()
        self.prefixes: dict[str, str] = {}
        """Sentinel → this machine's prefix, as given (for expanding stored paths)."""
        for sentinel, prefix in prefixes.items():
            if not prefix or not os.path.isabs(prefix):
                continue
            self.prefixes.setdefault(sentinel, os.path.normpath(prefix))
            for spelling in {os.path.normpath(prefix), os.path.realpath(prefix)}:
                if spelling == "/" or not os.path.isabs(spelling) or spelling in seen:
                    continue
                seen.add(spelling)
                table.append((spelling, sentinel))
        # Longest first for matching; ties cannot happen (a spelling is used once).
        self.table = sorted(table, key=lambda t: len(t[0]), reverse=True)

    @classmethod
    def for_call(cls, cwd: str, out_dir: str | None, env: Mapping[str, str]) -> Normalizer:
        home = env.get("HOME") or os.path.expanduser("~")
        return cls({
            "<CWD>": cwd,
            "<TARGET>": find_target_dir(out_dir),
            "<CARGO>": env.get("CARGO_HOME") or os.path.join(home, ".cargo"),
            "<RUSTUP>": env.get("RUSTUP_HOME") or os.path.join(home, ".rustup"),
            "<HOME>": home,
            "<TMP>": env.get("TMPDIR") or "/tmp",
        })

    def path(self, path: str) -> str:
        """An absolute path with its longest known prefix replaced (relative paths as given)."""
        for prefix, sentinel in self.table:
            if path == prefix:
                return sentinel
            if path.startswith(prefix) and path[len(prefix)] == "/":
                return sentinel + path[len(prefix):]
        return path

    def text(self, text: str) -> str:
        """Every known prefix inside free text (an argument, a flag value) replaced."""
        if "/" not in text:
            return text
        for prefix, sentinel in self.table:
            start = 0
            while True:
                i = text.find(prefix, start)
                if i < 0:
                    break
                end = i + len(prefix)
                if (i == 0 or text[i - 1] in _BEFORE) and (end == len(text) or text[end] in _AFTER):
                    text = text[:i] + sentinel + text[end:]
                    start = i + len(sentinel)
                else:
                    start = end
        return text

    def expand(self, path: str) -> str:
        """The inverse of :meth:`path` for this call: sentinel → this machine's prefix."""
        if path.startswith("<"):
            head, _, rest = path.partition(">")
            prefix = self.prefixes.get(head + ">")
            if prefix is not None:
                return prefix + rest
        return path

    def remap_flags(self) -> list[str]:
        """``--remap-path-prefix`` arguments, shortest prefix first so the longest wins."""
        flags = []
        for prefix, sentinel in reversed(self.table):
            flags.append(f"--remap-path-prefix={prefix}={REMAP_TARGETS[sentinel]}")
        return flags
