"""The commands that open the TUIs: they need a terminal, and only kache.tui imports textual."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from kache.cli import main

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("args", "what"), [
    (["monitor"], "kache monitor"), ([], "kache monitor"), (["monitor", "--since", "1h"], "kache monitor"),
    (["config"], "kache config"),
])
def test_without_a_terminal_the_tuis_say_so_and_fail(args: list[str], what: str,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    assert main(args) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"Error: {what} needs a terminal: standard input or output is not one; ")


def test_a_bad_since_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["monitor", "--since", "soon"]) == 2
    assert ("Error: Invalid value for --since: expected a duration such as 7d, 24h, 30m, 1h30m or a number "
            "of seconds, got 'soon'") in capsys.readouterr().err


def test_the_cli_does_not_import_textual_until_a_tui_opens() -> None:
    code = "import sys, kache.cli; print(sorted(m for m in ('textual', 'tomlkit') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_only_kache_tui_imports_textual() -> None:
    pattern = re.compile(r"^\s*(from|import)\s+textual\b", re.MULTILINE)
    offenders = [str(p.relative_to(ROOT)) for p in (ROOT / "kache").rglob("*.py")
                 if "tui" not in p.relative_to(ROOT / "kache").parts[:1] and pattern.search(p.read_text())]
    assert offenders == []
