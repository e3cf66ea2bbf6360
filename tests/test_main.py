from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from kache.__main__ import is_wrapper_call


@pytest.mark.parametrize(
    "argv",
    [["kache", "rustc", "-vV"],
     ["kache", "/home/u/.rustup/toolchains/stable/bin/rustc", "--crate-name", "x"],
     ["kache", "/usr/bin/clippy-driver", "/usr/bin/rustc", "-vV"],
     ["kache", "rustc.exe", "-vV"]],
)
def test_compiler_as_first_argument_is_wrapper_mode(argv: list[str]) -> None:
    assert is_wrapper_call(argv)


@pytest.mark.parametrize(
    "argv", [["kache"], ["kache", "stats"], ["kache", "--version"], ["kache", "config", "show"], ["kache", ""]])
def test_commands_are_cli_mode(argv: list[str]) -> None:
    assert not is_wrapper_call(argv)


def test_custom_compiler_path_is_wrapper_mode(tmp_path: Path) -> None:
    exe = tmp_path / "my-compiler"
    shutil.copy(shutil.which("true") or "/bin/true", exe)
    assert is_wrapper_call(["kache", str(exe), "-vV"])
