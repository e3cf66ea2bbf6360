"""Native libraries that can end up inside an artifact, keyed by content.

An rlib carries the static libraries its crate links with ``kind=static`` (rustc bundles
them), and an executable or dylib carries whatever static library the linker takes.
rustc learns their names from ``-l`` arguments (``-l [KIND[:MODIFIERS]=]NAME[:RENAME]``,
from a build script's ``cargo:rustc-link-lib``) and from ``#[link(name = …)]``
attributes in the source, which kache cannot see before the compile; it finds the files
in the ``-L native=`` and ``-L all=`` directories, in order.

So the cheap key holds:

- for every ``-l`` of kind ``static`` or of no kind, the first file rustc would take
  (``lib<NAME>.a``, ``<NAME>.lib`` on Windows, ``NAME`` itself with ``+verbatim``), by
  content, or "missing";
- for every ``-L native=`` / ``-L all=`` directory inside the target dir (a build
  script's ``OUT_DIR``) or inside the directory rustc runs in (the workspace, the
  package), every regular file in it (not below it), by name and content: a
  ``#[link]`` attribute may name any of them.

A call that links (a bin, dylib, cdylib, proc macro or build script) also reads the
linker and whatever files its link arguments name: the program given by ``-C linker=``
(a script around ``cc`` edits like a ``RUSTC`` script) and every ``-C link-arg(s)=``
piece that names an existing file (an object, an archive, a linker script), by content.
The default linker (``cc`` on ``PATH``) is not keyed: it differs from machine to
machine without changing what the program does.

A static library in a directory outside both (``/usr/lib``, ``/opt/…``) that only a
``#[link]`` attribute names is not seen: declare it in ``cache.extra_inputs``.

Standard library only: this is on the hot path of every call.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False  # typing costs ~11 ms to import; annotations are strings here

from kache.paths import which

if TYPE_CHECKING:
    from collections.abc import Mapping

    from kache.engine.argv import RustcCall

__all__ = ["LibSpec", "parse_lib", "static_candidates", "native_inputs", "link_inputs"]

_SEARCH_KINDS = ("native", "all")


class LibSpec:
    """One ``-l`` value, parsed as rustc parses it."""

    __slots__ = ("kind", "verbatim", "name")

    def __init__(self, kind: str, verbatim: bool, name: str) -> None:
        self.kind = kind  # "static", "dylib", "framework", "link-arg" or "" (not given)
        self.verbatim = verbatim
        self.name = name  # the name searched for (a rename after ":" is dropped)


def parse_lib(spec: str) -> LibSpec:
    """``[KIND[:MODIFIERS]=]NAME[:RENAME]``; modifiers are ``+``/``-`` words, the last wins."""
    head, eq, name = spec.partition("=")
    if not eq:
        head, name = "", spec
    kind, _, modifiers = head.partition(":")
    verbatim = False
    for m in modifiers.split(","):
        if m[1:] == "verbatim" and m[:1] in "+-" and m:
            verbatim = m[0] == "+"
    if kind != "link-arg":
        name = name.partition(":")[0]
    return LibSpec(kind, verbatim, name)


def static_candidates(lib: LibSpec, family: str) -> list[str]:
    """File names rustc tries, in order, for a static library of this name."""
    if lib.verbatim:
        return [lib.name]
    if family == "windows-msvc":
        return [f"{lib.name}.lib", f"lib{lib.name}.a"]
    return [f"lib{lib.name}.a"]


def native_inputs(rc: RustcCall, cwd: str, target_dir: str | None, family: str) -> tuple[
        list[tuple[str, str]], list[tuple[str, list[str]]]]:
    """What of this call's native libraries to key by content.

    Returns ``(libs, dirs)``: ``libs`` as (``-l`` value, file path rustc would take, or
    the first candidate in the first directory when none exists); ``dirs`` as
    (directory, regular files directly in it), for the directories a build script or the
    package itself provides.
    """
    search = [os.path.join(cwd, p) for kind, p in rc.lib_paths if kind in _SEARCH_KINDS]
    libs: list[tuple[str, str]] = []
    for spec in rc.libs:
        lib = parse_lib(spec)
        if lib.kind not in ("static", "") or not lib.name:
            continue
        names = static_candidates(lib, family)
        found = None
        for d in search:
            for name in names:
                path = os.path.join(d, name)
                if os.path.isfile(path):
                    found = path
                    break
            if found:
                break
        if found is None and lib.kind == "static":
            found = os.path.join(search[0] if search else cwd, names[0])
        if found is not None:
            libs.append((spec, found))
    dirs: list[tuple[str, list[str]]] = []
    owned = [p for p in (target_dir, cwd) if p]
    seen: set[str] = set()
    for d in search:
        real = os.path.normpath(d)
        if real in seen or not any(real == o or real.startswith(o.rstrip("/") + "/") for o in owned):
            continue
        seen.add(real)
        try:
            names = sorted(e.name for e in os.scandir(d) if e.is_file())
        except OSError:
            continue
        dirs.append((d, [os.path.join(d, n) for n in names]))
    return libs, dirs


_LINKING_TYPES = frozenset({"bin", "dylib", "cdylib", "proc-macro"})


def link_inputs(rc: RustcCall, crate_types: list[str], cwd: str, env: Mapping[str, str]) -> list[tuple[str, str]]:
    """Files a linking call reads besides rustc's own inputs: (label, path). Empty for a
    call that does not link (an rlib, ``cargo check``).

    The ``-C linker=`` program; and, read from the link arguments (``-C link-arg(s)=``,
    ``-l link-arg=``, pieces of ``-Wl,a,b``): every piece that names an existing file
    (an object, an archive, a linker script, ``--script=x.ld``), every response file
    (``@file``) and what it names, and every library a ``-l<name>`` / ``-l:<file>`` finds in
    the ``-L`` directories the arguments give and the ``-L native=`` ones rustc has.
    """
    if "link" not in rc.emit or not _LINKING_TYPES.intersection(crate_types):
        return []
    out: list[tuple[str, str]] = []
    tokens: list[str] = []
    for value in rc.codegen:
        name, eq, setting = value.partition("=")
        name = name.replace("_", "-")
        if not eq or not setting:
            continue
        if name == "linker":
            path = _program(setting, cwd, env)
            if path is not None:
                out.append(("linker", path))
        elif name in ("link-arg", "link-args"):
            tokens.extend(_link_pieces(setting.split() if name == "link-args" else [setting]))
    for spec in rc.libs:
        kind, eq, arg = spec.partition("=")
        if eq and kind.partition(":")[0] == "link-arg":
            tokens.extend(_link_pieces([arg]))
    dirs = [os.path.join(cwd, p) for kind, p in rc.lib_paths if kind in _SEARCH_KINDS]
    names: list[str] = []
    seen: set[str] = set()
    queue = list(tokens)
    i = 0
    while i < len(queue):
        tok = queue[i]
        nxt = queue[i + 1] if i + 1 < len(queue) else ""
        i += 1
        if tok in ("-L", "-l"):
            (dirs if tok == "-L" else names).append(os.path.join(cwd, nxt) if tok == "-L" else nxt)
            i += 1
            continue
        if tok.startswith("-L"):
            dirs.append(os.path.join(cwd, tok[2:]))
            continue
        if tok.startswith("-l"):
            names.append(tok[2:])
            continue
        if tok.startswith("@") and tok not in seen:  # a response file: its words are arguments too
            seen.add(tok)
            path = os.path.join(cwd, tok[1:])
            if os.path.isfile(path):
                out.append((f"link-arg:{tok}", path))
                try:
                    with open(path, encoding="utf-8", errors="replace") as f:
                        queue.extend(_link_pieces(f.read(1 << 20).split()))
                except OSError:
                    pass
            continue
        _, _, tail = tok.rpartition("=")  # --script=x.ld
        for candidate in {tok, tail}:
            if candidate and ("/" in candidate or "." in candidate):
                path = os.path.join(cwd, candidate)
                if os.path.isfile(path):
                    out.append((f"link-arg:{candidate}", path))
    for name in names:
        files = [name[1:]] if name.startswith(":") else [f"lib{name}.so", f"lib{name}.a"]
        for d in dirs:
            found = [os.path.join(d, f) for f in files if os.path.isfile(os.path.join(d, f))]
            if found:
                out.extend((f"link-lib:{name}:{os.path.basename(p)}", p) for p in found)
                break
    return out


def _link_pieces(args: list[str]) -> list[str]:
    """Link arguments as the linker sees them: ``-Wl,a,b`` is ``a`` and ``b``."""
    out: list[str] = []
    for a in args:
        if a.startswith("-Wl,"):
            out.extend(x for x in a[4:].split(",") if x)
        else:
            out.append(a)
    return out


def _program(name: str, cwd: str, env: Mapping[str, str]) -> str | None:
    if os.sep in name:
        return os.path.join(cwd, name)
    return which(name, env.get("PATH", os.defpath), cwd)
