"""Where the tests live, the variables every test starts without, and kache's own log."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent
FIXTURES = ROOT / "tests" / "fixtures"

CLEARED_PREFIXES = ("KACHE_", "RUSTC_WRAPPER", "RUSTC_WORKSPACE_WRAPPER", "CARGO_", "AWS_", "XDG_")
"""Variables (by prefix) no test inherits from the environment that runs the suite."""


def rustup_home() -> str:
    """The real RUSTUP_HOME, kept so cargo and rustc work offline in a cleared environment."""
    return os.environ.get("RUSTUP_HOME", os.path.expanduser("~/.rustup"))


@contextmanager
def clean_environ() -> Iterator[None]:
    """What tests/conftest.py's ``clean_env`` does, for module-scoped fixtures (which run
    before it): no KACHE_*/CARGO_*/AWS_*/XDG_* variables, RUSTUP_HOME pinned to the real one."""
    home = rustup_home()
    with pytest.MonkeyPatch.context() as mp:
        for name in list(os.environ):
            if name.startswith(CLEARED_PREFIXES):
                mp.delenv(name)
        if os.path.isdir(home):
            mp.setenv("RUSTUP_HOME", home)
        yield


def kache_executable() -> str:
    """The installed ``kache`` console script of the interpreter running the tests."""
    exe = Path(sys.executable).with_name("kache")
    found = str(exe) if exe.exists() else shutil.which("kache")
    if found is None:
        pytest.fail("the kache console script is not installed; run `pip install -e .`")
    return found


def kache_log(directory: Path | str | None = None) -> str:
    """What the wrapper said in ``directory``'s kache.log (its warnings never go to rustc's
    stderr); default: the default cache dir of this test's environment."""
    if directory is None:
        directory = Path(os.environ["XDG_CACHE_HOME"]) / "kache"
    path = Path(directory) / "kache.log"
    return path.read_text(encoding="utf-8") if path.exists() else ""
