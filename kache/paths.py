"""One table of machine-local prefixes → key sentinels AND ``--remap-path-prefix`` flags.

The same compile in ``/home/a/src/x`` and ``/ci/build/x`` must get the same key, and
the artifact stored under that key must be right in both places. So every absolute
prefix that differs between machines is replaced, in the key, by a sentinel, and in
the artifact, by rustc itself (``--remap-path-prefix FROM=TO``) with a fixed target.
Both come from the one :class:`Normalizer` built per call; if they disagreed, the key
would describe a different binary than the one stored.

==============  =============================  ====================================
sentinel        prefix                         remapped in artifacts to
==============  =============================  ====================================
``<CWD>``       rustc's working directory      ``.`` for a workspace member (cargo
                                               runs rustc in the workspace root),
                                               ``<name>-<version>`` for any other
                                               package (cargo runs rustc in its root)
``<TARGET>``    cargo's target (or build) dir  ``/cargo/build-dir``
``<CARGO>``     ``$CARGO_HOME`` (~/.cargo)     ``/kache/cargo-home``
``<RUSTUP>``    ``$RUSTUP_HOME`` (~/.rustup)   ``/kache/rustup-home``
``<HOME>``      ``$HOME``                      ``/kache/home``
``<TMP>``       the temp dir                   ``/kache/tmp``
==============  =============================  ====================================

The ``<CWD>`` and ``<TARGET>`` targets follow cargo's trim-paths conventions (RFC 3127):
panics and debug info name a member's files relative to the workspace root and another
package's files as ``<name>-<version>/src/…``. The remap covers every scope (rustc's
default), so no path of this machine is left in an artifact unless the code itself put
it there (an ``env!`` value, a proc macro), which :mod:`kache.engine.portable` looks
for after each compile. Diagnostics are turned back into this machine's paths
(:meth:`Normalizer.diagnostics`) before anyone reads them.

Matching is path-component aware (``/work`` never matches ``/workspace``) and the
longest prefix wins, in the key as in rustc (which applies the last matching
``--remap-path-prefix``, so flags are emitted shortest prefix first, and before the
user's own, which therefore win).
"""

from __future__ import annotations

import os

TYPE_CHECKING = False  # typing costs ~11 ms to import; annotations are strings here

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

__all__ = ["Normalizer", "REMAP_TARGETS", "find_target_dir", "resolve", "which"]

# Characters that may stand right before a path inside a larger token
# (``-Ldependency=/x``, ``--extern a=/x``, ``cfg(x="/x")``, JSON ``"/x"``).
_BEFORE = frozenset("=:\"', ;(")
_AFTER = frozenset("/=:\"', ;)")

REMAP_TARGETS = {
    "<CWD>": ".",
    "<TARGET>": "/cargo/build-dir",
    "<CARGO>": "/kache/cargo-home",
    "<RUSTUP>": "/kache/rustup-home",
    "<HOME>": "/kache/home",
    "<TMP>": "/kache/tmp",
}

# Files cargo puts at the root of every target (and build) dir.
_TARGET_MARKERS = ("CACHEDIR.TAG", ".rustc_info.json")

# What stands before a file name in rustc's diagnostics: a span's ``file_name`` in JSON,
# the ``-->`` and ``:::`` lines of the rendered text (each maybe followed by colour codes,
# raw or JSON-escaped).
_DIAGNOSTIC_MARKS = ('"file_name":"', "--> ", "::: ")


def find_target_dir(out_dir: str | None) -> str | None:
    """The cargo target dir that holds ``out_dir``: the nearest ancestor with cargo's markers.

    ``target/debug/deps`` → ``target``; ``target/x86_64-…/release/build/foo-hash`` → ``target``.
    """
    found = _find_target(out_dir)
    return found[0] if found else None


def _find_target(out_dir: str | None) -> tuple[str, int] | None:
    """(target dir, how many levels above ``out_dir``), or None."""
    if not out_dir:
        return None
    path = os.path.abspath(out_dir)
    for depth in range(1, 6):
        parent = os.path.dirname(path)
        if parent == path:
            return None
        path = parent
        if any(os.path.exists(os.path.join(path, m)) for m in _TARGET_MARKERS):
            return path, depth
    return None


def which(program: str, search_path: str, cwd: str = "") -> str | None:
    """The executable a bare program name runs, found as ``execvp`` finds it on
    ``search_path`` (a ``PATH`` value; relative entries relative to ``cwd``), or None."""
    for d in search_path.split(os.pathsep):
        candidate = os.path.join(cwd, d or ".", program)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


def resolve(path: str) -> str:
    """``path`` (absolute) with ``.``, ``..`` and repeated slashes taken out the way the
    kernel takes them: a ``..`` leaves the directory the path reached, after symlinks, so
    everything up to the last ``..`` goes through ``realpath``. Without ``..`` this is
    ``normpath`` (no system call)."""
    parts = path.split("/")
    if ".." not in parts:
        return os.path.normpath(path)
    last = len(parts) - 1 - parts[::-1].index("..")
    head = os.path.realpath("/".join(parts[: last + 1]) or "/")
    rest = "/".join(parts[last + 1:])
    return os.path.normpath(os.path.join(head, rest)) if rest else head


