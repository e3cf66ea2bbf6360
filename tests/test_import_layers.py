"""Imports between kache's top-level packages go one way: down the layers below.

Every module under ``kache/`` is parsed with ``ast``; every ``import`` counts, at the
top of a module or inside a function (the hot path imports lazily), and under
``TYPE_CHECKING`` too. A *unit* is a top-level package (``kache.store``) or a top-level
module (``kache.settings``); a unit may import itself and the units of lower layers,
never one of its own layer or above, so there are no cycles between units (the layers
are drawn in docs/architecture.md): the CLI on top, nothing imports it but
``__main__``; the store and the settings at the bottom; click, textual and rich only in
the user interfaces.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from functools import cache
from pathlib import Path

KACHE = Path(__file__).resolve().parents[1] / "kache"

LAYERS: list[set[str]] = [
    {"__main__"},  # argv[1] is a compiler: the wrapper; else the CLI
    {"cli"},  # click commands, thin; the only importer of kache.cli is __main__
    {"tui", "gen"},  # the textual apps; schema -> nix module, README table
    {"doctor", "demo", "target_dirs"},  # what `kache doctor`, `demo` and `clean` call
    {"init_steps"},  # the steps of `kache init`, also run by `kache doctor --fix`
    {"wrapper", "native"},  # the process shell (asks the daemon first); the native client's build
    {"daemon"},  # the daemon: serves hits (through the engine), uploads, fetches
    {"engine"},  # one cacheable rustc call, shared by the wrapper and the daemon
    {"remote"},  # S3 and archives
    {"store"},  # the local store: index, blobs, events, stats, gc
    {"settings", "paths", "selfexec", "command_names"},
    {"units", "quickjson", "_record", "errors", "__init__", "store.layout", "loglevel"},  # __init__: `from kache import __version__`
]

ONLY: dict[str, set[str]] = {
    # The TUIs read the store and the settings; the monitor also asks the daemon for its
    # status, through the socket client.
    "tui": {"store", "settings", "units", "errors", "daemon.client"},
}
"""Units that may import only these (units, or ``unit.module`` for one module of one)."""

UI_LIBRARIES = {"click": {"cli"}, "textual": {"tui"}, "rich": {"cli", "tui"}}
"""Third-party libraries only the user interfaces import, and which of them may."""



def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(KACHE.rglob("*.py")):
        parts = path.relative_to(KACHE.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


MODULES = _modules()


def _imports(name: str, path: Path) -> Iterator[tuple[int, str]]:
    """(line, module) for every import in the module ``name``: kache modules by their
    full name (``from kache.daemon import client`` is ``kache.daemon.client``), others
    by their top-level name."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name if alias.name.startswith("kache") else alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            if not module.startswith("kache"):
                yield node.lineno, module.split(".")[0]
                continue
            for alias in node.names:
                sub = f"{module}.{alias.name}"
                yield node.lineno, sub if sub in MODULES else module


LEAVES = {"kache.store.layout"}
"""Modules that are units of their own, below their package: the store's on-disk names
(standard library only), which the settings (the memo) and the daemon's wire use too."""


def _unit(module: str) -> str:
    """``kache.store.store`` -> ``store``; ``kache`` -> ``__init__``; a leaf module by its
    own name (``store.layout``)."""
    if module in LEAVES:
        return module.removeprefix("kache.")
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _layer(unit: str) -> int:
    for n, layer in enumerate(LAYERS):
        if unit in layer:
            return n
    raise AssertionError(f"kache.{unit} is on no layer of tests/test_import_layers.py: add it to LAYERS")


@cache
def _edges() -> list[tuple[str, int, str]]:
    """(importer, line, imported) for every import of the kache modules."""
    return [(name, line, imported) for name, path in MODULES.items() for line, imported in _imports(name, path)]


def _where(name: str, line: int) -> str:
    return f"{MODULES[name].relative_to(KACHE.parent)}:{line}"


def test_every_unit_is_on_one_layer() -> None:
    units = {_unit(m) for m in MODULES}
    placed = [u for layer in LAYERS for u in layer]
    assert len(placed) == len(set(placed)), "a unit is on two layers"
    for unit in units:
        _layer(unit)


def test_imports_go_down_the_layers() -> None:
    wrong = []
    for importer, line, imported in _edges():
        if not imported.startswith("kache"):
            continue
        src, dst = _unit(importer), _unit(imported)
        if src != dst and _layer(dst) <= _layer(src):
            wrong.append(f"{_where(importer, line)}: kache.{src} (layer {_layer(src)}) imports {imported} "
                         f"(kache.{dst}, layer {_layer(dst)}): a unit imports only lower layers")
    assert not wrong, "\n".join(wrong)


def test_narrow_units_import_only_what_they_may() -> None:
    wrong = []
    for importer, line, imported in _edges():
        src = _unit(importer)
        if src not in ONLY or not imported.startswith("kache") or _unit(imported) == src:
            continue
        allowed = ONLY[src]
        if not any(imported == f"kache.{a}" or imported.startswith(f"kache.{a}.") for a in allowed):
            wrong.append(f"{_where(importer, line)}: kache.{src} imports {imported}; it may import only "
                         f"{', '.join(sorted(allowed))}")
    assert not wrong, "\n".join(wrong)


def test_nothing_imports_the_cli_but_the_entry_point() -> None:
    wrong = [f"{_where(importer, line)}: imports {imported}" for importer, line, imported in _edges()
             if _unit(imported) == "cli" and imported.startswith("kache")
             and _unit(importer) not in ("cli", "__main__")]
    assert not wrong, "\n".join(wrong)


def test_only_the_user_interfaces_import_click_textual_and_rich() -> None:
    wrong = [f"{_where(importer, line)}: imports {imported}" for importer, line, imported in _edges()
             if imported in UI_LIBRARIES and _unit(importer) not in UI_LIBRARIES[imported]]
    assert not wrong, "\n".join(wrong)


def test_the_reader_sees_lazy_and_relative_imports() -> None:
    """The parse itself: an import inside a function, and ``from kache.x import module``."""
    edges = {(importer, imported) for importer, _line, imported in _edges()}
    assert ("kache.__main__", "kache.cli") in edges  # inside main()
    assert ("kache.tui.monitor.model", "kache.daemon.client") in edges  # `from kache.daemon import client`


STORE_INSIDES = {"kache.store.connection", "kache.store.integrity", "kache.store.memos", "kache.store.schema"}
"""The store's own parts: outside kache.store, Store (kache.store.store) is the way in."""

REACHES = {
    # The shell talks to the daemon over its socket (the protocol and the client), nothing
    # more; the runner (the shell, started once) checks its peers as the daemon does.
    "wrapper": ("kache.daemon.", {"kache.daemon", "kache.daemon.wire", "kache.daemon.client", "kache.daemon.peer"}),
    # The engine reaches the remote only through the RemoteAsks object it is handed.
    "engine": ("kache.remote", set()),
}
"""unit -> (a package prefix, the modules of it the unit may import)."""


def test_packages_are_entered_by_their_public_modules() -> None:
    wrong = []
    for importer, line, imported in _edges():
        unit = _unit(importer)
        if imported in STORE_INSIDES and unit != "store":
            wrong.append(f"{_where(importer, line)}: imports {imported}; use kache.store.store")
        prefix, allowed = REACHES.get(unit, ("", set()))
        if prefix and imported.startswith(prefix) and imported not in allowed:
            wrong.append(f"{_where(importer, line)}: kache.{unit} imports {imported}")
    assert not wrong, "\n".join(wrong)
