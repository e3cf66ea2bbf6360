"""The cache key recipe, in two stages (ccache's "direct mode").

Stage 1, the *cheap key* (``mkey``), is computed before compiling, from what the
command line and environment say: toolchain, arguments with paths normalised, every
``--extern`` and static library by content, the ``CARGO_*`` variables, declared
extra inputs, the salt.

Stage 2, the *full key*, adds what only a compile reveals: every file rustc read and
every ``env!``/``option_env!`` value, as listed in the dep-info (``.d``) that cargo
always asks for. A miss records, under the cheap key, that list of (path, blake3)
and env values; a later lookup re-hashes those files (stat-memoised) and, when all
match, has the full key without running rustc. A file that did not exist at compile
time is not in the list: its later appearance is not noticed (the known limit of
direct mode; ``KACHE_RECACHE=1`` forces a recompile).

Byte stream: every field is ``label`` and ``value``, each prefixed by its length as
8 bytes little-endian, so no concatenation of fields can collide with another.
Each field also gets its own digest in ``components`` (for ``kache why-miss``).

``KEY_VERSION`` is hashed first and stored with every entry.
History: 1 — first recipe.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing costs ~11 ms to import; annotations are strings here

from blake3 import blake3

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping
    from typing import Any

__all__ = ["KEY_VERSION", "KeyBuilder", "key_env", "full_key", "env_only_locates_files"]

KEY_VERSION = 1

# Variables cargo sets that name this machine's paths or this invocation only, and do
# not change what rustc produces (a crate that bakes one in reports it as an env-dep).
_ENV_SKIP = frozenset({
    "CARGO_MAKEFLAGS", "CARGO_PRIMARY_PACKAGE", "CARGO_TARGET_TMPDIR", "CARGO_HOME",
    "CARGO_SBOM_PATH", "CARGO_MANIFEST_PATH", "CARGO_MANIFEST_DIR", "CARGO",
    "CARGO_TARGET_DIR", "CARGO_BUILD_JOBS", "CARGO_LOG", "CARGO_TERM_COLOR",
    "CARGO_TERM_VERBOSE", "CARGO_TERM_QUIET", "CARGO_TERM_PROGRESS_WHEN", "CARGO_TERM_PROGRESS_WIDTH",
})
_ENV_SKIP_PREFIXES = ("CARGO_BIN_EXE_", "CARGO_REGISTRIES_", "CARGO_REGISTRY_", "CARGO_NET_", "CARGO_HTTP_")
# Non-CARGO variables rustc itself reads.
_ENV_RUSTC = ("RUSTC_BOOTSTRAP", "RUSTC_FORCE_RUSTC_VERSION", "SOURCE_DATE_EPOCH", "MACOSX_DEPLOYMENT_TARGET",
              "IPHONEOS_DEPLOYMENT_TARGET", "RUST_MIN_STACK")


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


def key_env(env: Mapping[str, str]) -> list[tuple[str, str]]:
    """The environment variables that go into the cheap key, sorted."""
    out = []
    for name, value in env.items():
        if name.startswith("CARGO_"):
            if name in _ENV_SKIP or name.startswith(_ENV_SKIP_PREFIXES):
                continue
            out.append((name, value))
        elif name in _ENV_RUSTC:
            out.append((name, value))
    return sorted(out)


def full_key(mkey: str, files: Iterable[tuple[str, str]], env: Iterable[tuple[str, Any]]) -> tuple[str, dict[str, str]]:
    """Stage 2: cheap key + (normalised path, hash) of each input + env-deps, sorted."""
    kb = KeyBuilder()
    kb.add("mkey", mkey)
    for path, digest in sorted(files):
        kb.add(f"source:{path}", digest)
    for name, value in sorted(env, key=lambda e: e[0]):
        kb.add(f"env-dep:{name}", "\0unset" if value is None else "=" + str(value))
    return kb.hexdigest(), kb.components


def env_only_locates_files(var: str, sources: Iterable[str]) -> bool:
    """True when every ``env!(VAR)`` / ``option_env!(VAR)`` in the sources sits inside an
    ``include!``/``include_str!``/``include_bytes!`` of a ``concat!``.

    Then the value only locates a file that rustc reads (and reports, with its content
    in the key), and is never baked into the artifact as text, so it may be keyed in
    normalised form. Otherwise it must be keyed as the literal value. Sources that
    cannot be read count as "no".
    """
    import re

    name = re.escape(var)
    uses = re.compile(rb"(?:option_)?env!\s*\(\s*\"" + name.encode() + rb"\"")
    in_include = re.compile(
        rb"include(?:_str|_bytes)?!\s*\(\s*concat!\s*\(\s*env!\s*\(\s*\"" + name.encode() + rb"\"\s*\)")
    quoted = b'"' + var.encode() + b'"'
    for path in sources:
        try:
            with open(path, "rb") as f:
                text = f.read()
        except OSError:
            return False
        # Both patterns need the quoted name: a file without it (nearly all) has no use of
        # either, and skips the regex scans (tens of ms for a big crate's sources).
        if quoted in text and len(uses.findall(text)) != len(in_include.findall(text)):
            return False
    return True

