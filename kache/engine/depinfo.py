"""Read and write rustc's dep-info (``.d``) files.

cargo asks for ``--emit=dep-info`` on every compile and, once rustc exits, turns
``<out-dir>/<crate><extra-filename>.d`` into its own fingerprint. kache reads the same
file to learn every source file and environment variable a compile used, stores it with
paths made relative, and writes it back on a hit, so it must come out exactly as rustc
would have written it.

Format (rustc 1.95, ``rustc_interface::passes::write_out_deps``)
================================================================

::

    <target>: <dep> <dep> …            one line per output file, each followed by an
                                       empty line; the .d file itself is a target
    <dep>:                             one line per dependency, same order
                                       (only if there are env deps:)
    # env-dep:<NAME>=<VALUE>           a variable read by env!/option_env! that was set
    # env-dep:<NAME>                   … that was unset
    # checksum:<algo>=<hex> file_len:<bytes> <dep>
                                       only with -Z checksum-hash-algorithm

A real example (``cargo build`` of a workspace member using ``env!``, ``option_env!``,
``include_str!`` and a submodule; source paths are relative to the workspace root)::

    /ws/target/debug/deps/util-dbe8f10e3f5b4e8d.d: util/src/lib.rs util/src/sub.rs util/src/x.txt

    /ws/target/debug/deps/libutil-dbe8f10e3f5b4e8d.rlib: util/src/lib.rs util/src/sub.rs util/src/x.txt

    /ws/target/debug/deps/libutil-dbe8f10e3f5b4e8d.rmeta: util/src/lib.rs util/src/sub.rs util/src/x.txt

    util/src/lib.rs:
    util/src/sub.rs:
    util/src/x.txt:

    # env-dep:CARGO_PKG_NAME=util
    # env-dep:NOPE_XYZ

Details that matter for a byte-exact copy:

* Every line ends in ``\\n``; a target line with no deps is ``<target>: `` (trailing
  space). The same target can be listed twice (``--crate-type dylib,cdylib`` both name
  ``libc.so``).
* Dependencies escape a space as ``\\ `` and nothing else; targets are written raw
  (an out-dir with a space gives ``o/a b/x.d: src\\ dir/lib.rs``).
* Env names and values escape newline, carriage return and backslash as ``\\n``, ``\\r``
  and ``\\\\``; nothing else (``=``, ``#``, spaces stay). rustc sorts env lines by
  (name, value); this module keeps whatever order it reads.
* Under clippy the list also has ``Cargo.toml`` and ``# env-dep:CLIPPY_ARGS=…`` /
  ``CLIPPY_CONF_DIR``; with ``-Z binary-dep-depinfo`` it lists the sysroot's
  ``.rmeta`` files.

A dependency path cannot hold a newline or start a line with ``# `` (its space would be
escaped), which is what makes the layout unambiguous: comment lines are read from the
end, the last empty line before them separates target lines from dependency lines, and
a target is what precedes ``": " + deps`` on its line (so targets may contain ``": "``).
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing costs ~11 ms to import; annotations are strings here

if TYPE_CHECKING:
    from collections.abc import Callable  # collections costs a call ~3 ms
    from typing import Any, ClassVar

from kache._record import Record

__all__ = ["DepInfo", "DepInfoError", "map_paths", "parse", "render"]

_ENV = "# env-dep:"
_CHECKSUM = "# checksum:"
_FILE_LEN = " file_len:"


class DepInfoError(ValueError):
    """A dep-info text is malformed, or a DepInfo cannot be written in rustc's format."""


class DepInfo(Record):
    """The content of one ``.d`` file, unescaped."""

    __slots__ = ("targets", "files", "env", "checksums",)
    _defaults: ClassVar[dict[str, Any]] = {
        "targets": list,
        "files": list,
        "env": list,
        "checksums": list,
    }

    targets: list[str]
    # Output files named by the rule lines, in order (duplicates kept).
    files: list[str]
    # Dependency paths, in order, each once.
    env: list[tuple[str, str | None]]
    # ``env!``/``option_env!`` reads as (name, value); None when the variable was unset.
    checksums: list[tuple[str, int, str]]
    # ``-Z checksum-hash-algorithm`` lines as (``algo=hex``, file length, path).

# --- escaping ------------------------------------------------------------------------

def _escape_path(path: str) -> str:
    return path.replace(" ", "\\ ")


def _unescape_path(text: str) -> str:
    path = text.replace("\\ ", " ")
    if _escape_path(path) != text:
        raise DepInfoError(f"malformed dep-info: unescaped space in dependency path {text!r}")
    return path


def _escape_env(s: str) -> str:
    return s.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r")


_ENV_ESCAPES = {"n": "\n", "r": "\r", "\\": "\\"}


def _unescape_env(s: str) -> str:
    if "\\" not in s:
        return s
    out: list[str] = []
    i = 0
    n = len(s)
    while i < n:
        c = s[i]
        if c == "\\":
            nxt = s[i + 1] if i + 1 < n else ""
            if nxt not in _ENV_ESCAPES:
                raise DepInfoError(f"malformed dep-info: bad escape in env-dep line: {s!r}")
            out.append(_ENV_ESCAPES[nxt])
            i += 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


# --- parse ---------------------------------------------------------------------------