class Normalizer:
    """Sentinel table for one rustc call.

    ``prefixes`` maps each sentinel to this machine's prefix; ``spellings`` adds other
    spellings of the same prefix (the target dir as cargo wrote it, with ``..``);
    ``targets`` overrides where a sentinel is remapped to in artifacts.
    """

    def __init__(self, prefixes: Mapping[str, str | None], targets: Mapping[str, str] | None = None,
                 spellings: Mapping[str, Iterable[str]] | None = None) -> None:
        table: list[tuple[str, str]] = []
        seen: set[str] = set()
        self.prefixes: dict[str, str] = {}
        """Sentinel → this machine's prefix, as given (for expanding stored paths)."""
        self.targets: dict[str, str] = {}
        """Sentinel → what rustc writes in its place (the remap target)."""
        for sentinel, prefix in prefixes.items():
            if not prefix or not os.path.isabs(prefix):
                continue
            self.prefixes.setdefault(sentinel, os.path.normpath(prefix))
            self.targets[sentinel] = (targets or {}).get(sentinel, REMAP_TARGETS[sentinel])
            extra = (spellings or {}).get(sentinel, ())
            for spelling in {os.path.normpath(prefix), os.path.realpath(prefix), *extra}:
                if spelling == "/" or not os.path.isabs(spelling) or spelling in seen:
                    continue
                seen.add(spelling)
                table.append((spelling, sentinel))
        # Longest first for matching; ties cannot happen (a spelling is used once).
        self.table = sorted(table, key=lambda t: len(t[0]), reverse=True)

    @classmethod
    def for_call(cls, cwd: str, out_dir: str | None, env: Mapping[str, str], src: str | None = None) -> Normalizer:
        """The table of one rustc call run in ``cwd`` writing to ``out_dir`` (as cargo
        gave it, joined to ``cwd``). ``src`` is the crate root as given: absolute means
        cargo ran rustc in the package's own root (a crate that is not a workspace
        member), which is remapped to ``<name>-<version>``."""
        home = env.get("HOME") or os.path.expanduser("~")
        found = _find_target(resolve(out_dir)) if out_dir and os.path.isabs(out_dir) else _find_target(out_dir)
        spellings: dict[str, list[str]] = {}
        if found and out_dir:
            raw = out_dir
            for _ in range(found[1]):
                raw = os.path.dirname(raw)
            if raw != found[0] and os.path.isabs(raw):
                spellings["<TARGET>"] = [raw]  # e.g. /ws/../target: rustc sees paths spelled so
        targets: dict[str, str] = {}
        if src is not None and os.path.isabs(src):
            name, version = env.get("CARGO_PKG_NAME", ""), env.get("CARGO_PKG_VERSION", "")
            label = f"{name}-{version}"
            if name and version and "=" not in label and "/" not in label and label.isprintable():
                targets["<CWD>"] = label
        return cls({
            "<CWD>": cwd,
            "<TARGET>": found[0] if found else None,
            "<CARGO>": env.get("CARGO_HOME") or os.path.join(home, ".cargo"),
            "<RUSTUP>": env.get("RUSTUP_HOME") or os.path.join(home, ".rustup"),
            "<HOME>": home,
            "<TMP>": env.get("TMPDIR") or "/tmp",
        }, targets, spellings)

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

    def spellings(self, sentinel: str) -> list[str]:
        """Every spelling of a sentinel's prefix in the table, sorted."""
        return sorted(p for p, s in self.table if s == sentinel)

    def remap_flags(self) -> list[str]:
        """``--remap-path-prefix`` arguments, shortest prefix first so the longest wins."""
        return [f"--remap-path-prefix={prefix}={self.targets[sentinel]}" for prefix, sentinel in reversed(self.table)]

    def remap_text(self) -> str:
        """Where each sentinel goes in artifacts, for the key (the prefixes themselves are
        machine-local; the targets are what the artifact holds)."""
        return ";".join(f"{s}={t}" for s, t in sorted(self.targets.items()))

    def diagnostics(self, text: str) -> str:
        """rustc's messages with the remapped file names turned back into this machine's
        paths, as rustc prints them without a remap: the file names of spans and of the
        rendered ``-->`` / ``:::`` lines, where rustc put a remap target.

        Stored messages keep the targets (they are the same on every machine) and go
        through this on every replay. Text in JSON lines (those starting with ``{``) gets
        the path JSON-escaped.
        """
        if not text:
            return text
        pairs = [(t, self.prefixes[s]) for s, t in self.targets.items() if s in self.prefixes]
        if not any(t + "/" in text for t, _ in pairs):
            return text
        if "\n" in text[:-1]:
            return "".join(self.diagnostics(line) for line in text.splitlines(keepends=True))
        from kache import quickjson

        is_json = text.startswith("{")
        for target, real in pairs:
            needle = target + "/"
            shown = quickjson.quote(real)[1:-1] if is_json else real
            out: list[str] = []
            start = 0
            while True:
                i = text.find(needle, start)
                if i < 0:
                    break
                if _after_mark(text, i) and (i + len(needle) >= len(text) or text[i + len(needle)] != "/"):
                    out.append(text[start:i])
                    out.append(shown + "/")
                else:
                    out.append(text[start:i + len(needle)])
                start = i + len(needle)
            out.append(text[start:])
            text = "".join(out)
        return text


def _after_mark(text: str, i: int) -> bool:
    """Whether the file name at ``text[i:]`` follows a diagnostic mark (colour codes between
    the mark and the name skipped)."""
    j = i
    while j > 0 and text[j - 1] == "m":
        # a colour code ends here: ESC[…m raw, or \u001b[…m in JSON
        k = text.rfind("[", 0, j)
        if k < 0 or not all(ch.isdigit() or ch == ";" for ch in text[k + 1: j - 1]):
            break
        if text.endswith("\x1b", 0, k):
            j = k - 1
        elif text.endswith("\\u001b", 0, k):
            j = k - 6
        else:
            break
    return any(text.endswith(mark, 0, j) for mark in _DIAGNOSTIC_MARKS)
