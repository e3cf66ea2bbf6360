"""No kache module reaches into another's privates: a name that starts with one
underscore belongs to the module that defines it (a class's to its module). What one
module needs of another is public API (``Store.transaction()``, ``Store.open()``, …)."""

from __future__ import annotations

import ast
from pathlib import Path

KACHE = Path(__file__).resolve().parents[1] / "kache"


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _definitions(tree: ast.Module) -> set[str]:
    """Private names a module defines: functions, classes, module variables, methods
    and attributes set on ``self``."""
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and _private(node.name):
            out.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for t in targets:
                if isinstance(t, ast.Name) and _private(t.id):
                    out.add(t.id)
                elif isinstance(t, ast.Attribute) and _private(t.attr):
                    out.add(t.attr)
        elif isinstance(node, ast.Attribute) and _private(node.attr) and isinstance(node.value, ast.Name) \
                and node.value.id == "self":
            out.add(node.attr)
    return out


def _foreign_modules(tree: ast.Module) -> set[str]:
    """Names bound to modules outside kache (``os``, ``sys``, …): their privates are theirs."""
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if not a.name.startswith("kache"):
                    out.add((a.asname or a.name).split(".")[0])
    return out


def test_no_module_uses_a_private_name_of_another() -> None:
    trees = {p: ast.parse(p.read_text(), str(p)) for p in sorted(KACHE.rglob("*.py"))}
    defined = {p: _definitions(t) for p, t in trees.items()}
    owners: dict[str, set[Path]] = {}
    for p, names in defined.items():
        for n in names:
            owners.setdefault(n, set()).add(p)
    found = []
    for p, tree in trees.items():
        foreign = _foreign_modules(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("kache"):
                found += [f"{p.relative_to(KACHE.parent)}:{node.lineno}: imports {a.name} from {node.module}"
                          for a in node.names if _private(a.name)]
            elif isinstance(node, ast.Attribute) and _private(node.attr) and node.attr in owners:
                base = node.value
                if isinstance(base, ast.Name) and (base.id in ("self", "cls") or base.id in foreign):
                    continue
                if p not in owners[node.attr]:
                    found.append(f"{p.relative_to(KACHE.parent)}:{node.lineno}: uses .{node.attr}, private to "
                                 + ", ".join(sorted(str(o.relative_to(KACHE.parent)) for o in owners[node.attr])))
    assert found == []