def _parse_checksum(line: str) -> tuple[str, int, str]:
    rest = line[len(_CHECKSUM):]
    algo, sep, tail = rest.partition(_FILE_LEN)
    length, space, path = tail.partition(" ")
    if not sep or not space or not (length.isascii() and length.isdigit()) or len(length) > 20:
        raise DepInfoError(f"malformed dep-info: bad checksum line: {line!r}")
    return algo, int(length), _unescape_path(path)


def _parse_env(line: str) -> tuple[str, str | None]:
    rest = line[len(_ENV):]
    if "\r" in rest:  # rustc escapes it (\\r): a raw one is not its writing
        raise DepInfoError(f"malformed dep-info: raw carriage return in env-dep line: {line!r}")
    name, eq, value = rest.partition("=")
    return _unescape_env(name), (_unescape_env(value) if eq else None)


def parse(text: str) -> DepInfo:
    """Parse a ``.d`` file written by rustc.

    Raises:
        DepInfoError: the text does not have rustc's layout (no final newline, a target
            line whose dependencies differ from the dependency lines, a bad escape…).
    """
    if text == "":
        return DepInfo()
    if not text.endswith("\n"):
        raise DepInfoError("malformed dep-info: the last line does not end with a newline")
    lines = text[:-1].split("\n")

    # Comment section, from the end: checksum lines, then env-dep lines after a blank one.
    end = len(lines)
    while end > 0 and lines[end - 1].startswith(_CHECKSUM):
        end -= 1
    checksums = [_parse_checksum(line) for line in lines[end:]]
    env_end = end
    while end > 0 and lines[end - 1].startswith(_ENV):
        end -= 1
    env = [_parse_env(line) for line in lines[end:env_end]]
    if env:
        if end == 0 or lines[end - 1] != "":
            raise DepInfoError("malformed dep-info: env-dep lines must follow an empty line")
        end -= 1
    body = lines[:end]

    # The last empty line ends the target rules; dependency lines follow it.
    split = len(body) - 1
    while split >= 0 and body[split] != "":
        split -= 1
    rules, deps = body[: split + 1], body[split + 1:]

    files: list[str] = []
    escaped: list[str] = []
    seen: set[str] = set()
    for line in deps:
        if not line.endswith(":"):
            raise DepInfoError(f"malformed dep-info: expected `<path>:`, found {line!r}")
        raw = line[:-1]
        path = _unescape_path(raw)
        if path in seen:
            raise DepInfoError(f"malformed dep-info: dependency listed twice: {raw!r}")
        seen.add(path)
        files.append(path)
        escaped.append(raw)

    suffix = ": " + " ".join(escaped)
    targets: list[str] = []
    for k in range(0, len(rules), 2):
        line = rules[k]
        if k + 1 >= len(rules) or rules[k + 1] != "" or line == "":
            raise DepInfoError(f"malformed dep-info: expected a rule line and an empty line at {line!r}")
        if not line.endswith(suffix):
            raise DepInfoError(
                f"malformed dep-info: rule line does not list the dependency lines: {line!r}"
            )
        targets.append(line[: len(line) - len(suffix)])
    return DepInfo(targets=targets, files=files, env=env, checksums=checksums)


# --- render --------------------------------------------------------------------------

def _check_line(what: str, s: str) -> None:
    if "\n" in s:
        raise DepInfoError(f"cannot write dep-info: {what} contains a newline: {s!r}")


def render(info: DepInfo) -> str:
    """Write ``info`` exactly as rustc would (``parse(render(x)) == x``).

    ``files`` are written once each, in order. Raises DepInfoError for what rustc's
    format cannot hold: a newline in a path, ``=`` in an env name, whitespace in a
    checksum, a negative file length.
    """
    files: list[str] = []
    seen: set[str] = set()
    for f in info.files:
        _check_line("a dependency path", f)
        if f not in seen:
            seen.add(f)
            files.append(_escape_path(f))
    deps = " ".join(files)
    out: list[str] = []
    for t in info.targets:
        _check_line("a target path", t)
        out.append(f"{t}: {deps}\n\n")
    for f in files:
        out.append(f"{f}:\n")
    if info.env:
        out.append("\n")
        for name, value in info.env:
            if "=" in name:
                raise DepInfoError(f"cannot write dep-info: env name contains `=`: {name!r}")
            if value is None:
                out.append(f"{_ENV}{_escape_env(name)}\n")
            else:
                out.append(f"{_ENV}{_escape_env(name)}={_escape_env(value)}\n")
    for algo, length, path in info.checksums:
        _check_line("a checksum path", path)
        if algo.split() != [algo] or length < 0:
            raise DepInfoError(f"cannot write dep-info: bad checksum entry: {(algo, length, path)!r}")
        out.append(f"{_CHECKSUM}{algo}{_FILE_LEN}{length} {_escape_path(path)}\n")
    return "".join(out)


def map_paths(info: DepInfo, fn: Callable[[str], str]) -> DepInfo:
    """A copy of ``info`` with ``fn`` applied to every target, dependency and checksum
    path (env values are left alone). Dependencies that map to the same path are kept
    once."""
    files: list[str] = []
    seen: set[str] = set()
    for f in info.files:
        g = fn(f)
        if g not in seen:
            seen.add(g)
            files.append(g)
    return DepInfo(
        targets=[fn(t) for t in info.targets],
        files=files,
        env=list(info.env),
        checksums=[(a, n, fn(p)) for a, n, p in info.checksums],
    )
