"""Shared fixtures: every test runs with a clean environment and private XDG dirs."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"

_CLEARED_PREFIXES = ("KACHE_", "RUSTC_WRAPPER", "RUSTC_WORKSPACE_WRAPPER", "CARGO_", "AWS_", "XDG_")


@pytest.fixture(autouse=True)
def clean_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Clear KACHE_*, wrapper, CARGO_*, AWS_* and XDG_* variables; give HOME, XDG dirs and
    CARGO_HOME in tmp, so no test can touch the real ~/.cargo/config.toml.

    RUSTUP_HOME keeps pointing at the real toolchains so cargo and rustc work offline.
    """
    rustup_home = os.environ.get("RUSTUP_HOME", os.path.expanduser("~/.rustup"))
    for name in list(os.environ):
        if name.startswith(_CLEARED_PREFIXES):
            monkeypatch.delenv(name)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / ".cache"))
    if os.path.isdir(rustup_home):
        monkeypatch.setenv("RUSTUP_HOME", rustup_home)
    (home / ".cargo").mkdir()
    monkeypatch.setenv("CARGO_HOME", str(home / ".cargo"))
    yield home


def kache_log(directory: Path | str | None = None) -> str:
    """What the wrapper said in ``directory``'s kache.log (its warnings never go to rustc's
    stderr); default: the default cache dir of this test's environment."""
    if directory is None:
        directory = Path(os.environ["XDG_CACHE_HOME"]) / "kache"
    path = Path(directory) / "kache.log"
    return path.read_text(encoding="utf-8") if path.exists() else ""


@pytest.fixture
def user_config(clean_env: Path) -> Path:
    """Path of the user's config.toml (its directory exists; the file does not)."""
    path = clean_env / ".config" / "kache" / "config.toml"
    path.parent.mkdir(parents=True)
    return path


@pytest.fixture
def kache_exe() -> str:
    """The installed ``kache`` console script of the interpreter running the tests."""
    exe = Path(sys.executable).with_name("kache")
    if not exe.exists():
        found = shutil.which("kache")
        if found is None:
            pytest.fail("the kache console script is not installed; run `pip install -e .`")
        return found
    return str(exe)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The reliability summary (issue 9): what the fault, concurrency and hostile-input
    tests of this run did, counted as they did it (see tests/reliability.py)."""
    from tests import reliability

    if not reliability.enabled():
        return
    terminalreporter.section("kache reliability")
    terminalreporter.write_line(reliability.summary())
    path = reliability.env_path()
    if path:
        reliability.write_json(path)
