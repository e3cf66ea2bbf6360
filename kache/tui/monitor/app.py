"""``kache monitor``: a live dashboard of the cache at work.

A timer polls every ``interval`` seconds in a thread worker (:func:`model.poll`): the
events appended to the log since the last poll, the store's totals (one short read-only
query) and the daemon's status. Nothing here locks the store, so builds never wait for
the monitor. Times are drawn relative to ``clock()``, which tests fix.

Keys: ``1`` ``2`` ``3`` switch between the event stream, the projects and the crates;
``/`` filters by crate or project; ``s`` cycles the sort; ``q`` quits.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any, ClassVar

from rich.text import Text
from textual import on, work
from textual.app import App, ComposeResult, ScreenStackError
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.css.query import NoMatches
from textual.reactive import reactive
from textual.widgets import DataTable, Footer, Input, Static

from kache import units
from kache.store.events import Tail
from kache.tui.monitor import model
from kache.tui.monitor.widgets.summary import CallsLine, DaemonLine, HitRateLine, StoreLine, ViewBar
from kache.tui.monitor.widgets.table import BoardTable

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["MonitorApp"]

EMPTY_HINT = ("no builds yet: export RUSTC_WRAPPER=kache, then cargo build\n"
              "(`kache init` sets cargo up for good). Each rustc call kache sees\n"
              "appears here as it happens.")


class MonitorApp(App[None]):
    """The monitor of the store at ``store_root``.

    Args:
        store_root: the local store (``cache.local_store``).
        since: show events from this many seconds before start (None: the whole log).
        max_size: ``cache.local_max_size`` in bytes, for the size bar (None: no bar).
        clock: the time source; relative times are drawn from it.
        daemon_status: returns the daemon's status for a store, or None (no daemon).
        interval: seconds between polls.
        home: shown as ``~`` in paths (default: ``$HOME``).
    """

    CSS_PATH = "monitor.tcss"
    TITLE = "kache monitor"
    ENABLE_COMMAND_PALETTE = False

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q", "quit", "Quit"),
        Binding("1", "view('events')", "Events"),
        Binding("2", "view('projects')", "Projects"),
        Binding("3", "view('crates')", "Crates"),
        Binding("slash", "filter", "Filter"),
        Binding("s", "sort", "Sort"),
        Binding("escape", "clear_filter", "Clear filter"),
        Binding("r", "poll", "Refresh", show=False),
    ]

    view: reactive[str] = reactive("events", init=False)
    """``events``, ``projects`` or ``crates``."""
    needle: reactive[str] = reactive("", init=False)
    """The filter: a substring of a crate or a project (case does not matter)."""

    def __init__(self, store_root: str, *, since: float | None = None, max_size: int | None = None,
                 clock: Callable[[], float] = time.time,
                 daemon_status: Callable[[str], dict[str, Any] | None] = model.daemon_status,
                 interval: float = 1.0, home: str | None = None) -> None:
        super().__init__()
        self.store_root = store_root
        self.since = since
        self.max_size = max_size
        self.clock = clock
        self.daemon_status = daemon_status
        self.interval = interval
        self.home = os.environ.get("HOME") if home is None else home
        self.board = model.Board()
        """Everything seen so far (the poll thread folds events in under its lock)."""
        self.sorts = {"events": model.EVENT_SORTS[0], "projects": model.TALLY_SORTS[0],
                      "crates": model.TALLY_SORTS[0]}
        self.polls = 0
        """Polls applied so far (tests wait on it)."""
        self._tail = Tail(store_root, None if since is None else clock() - since)
        self._polling = False
        self._store_exists = False
        self._rows: list[Any] = []

    # ------------------------------------------------------------------ layout

    def compose(self) -> ComposeResult:
        yield ViewBar(id="view-bar")
        with Vertical(id="summary"):
            yield StoreLine(id="store-line")
            yield CallsLine(id="calls-line")
            yield HitRateLine(id="hit-rate-line")
            yield DaemonLine(id="daemon-line")
        yield BoardTable(id="board")
        yield Static(EMPTY_HINT, id="empty")
        yield Static("", id="detail")
        yield Input(placeholder="filter: part of a crate or project name (enter keeps, escape clears)",
                    id="filter", compact=True)
        yield Footer()

    def on_mount(self) -> None:
        self.query_one(StoreLine).max_size = self.max_size
        if self.since is not None:
            self.query_one(ViewBar).since = units.format_duration(self.since)
        self.screen.set_class(True, "-empty")
        self.query_one(BoardTable).focus()
        self.set_interval(self.interval, self.action_poll)
        self.action_poll()

    # ------------------------------------------------------------------ polling

    def action_poll(self) -> None:
        """Start a poll unless one is still running (a slow disk must not pile them up)."""
        if self._polling:
            return
        self._polling = True
        self._poll()

    @work(thread=True, group="poll")
    def _poll(self) -> None:
        try:
            result = model.poll(self.board, self._tail, self.store_root, self.daemon_status)
        except Exception as e:  # never let a bad read kill the dashboard
            result = model.Poll(0, model.Totals(self._store_exists), None, f"monitor: {e}")
        try:
            self.call_from_thread(self._apply, result)
        except RuntimeError:  # the app is closing
            pass

    def _apply(self, result: model.Poll) -> None:
        self._polling = False
        try:
            self.screen.query_one(BoardTable)
        except (ScreenStackError, NoMatches):
            return  # closing: the screen has gone
        self._store_exists = result.totals.exists
        self.query_one(StoreLine).totals = result.totals
        daemon = self.query_one(DaemonLine)
        daemon.status, daemon.error = result.daemon, result.error or ""
        self.polls += 1
        self.refresh_board()

    # ------------------------------------------------------------------ drawing

    def refresh_board(self) -> None:
        """Redraw the panels and the table from the board (after a poll, a key, a resize)."""
        with self.board.lock:
            self._refresh_board(self.board, self.clock())

    def _refresh_board(self, board: model.Board, now: float) -> None:
        calls = self.query_one(CallsLine)
        calls.remote_hits, calls.total, calls.zeroed = board.remote_hits, board.total, board.counts_from
        rate = self.query_one(HitRateLine)
        rate.now, rate.rate, rate.buckets = now, board.total.hit_rate, board.buckets
        bar = self.query_one(ViewBar)
        bar.view, bar.sort, bar.needle = self.view, self.sorts[self.view], self.needle
        table = self.query_one(BoardTable)
        sort = self.sorts[self.view]
        if self.view == "events":
            rows: list[Any] = board.events(self.needle, sort)
            table.show_events(rows, now, self.home)
        else:
            rows = board.tallies(self.view, self.needle, sort)
            table.show_tallies(self.view, rows, self.home)
        self._rows = rows
        empty = not rows
        self.screen.set_class(empty, "-empty")
        if empty:
            self.query_one("#empty", Static).update(self._empty_hint())
        self._show_detail(table.cursor_row)

    def _show_detail(self, index: int) -> None:
        """Say everything about the highlighted row, untruncated, on the line below the table."""
        detail = self.query_one("#detail", Static)
        if not 0 <= index < len(self._rows):
            detail.update("")
            return
        row = self._rows[index]
        if isinstance(row, model.Event):
            parts = [row.crate, model.OUTCOME_LABELS.get(row.outcome, row.outcome)
                     + (f" ({row.reason})" if row.reason else "")]
            if row.ms is not None:
                parts.append(f"took {units.format_duration(row.ms / 1000)}")
            parts += [units.format_ago(self.clock() - row.t), model.short_path(row.root, self.home)]
        else:
            name = model.short_path(row.name, self.home) if self.view == "projects" else row.name
            parts = [name, f"{row.calls:,} calls", f"hit rate {model.percent(row.hit_rate)}",
                     f"saved {units.format_duration(row.saved_ms / 1000) if row.saved_ms else '0s'}",
                     f"last {units.format_ago(self.clock() - row.last)}"]
        detail.update(Text(" · ".join(parts)))

    @on(DataTable.RowHighlighted, "#board")
    def _row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._show_detail(event.cursor_row)

    def _empty_hint(self) -> str:
        if self.board.total.calls == 0:
            hint = EMPTY_HINT
            if self.since is not None:
                window = units.format_duration(self.since)
                hint += f"\n(showing the last {window}; without --since, all of it)"
            if not self._store_exists:
                hint += f"\nstore: {model.short_path(self.store_root, self.home)} (not created yet)"
            return hint
        return f"nothing matches {self.needle!r}: escape clears the filter"

    def on_resize(self) -> None:
        self.call_after_refresh(self.refresh_board)

    def watch_view(self) -> None:
        self.refresh_board()

    def watch_needle(self) -> None:
        self.refresh_board()
        self.refresh_bindings()

    # ------------------------------------------------------------------ keys

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Offer "clear filter" only while there is a filter to clear."""
        if action == "clear_filter":
            return bool(self.needle) or self.screen.has_class("-filtering")
        return True

    def action_view(self, view: str) -> None:
        """Show ``events``, ``projects`` or ``crates``."""
        self.view = view

    def action_sort(self) -> None:
        """Cycle the current view's sort key."""
        keys = model.EVENT_SORTS if self.view == "events" else model.TALLY_SORTS
        self.sorts[self.view] = keys[(keys.index(self.sorts[self.view]) + 1) % len(keys)]
        self.refresh_board()

    def action_filter(self) -> None:
        """Open the filter input."""
        self.screen.set_class(True, "-filtering")
        self.query_one("#filter", Input).focus()
        self.refresh_bindings()

    def action_clear_filter(self) -> None:
        """Clear the filter and close its input."""
        self.query_one("#filter", Input).value = ""
        self.needle = ""
        self._close_filter()

    def _close_filter(self) -> None:
        self.screen.set_class(False, "-filtering")
        self.query_one(BoardTable).focus()
        self.refresh_bindings()

    @on(Input.Changed, "#filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        self.needle = event.value.strip()

    @on(Input.Submitted, "#filter")
    def _filter_submitted(self) -> None:
        self._close_filter()
