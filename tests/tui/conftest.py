"""Fixtures of the TUI tests: a seeded store at a frozen time, and a pilot runner
(helpers: tests/support/tui.py)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from tests.support.tui import NOW, drive, pilot_until, seed


@pytest.fixture
def store_root(clean_env: Path) -> str:
    """The default store (``~/.cache/kache``), seeded."""
    root = str(clean_env / ".cache" / "kache")
    seed(root)
    return root


@pytest.fixture
def empty_root(clean_env: Path) -> str:
    """Where the default store would be; nothing there yet."""
    return str(clean_env / ".cache" / "kache")


@pytest.fixture
def run() -> Callable[..., None]:
    """:func:`drive`, as a fixture."""
    return drive


@pytest.fixture
def until() -> Callable[..., Awaitable[None]]:
    """:func:`pilot_until`, as a fixture."""
    return pilot_until


@pytest.fixture
def now() -> float:
    """The frozen clock's time."""
    return NOW
