"""The error tree drawn in ``kache/errors.py``'s docstring is the real one: every class
derived from ``KacheError`` anywhere in kache is drawn under its real base, and a class
drawn with a module name is defined in that module."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import kache.errors

KACHE = Path(__file__).resolve().parents[1] / "kache"
_LINE = re.compile(r"^(?P<indent>[ │├└─]*)(?P<name>\w+)\s.*?(?:\((?P<module>kache[\w.]*)\))?\s*$")


def _drawn() -> dict[str, tuple[str | None, str]]:
    """class -> (base, module) as the docstring draws them."""
    out: dict[str, tuple[str | None, str]] = {}
    parents: list[str] = []
    for line in (kache.errors.__doc__ or "").splitlines():
        stripped = line.strip()
        if not stripped or not (stripped.startswith(("├", "└")) or stripped == "KacheError"
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
