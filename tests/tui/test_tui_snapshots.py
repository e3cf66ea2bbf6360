"""SVG snapshots of the main screens at 80×24, from a seeded store and a frozen clock.

Review a change with the report pytest-textual-snapshot writes, then accept it with
``pytest tests/tui/test_tui_snapshots.py --snapshot-update``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from kache.tui.config.app import ConfigApp
from kache.tui.monitor.app import MonitorApp

DAEMON = {"pid": 4242, "uptime_s": 5400, "queue": 3, "uploads_done": 10, "uploads_failed": 1,
          "downloads": 4, "prefetches": 2, "last_error": None, "remote": "s3://team-cache"}


def _monitor(root: str, now: float, daemon: dict[str, Any] | None) -> MonitorApp:
    # one poll at start, none after: the screen cannot change while it is taken
    return MonitorApp(root, max_size=2_000_000, clock=lambda: now, daemon_status=lambda _root: daemon,
                      interval=3600)


async def _polled(pilot: Any) -> None:
    while pilot.app.polls < 1:
        await pilot.pause(0.02)


def test_monitor_event_stream(store_root: str, now: float, snap_compare: Callable[..., bool]) -> None:
    """The stream of a warm build in two workspaces, with a daemon running."""
    assert snap_compare(_monitor(store_root, now, DAEMON), terminal_size=(80, 24), run_before=_polled)


def test_monitor_projects(store_root: str, now: float, snap_compare: Callable[..., bool]) -> None:
    """The per-project breakdown (key 2)."""
    assert snap_compare(_monitor(store_root, now, None), press=["2"], terminal_size=(80, 24),
                        run_before=_polled)


def test_monitor_empty_store(empty_root: str, now: float, snap_compare: Callable[..., bool]) -> None:
    """No store yet: the hint says how to start."""
    assert snap_compare(_monitor(empty_root, now, None), terminal_size=(80, 24), run_before=_polled)


def test_config_editor(user_config: Path, monkeypatch: pytest.MonkeyPatch,
                       snap_compare: Callable[..., bool]) -> None:
    """The editor's first screen: a value from the user file, one from the environment."""
    user_config.write_text("# mine\n[cache]\ncompression_level = 5\nlocal_max_size = \"20GB\"\n")
    monkeypatch.setenv("KACHE_CACHE_EXECUTABLES", "1")
    assert snap_compare(ConfigApp(), terminal_size=(80, 24))


def test_monitor_without_colour(store_root: str, now: float, monkeypatch: pytest.MonkeyPatch,
                                snap_compare: Callable[..., bool]) -> None:
    """NO_COLOR: outcomes, the current view and the bars still read as words and shapes."""
    monkeypatch.setenv("NO_COLOR", "1")
    assert snap_compare(_monitor(store_root, now, None), terminal_size=(80, 24), run_before=_polled)
