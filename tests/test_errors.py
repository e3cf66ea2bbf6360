"""The error tree drawn in ``kache/errors.py``'s docstring is the real one: every class
derived from ``KacheError`` anywhere in kache is drawn under its real base, and a class
drawn with a module name is defined in that module."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import kache.errors

KACHE = Path(__file__).resolve().parents[1] / "kache"
_LINE = re.compile(r"^(?P<indent>[ │├└─]*)(?P<name>\w+)\s.*?(?:\((?P<module>kache[\w.]*)\))?\s*$")


def _drawn() -> dict[str, tuple[str | None, str]]:
    """class -> (base, module) as the docstring draws them."""
    out: dict[str, tuple[str | None, str]] = {}
    parents: list[str] = []
    for line in (kache.errors.__doc__ or "").splitlines():
        stripped = line.strip()
        if not stripped or not (stripped.startswith(("├", "└", "│")) or stripped == "KacheError"
                                or stripped.startswith("KacheError ")):
            continue
        m = _LINE.match(line.lstrip(" "))
        assert m, line
        depth = len(m["indent"]) // 4
        parents[depth:] = [m["name"]]
        out[m["name"]] = (parents[depth - 1] if depth else None, m["module"] or "kache.errors")
    return out


def _defined() -> dict[str, tuple[str | None, str]]:
    """class -> (base, module) for KacheError and every class derived from it in kache."""
    classes: list[tuple[str, list[str], str]] = []
    for path in sorted(KACHE.rglob("*.py")):
        module = ".".join(path.relative_to(KACHE.parent).with_suffix("").parts).removesuffix(".__init__")
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ClassDef):
                names = [b.id if isinstance(b, ast.Name) else b.attr for b in node.bases
                         if isinstance(b, (ast.Name, ast.Attribute))]
                classes.append((node.name, names, module))
    out: dict[str, tuple[str | None, str]] = {"KacheError": (None, "kache.errors")}
    grew = True
    while grew:
        grew = False
        for name, names, module in classes:
            base = next((b for b in names if b in out), None)
            if base is not None and (name, module) != ("KacheError", "kache.errors") and name not in out:
                out[name] = (base, module)
                grew = True
    in_tree = [(n, m) for n, _, m in classes if n in out]
    assert len(in_tree) == len(out), f"two errors share a name: {sorted(in_tree)}"
    return out


def test_the_drawn_error_tree_is_the_real_one() -> None:
    assert _drawn() == _defined()


def test_errors_module_exports_what_it_defines() -> None:
    assert sorted(kache.errors.__all__) == sorted(n for n, (_, m) in _defined().items() if m == "kache.errors")


def test_the_cli_shows_an_unexpected_os_error_as_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """A store path that is a file: `kache stats` and `why-miss` used to end in a
    traceback (NotADirectoryError); now one `kache: error:` line, exit 1, and doctor
    names the problem."""
    from kache.cli import main

    store = tmp_path / "a-file"
    store.write_text("x\n")
    monkeypatch.setenv("KACHE_CACHE_DIR", str(store))
    assert main(["stats"]) == 1
    assert capsys.readouterr().err == (f"kache: error: {store}/events.1.jsonl: Not a directory (`kache doctor` "
                                       "checks the setup)\n")
    assert main(["why-miss", "serde"]) == 1  # opening the store says what is wrong itself
    assert capsys.readouterr().err == (f"kache: error: reading the cache failed: the store {store} is not a "
                                       "directory; point cache.local_store (KACHE_CACHE_DIR) at a directory\n")
    main(["doctor"])
    assert (f"fail  store writable: {store} is not a directory: kache cannot keep the store there\n"
            "      fix: point cache.local_store (KACHE_CACHE_DIR) at a directory\n") in capsys.readouterr().out
