"""Which tests run cargo (or a rustc build through kache): those carry the ``e2e`` marker,
so ``pytest -m "not e2e"`` is the quick loop. tests/conftest.py applies the rule:

* at collection, a test is marked ``e2e`` when it lives in tests/e2e/ or uses a fixture
  decorated with :func:`runs_cargo` (directly or through other fixtures);
* while a test without the marker runs, every process it starts is looked at
  (:class:`Guard`): cargo, or a real rustc compiling through kache (a ``kache …`` or
  native client process given a rustc, or kache's own code in this process starting one),
  fails the test at teardown, naming the command. A plain ``rustc`` the test runs itself
  (to make a .d file, say) and version queries are fine.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import pytest

F = TypeVar("F", bound=Callable[..., Any])

E2E_DIRS = ("e2e",)
"""Directories under tests/ whose every test is e2e."""

COMPILERS = {"rustc", "clippy-driver"}
QUERIES = {"-V", "-vV", "--version", "-h", "--help"}


def runs_cargo(fixture: F) -> F:
    """Put under ``@pytest.fixture``: every test using this fixture is marked ``e2e``."""
    fixture.runs_cargo = True  # type: ignore[attr-defined]
    return fixture


def uses_cargo_fixture(item: pytest.Item) -> bool:
    """Whether one of the fixtures ``item`` resolves is decorated with :func:`runs_cargo`."""
    info = getattr(item, "_fixtureinfo", None)
    if info is None:
        return False
    for name in info.names_closure:
        defs = info.name2fixturedefs.get(name)
        if defs and getattr(defs[-1].func, "runs_cargo", False):
            return True
    return False


def in_e2e_dir(item: pytest.Item) -> bool:
    parts = Path(str(item.path)).parts
    return any(parts[i] == "tests" and parts[i + 1] in E2E_DIRS for i in range(len(parts) - 1))


def mark(items: list[pytest.Item]) -> None:
    """Mark ``e2e`` every item the collection-time rule names."""
    for item in items:
        if item.get_closest_marker("e2e") is None and (in_e2e_dir(item) or uses_cargo_fixture(item)):
            item.add_marker(pytest.mark.e2e)


# --------------------------------------------------------------------------- at run time


def _is_real_compiler(arg: str) -> bool:
    """``arg`` names a real rustc/clippy-driver binary (not a test's stand-in script)."""
    if os.path.basename(arg) not in COMPILERS:
        return False
    path = arg if os.sep in arg else shutil.which(arg)
    try:
        with open(path or arg, "rb") as f:
            head = f.read(4)
    except OSError:
        return False
    return head in (b"\x7fELF", b"\xcf\xfa\xed\xfe", b"\xca\xfe\xba\xbe")


def _compiles(rest: Sequence[str]) -> bool:
    return bool(rest) and not any(a in QUERIES or a.startswith("--print") for a in rest)


def _from_kache_code() -> bool:
    frame: Any = sys._getframe(2)
    while frame is not None:
        if frame.f_globals.get("__name__", "").startswith("kache."):
            return True
        frame = frame.f_back
    return False


def build_command(argv: Sequence[str]) -> str | None:
    """What in ``argv`` makes it an e2e command (None: nothing)."""
    if not argv:
        return None
    if os.path.basename(argv[0]) == "cargo":
        return None if set(argv[1:]) <= QUERIES else "cargo " + " ".join(argv[1:3])
    for i, arg in enumerate(argv):
        if _is_real_compiler(arg) and _compiles(argv[i + 1:]):
            if i > 0:
                return f"rustc through {os.path.basename(argv[0])}"
            if _from_kache_code():
                return "rustc started by kache in this process"
            return None
    return None


class Guard:
    """Watches the processes started while a test without the ``e2e`` marker runs."""

    def __init__(self) -> None:
        self.item: pytest.Item | None = None
        self.found: list[str] = []
        self.lock = threading.Lock()

    def install(self) -> None:
        original = subprocess.Popen.__init__
        guard = self

        def __init__(popen: subprocess.Popen[Any], args: Any, *rest: Any, **kw: Any) -> None:
            if guard.item is not None:
                if isinstance(args, (str, bytes)):
                    argv = shlex.split(os.fsdecode(args)) if kw.get("shell") else [os.fsdecode(args)]
                elif isinstance(args, os.PathLike):
                    argv = [os.fsdecode(args)]
                else:
                    argv = [os.fsdecode(a) for a in args]
                found = build_command(argv)
                if found:
                    with guard.lock:
                        guard.found.append(found)
            original(popen, args, *rest, **kw)

        subprocess.Popen.__init__ = __init__  # type: ignore[method-assign, assignment]

    def watch(self, item: pytest.Item) -> None:
        """Watch ``item`` (a test without the marker) until :meth:`verdict`."""
        self.item, self.found = item, []

    def verdict(self) -> None:
        """Stop watching; fail the test if it started an e2e command."""
        item, found, self.item, self.found = self.item, self.found, None, []
        if item is not None and found:
            pytest.fail(f"{item.nodeid} runs {found[0]} but is not marked e2e: add pytest.mark.e2e, or "
                        f"decorate the fixture that runs it with tests.support.e2e.runs_cargo", pytrace=False)
