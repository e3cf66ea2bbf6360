"""docs/architecture.md names only files, classes and functions that exist.

Every backticked path must exist; every backticked ``function()``, ``Class.method()`` and
``CamelCase`` class name must be defined in a file the page has named by then (in that
paragraph or an earlier one), so the walk through a hit cannot drift from the code.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "architecture.md"

TICKED = re.compile(r"`([^`]+)`")
PATH = re.compile(r"^[\w./-]+\.(py|rs|json|md)$")
FUNCTION = re.compile(r"^(?:([A-Z]\w*)\.)?([a-z_]\w*)\(\)$")
CLASS = re.compile(r"^[A-Z][a-z]\w*$")


def _defines(path: Path, name: str, owner: str | None = None) -> bool:
    text = path.read_text()
    if path.suffix == ".rs":
        return re.search(rf"\bfn {re.escape(name)}\b", text) is not None
    if owner is not None and re.search(rf"^class {re.escape(owner)}\b", text, re.M) is None:
        return False
    return re.search(rf"^\s*(?:def|class) {re.escape(name)}\b|^{re.escape(name)}\s*[:=]", text, re.M) is not None


def _checks(text: str) -> tuple[list[str], int]:
    problems: list[str] = []
    seen: list[Path] = []
    checked = 0
    for paragraph in re.split(r"\n\s*\n|\n(?=\d+\. |- )", text):
        ticked = TICKED.findall(paragraph)
        for token in ticked:
            if PATH.match(token) and "/" in token:
                path = ROOT / token
                checked += 1
                if not path.exists():
                    problems.append(f"{token}: no such file")
                elif path.suffix in (".py", ".rs"):
                    seen.append(path)
        for token in ticked:
            function, cls = FUNCTION.match(token), CLASS.match(token)
            if function:
                owner, name = function.groups()
            elif cls:
                owner, name = None, token
            else:
                continue
            checked += 1
            if not any(_defines(p, name, owner) for p in seen):
                problems.append(f"{token}: defined in none of the files named so far")
    return problems, checked


def test_the_walk_through_a_hit_names_only_what_exists() -> None:
    problems, checked = _checks(DOC.read_text())
    assert checked > 40, "the page names fewer things than expected: is the check reading it?"
    assert not problems, "\n".join(problems)


def test_the_check_catches_a_renamed_name_or_file() -> None:
    text = DOC.read_text()
    for old, new in (("`serve_hit()`", "`serve_a_hit()`"), ("`Hits.serve()`", "`Hits.answer()`"),
                     ("`KeyBuilder`", "`KeyMaker`"), ("`kache/engine/hit.py`", "`kache/engine/hits.py`")):
        assert old in text
        problems, _ = _checks(text.replace(old, new))
        assert any(new.strip("`") in p for p in problems), (old, new)
