"""The cache key recipe, in two stages (ccache's "direct mode").

Stage 1, the *cheap key* (``mkey``), is computed before compiling, from what the
command line and environment say: the compiler chain (every program by content, and
``-vV``), arguments with paths normalised (``-C incremental`` and
``--diagnostic-width`` left out: they change no output), every ``--extern`` and native
library by content, the environment variables of :mod:`kache.engine.envpolicy`, where
rustc's remap puts this machine's paths, declared extra inputs, the salt.

Stage 2, the *full key*, adds what only a compile reveals: every file rustc read and
every ``env!``/``option_env!`` value, as listed in the dep-info (``.d``) that cargo
always asks for, and the machine-local prefixes the outputs turned out to hold
(:mod:`kache.engine.portable`). A miss records, under the cheap key, that list of
(path, blake3), env values and prefixes; a later lookup re-hashes those files
(stat-memoised), compares the values and prefixes and, when all match, has the full key
without running rustc. A file that did not exist at compile time is not in the list:
its later appearance is not noticed (the known limit of direct mode;
``KACHE_RECACHE=1`` forces a recompile).

Byte stream: every field is ``label`` and ``value``, each prefixed by its length as
8 bytes little-endian, so no concatenation of fields can collide with another.
Each field also gets its own digest in ``components`` (for ``kache why-miss``).

``KEY_VERSION`` is hashed first and stored with every entry.
History: 1 — first recipe. 2 — the whole compiler chain by content; native libraries of
build-script directories; the environment policy table; remap targets after cargo's
trim-paths; ``--diagnostic-width`` left out; env values proven to only locate files;
outputs searched for this machine's paths.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing costs ~11 ms to import; annotations are strings here

from blake3 import blake3

if TYPE_CHECKING:
    from collections.abc import Iterable
    from typing import Any

__all__ = ["KEY_VERSION", "KeyBuilder", "full_key", "env_only_locates_files"]

KEY_VERSION = 2


def _len(b: bytes) -> bytes:
    return len(b).to_bytes(8, "little")


class KeyBuilder:
    """Accumulates labelled fields into one blake3 digest and per-field digests."""

    def __init__(self) -> None:
        self._h = blake3()
        self.components: dict[str, str] = {}

    def add(self, label: str, value: str | bytes) -> None:
        lb = label.encode()
        vb = value.encode("utf-8", "surrogateescape") if isinstance(value, str) else value
        self._h.update(_len(lb) + lb + _len(vb) + vb)
        part = blake3(vb).hexdigest()[:16]
        if label in self.components:  # repeated labels (arguments) fold together
            part = blake3((self.components[label] + part).encode()).hexdigest()[:16]
        self.components[label] = part

    def hexdigest(self) -> str:
        return self._h.hexdigest()


def full_key(mkey: str, files: Iterable[tuple[str, str]], env: Iterable[tuple[str, Any]],
             local: Iterable[tuple[str, list[str]]] = ()) -> tuple[str, dict[str, str]]:
    """Stage 2: cheap key + (normalised path, hash) of each input + env-deps, sorted, +
    the machine-local prefixes (sentinel, spellings) the outputs hold."""
    kb = KeyBuilder()
    kb.add("mkey", mkey)
    for path, digest in sorted(files):
        kb.add(f"source:{path}", digest)
    for name, value in sorted(env, key=lambda e: e[0]):
        kb.add(f"env-dep:{name}", "\0unset" if value is None else "=" + str(value))
    for sentinel, spellings in sorted(local):
        kb.add(f"local:{sentinel}", "\0".join(spellings))
    return kb.hexdigest(), kb.components


def env_only_locates_files(var: str, sources: Iterable[str]) -> bool:
    """True when the sources show that ``VAR``'s value only locates a file rustc reads:
    ``env!(VAR)`` is used at least once, and every ``env!(VAR)`` / ``option_env!(VAR)`` sits
    directly in an ``include!``/``include_str!``/``include_bytes!``, alone
    (``include!(env!("GEN"))``) or as the first part of a ``concat!``
    (``include!(concat!(env!("OUT_DIR"), "/x.rs"))``).

    Then the value is never baked into the artifact as text (what rustc reads from the
    file it names is in the key by content), so it may be keyed in normalised form.
    Otherwise it must be keyed as the literal value: a use that is not in these sources
    (through a macro of another crate, or a name built by ``concat!``) proves nothing.
    Sources that cannot be read count as "no".
    """
    import re

    name = re.escape(var)
    uses = re.compile(rb"(?:option_)?env!\s*\(\s*\"" + name.encode() + rb"\"")
    in_include = re.compile(
        rb"include(?:_str|_bytes)?!\s*\(\s*(?:concat!\s*\(\s*env!\s*\(\s*\"" + name.encode()
        + rb"\"\s*\)\s*,|env!\s*\(\s*\"" + name.encode() + rb"\"\s*\)\s*\))")
    quoted = b'"' + var.encode() + b'"'
    found = 0
    for path in sources:
        try:
            with open(path, "rb") as f:
                text = f.read()
        except OSError:
            return False
        # Both patterns need the quoted name: a file without it (nearly all) has no use of
        # either, and skips the regex scans (tens of ms for a big crate's sources).
        if quoted in text:
            n = len(uses.findall(text))
            if n != len(in_include.findall(text)):
                return False
            found += n
    return found > 0
