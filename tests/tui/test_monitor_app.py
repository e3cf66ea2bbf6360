"""The monitor (kache.tui.monitor), driven by textual's pilot against synthetic stores."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from textual.widgets import Input, Static

from kache.store import stats
from kache.tui.monitor.app import MonitorApp
from kache.tui.monitor.widgets.summary import DaemonLine, StoreLine
from kache.tui.monitor.widgets.table import BoardTable
from tests.support.entries import event

Run = Callable[..., None]
Until = Callable[..., Awaitable[None]]


def _app(root: str, now: float, **kw: Any) -> MonitorApp:
    kw.setdefault("daemon_status", lambda _root: None)
    return MonitorApp(root, clock=lambda: now, interval=0.1, **kw)


def _column(app: MonitorApp, index: int) -> list[str]:
    table = app.query_one(BoardTable)
    return [str(table.get_row_at(r)[index]) for r in range(table.row_count)]


def _text(widget: Any) -> str:
    return str(widget.render())


def test_events_appended_while_it_runs_appear_newest_first(store_root: str, now: float, run: Run,
                                                          until: Until) -> None:
    app = _app(store_root, now)

    async def body(pilot: Any) -> None:
        await until(pilot, lambda: app.polls >= 1)
        assert _column(app, 2)[:2] == ["regex_syntax", "app"]
        event(store_root, "miss", "late_crate", t=now, ms=1500.0, bytes=2048, root="/ws/new")
        event(store_root, "local_hit", "later_crate", t=now, ms=4.0, bytes=2048, saved_ms=700, root="/ws/new")
        await until(pilot, lambda: _column(app, 2)[:2] == ["later_crate", "late_crate"])
        assert _column(app, 1)[:2] == ["hit", "miss"]
        assert app.board.total.calls == 12
        assert "calls 12" in _text(app.query_one("#calls-line"))

    run(app, body)


def test_an_empty_store_shows_how_to_start(empty_root: str, now: float, run: Run, until: Until) -> None:
    app = _app(empty_root, now)

    async def body(pilot: Any) -> None:
        await until(pilot, lambda: app.polls >= 1)
        assert app.screen.has_class("-empty")
        hint = _text(app.query_one("#empty", Static))
        assert "no builds yet: export RUSTC_WRAPPER=kache" in hint
        assert "store: ~/.cache/kache (not created yet)" in hint
        assert "not created yet" in _text(app.query_one(StoreLine))
        assert _text(app.query_one(DaemonLine)) == "daemon: not running"
        os.makedirs(empty_root)  # the first build arrives
        event(empty_root, "miss", "first_crate", t=now)
        await until(pilot, lambda: not app.screen.has_class("-empty"))
        assert _column(app, 2) == ["first_crate"]

    run(app, body)


def test_the_filter_keeps_matching_crates_and_projects(store_root: str, now: float, run: Run,
                                                       until: Until) -> None:
    app = _app(store_root, now)

    async def body(pilot: Any) -> None:
        await until(pilot, lambda: app.polls >= 1)
        await pilot.press("slash")
        assert app.focused is app.query_one("#filter", Input)
        await pilot.press(*"SER", "enter")
        assert _column(app, 2) == ["serde", "serde"]
        assert "filter: SER" in _text(app.query_one("#view-bar"))
        await pilot.press("slash")
        app.query_one("#filter", Input).value = "tool"  # a project matches too
        await pilot.press("enter")
        assert _column(app, 2) == ["regex_syntax", "regex", "tokio"]
        await pilot.press("slash")
        app.query_one("#filter", Input).value = "nothing-like-it"
        await pilot.pause()
        assert app.screen.has_class("-empty")
        assert "nothing matches 'nothing-like-it'" in _text(app.query_one("#empty", Static))
        await pilot.press("escape")
        assert app.needle == "" and len(_column(app, 2)) == 10
        assert app.focused is app.query_one(BoardTable)

    run(app, body)


def test_views_switch_and_sort_cycles(store_root: str, now: float, run: Run, until: Until) -> None:
    app = _app(store_root, now)

    async def body(pilot: Any) -> None:
        await until(pilot, lambda: app.polls >= 1)
        await pilot.press("2")
        assert app.view == "projects"
        assert _column(app, 0) == ["/ws/app", "/ws/tool"]
        assert _column(app, 1) == ["7", "3"]  # calls
        await pilot.press("s")  # hits
        assert _column(app, 0) == ["/ws/tool", "/ws/app"]
        await pilot.press("3")
        assert app.view == "crates" and _column(app, 0)[0] == "app"
        await pilot.press("1", "s")  # events by duration
        assert app.sorts["events"] == "duration"
        assert _column(app, 2)[:2] == ["tokio", "serde"]
        assert "sort: duration" in _text(app.query_one("#view-bar"))
        await pilot.press("q")
        assert not app.is_running

    run(app, body)


def test_since_limits_the_events_shown(store_root: str, now: float, run: Run, until: Until) -> None:
    app = _app(store_root, now, since=150.0)

    async def body(pilot: Any) -> None:
        await until(pilot, lambda: app.polls >= 1)
        assert _column(app, 2) == ["regex_syntax", "app", "app", "app"]
        assert "since 2m30s" in _text(app.query_one("#view-bar"))

    run(app, body)


def test_store_totals_and_daemon_status(store_root: str, now: float, run: Run, until: Until) -> None:
    status = {"pid": 4242, "uptime_s": 5400, "queue": 3, "uploads_done": 10, "uploads_failed": 1,
              "downloads": 4, "prefetches": 2, "last_error": "PUT serde: 503 Slow Down", "remote": "s3"}
    app = _app(store_root, now, max_size=2_000_000, daemon_status=lambda _root: status)

    async def body(pilot: Any) -> None:
        await until(pilot, lambda: app.polls >= 1)
        store = _text(app.query_one(StoreLine))
        assert store.startswith("store 3 entries · 582.0 KiB of 1.9 MiB ")
        assert "30%" in store and "dedup saves 5.9 KiB" in store
        assert _text(app.query_one(DaemonLine)) == (
            "daemon: pid 4242, up 1h30m · queue 3 · uploaded 10 (1 failed) · downloaded 4 · prefetched 2 · "
            "last error: PUT serde: 503 Slow Down · remote s3")

    run(app, body, size=(160, 30))


def test_outcomes_read_as_words_without_colour(store_root: str, now: float, run: Run, until: Until,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NO_COLOR", "1")
    app = _app(store_root, now)

    async def body(pilot: Any) -> None:
        assert app.no_color
        await until(pilot, lambda: app.polls >= 1)
        assert _column(app, 1) == ["prefetched", "hit", "dup", "error", "remote hit", "hit", "hit", "pass",
                                   "miss", "miss"]

    run(app, body)


def test_a_large_terminal_gets_the_reason_column(store_root: str, now: float, run: Run, until: Until) -> None:
    app = _app(store_root, now)

    async def body(pilot: Any) -> None:
        await until(pilot, lambda: app.polls >= 1)
        table = app.query_one(BoardTable)
        assert [str(c.label) for c in table.columns.values()][-1] == "reason"
        assert "store: OSError" in _column(app, 6)

    run(app, body, size=(160, 50))


def test_build_scripts_are_named_after_their_package(store_root: str, now: float, run: Run,
                                                     until: Until) -> None:
    event(store_root, "miss", "build_script_build", t=now, package="serde", root="/ws/app")
    event(store_root, "local_hit", "build_script_build", t=now, package="tokio", root="/ws/app")
    event(store_root, "local_hit", "build_script_build", t=now, root="/ws/app")  # recorded before packages were
    event(store_root, "miss", "build_script_build", t=now, package="forged name\x1b[31m", root="/ws/app")
    app = _app(store_root, now)

    async def body(pilot: Any) -> None:
        await until(pilot, lambda: app.polls >= 1)
        assert _column(app, 2)[:4] == ["build_script_build", "build_script_build", "tokio (build script)",
                                       "serde (build script)"]
        await pilot.press("3")  # crates: one row each
        crates = _column(app, 0)
        assert "serde (build script)" in crates and "tokio (build script)" in crates
        assert crates.count("build_script_build") == 1
        await pilot.press("1", "slash", *"serde", "enter")
        assert "serde (build script)" in _column(app, 2)

    run(app, body, size=(160, 50))


def test_zeroing_the_statistics_zeroes_its_counts_and_keeps_the_stream(store_root: str, now: float, run: Run,
                                                                         until: Until) -> None:
    """Was (issue 25): `kache stats --zero` left the monitor counting the whole log. Its
    counts and its project and crate views now start where `kache stats` starts; the
    stream keeps the events before."""
    app = _app(store_root, now)

    async def body(pilot: Any) -> None:
        await until(pilot, lambda: app.polls >= 1)
        assert app.board.total.calls == 10 and "since zeroed" not in _text(app.query_one("#calls-line"))
        stats.zero(store_root, now=now - 1)
        event(store_root, "local_hit", "later_crate", t=now, ms=4.0, bytes=2048, saved_ms=700, root="/ws/new")
        await until(pilot, lambda: app.board.total.calls == 1)
        line = _text(app.query_one("#calls-line"))
        assert line.startswith("calls 1 (since zeroed ") and " · hits 1 · misses 0 · " in line, line
        assert len(_column(app, 2)) == 11 and _column(app, 2)[0] == "later_crate"  # the stream keeps them
        await pilot.press("3")
        await until(pilot, lambda: _column(app, 0) == ["later_crate"])

    run(app, body)


def test_statistics_zeroed_before_it_starts_are_counted_from_then(store_root: str, now: float, run: Run,
                                                                   until: Until) -> None:
    stats.zero(store_root, now=now - 150)
    app = _app(store_root, now)

    async def body(pilot: Any) -> None:
        await until(pilot, lambda: app.polls >= 1)
        assert app.board.total.calls == 4  # the events of the last 2m30s, as with --since 150
        assert len(_column(app, 2)) == 10

    run(app, body)
