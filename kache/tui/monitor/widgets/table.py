"""The monitor's table: the event stream, or the per-project / per-crate breakdown."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.text import Text
from textual.widgets import DataTable

from kache import units
from kache.tui.monitor.model import OUTCOME_LABELS, Event, Tally, percent, short_path
from kache.tui.monitor.widgets.summary import group_style

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["BoardTable", "Column"]

Column = tuple[str, int]
"""A column's heading and width (0: takes the room left; shared by such columns)."""

_EVENT_COLUMNS: list[Column] = [("when", 5), ("outcome", 10), ("crate", 0), ("took", 6), ("size", 9),
                                ("project", 0)]
_REASON: Column = ("reason", 24)
WIDE = 110
"""From this width on, the stream has a reason column (below it, the detail line says it)."""
_TALLY_COLUMNS: list[Column] = [("", 0), ("calls", 6), ("hits", 6), ("misses", 6), ("pass", 5),
                                ("errors", 6), ("hit %", 5), ("saved", 7)]


def _right(text: str, style: str = "") -> Text:
    return Text(text, style=style, justify="right")


def _clip(text: str, width: int, keep_end: bool = False) -> str:
    """Shorten to ``width`` with an ellipsis (at the start for paths: the end says most)."""
    if len(text) <= width:
        return text
    if width <= 1:
        return text[:width]
    return "…" + text[-(width - 1):] if keep_end else text[:width - 1] + "…"


class BoardTable(DataTable[Text | str]):
    """A row-cursor table rebuilt on each poll; the cursor keeps its row number."""

    DEFAULT_CSS = """
    BoardTable {
        height: 1fr;
        scrollbar-size-vertical: 1;
    }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=False, show_cursor=True)
        self._shape: tuple[str, ...] = ()

    @property
    def _width(self) -> int:
        """The table's width; the screen's while it is hidden (it spans the screen)."""
        return self.size.width or self.app.size.width

    def _widths(self, columns: Sequence[Column]) -> list[int]:
        """Column widths; the flexible ones share what the fixed ones leave (at least 10)."""
        fixed = sum(w for _, w in columns if w)
        flexible = [i for i, (_, w) in enumerate(columns) if not w]
        # each column has one cell of padding on both sides, and a scrollbar may take one
        room = max(0, self._width - fixed - 2 * len(columns) - 1)
        share = max(8, room // max(1, len(flexible)))
        return [w or share for _, w in columns]

    def _show(self, columns: Sequence[Column], rows: list[list[Text | str]], shape: tuple[str, ...]) -> None:
        row = self.cursor_row
        if shape != self._shape:
            self.clear(columns=True)
            for (label, _), width in zip(columns, self._widths(columns), strict=True):
                self.add_column(label, width=width)
            self._shape = shape
            row = 0
        else:
            self.clear()
        self.add_rows(rows)
        if rows:
            self.move_cursor(row=min(row, len(rows) - 1), animate=False, scroll=False)

    def show_events(self, events: Sequence[Event], now: float, home: str | None) -> None:
        """The stream: when, outcome (words, coloured), crate, wall time, size, project, reason."""
        columns = _EVENT_COLUMNS + [_REASON] if self._width >= WIDE else _EVENT_COLUMNS
        widths = self._widths(columns)
        crate_w, project_w = widths[2], widths[5]
        rows: list[list[Text | str]] = []
        for ev in events:
            style = group_style(ev.group, self.app.no_color)
            row: list[Text | str] = [
                _right(units.format_ago(now - ev.t).removesuffix(" ago"), "dim"),
                Text(OUTCOME_LABELS.get(ev.outcome, ev.outcome), style=style),
                _clip(ev.crate, crate_w),
                _right(units.format_duration(ev.ms / 1000) if ev.ms is not None else ""),
                _right(units.format_size(ev.bytes) if ev.bytes else ""),
                _clip(short_path(ev.root, home), project_w, keep_end=True),
            ]
            if len(columns) > len(_EVENT_COLUMNS):
                row.append(Text(_clip(ev.reason, widths[6]), style="dim"))
            rows.append(row)
        self._show(columns, rows, ("events", str(self._width)))

    def show_tallies(self, view: str, tallies: Sequence[Tally], home: str | None) -> None:
        """The breakdown: one row per project (workspace) or crate."""
        columns = [("project" if view == "projects" else "crate", 0), *_TALLY_COLUMNS[1:]]
        name_w = self._widths(columns)[0]
        rows: list[list[Text | str]] = []
        no_color = self.app.no_color
        for t in tallies:
            name = short_path(t.name, home) if view == "projects" else t.name
            rows.append([
                _clip(name, name_w, keep_end=view == "projects"),
                _right(f"{t.calls:,}"),
                _right(f"{t.hits:,}", group_style("hit", no_color) if t.hits else ""),
                _right(f"{t.misses:,}", group_style("miss", no_color) if t.misses else ""),
                _right(f"{t.passthrough:,}", group_style("passthrough", no_color)),
                _right(f"{t.errors:,}", group_style("error", no_color) if t.errors else ""),
                _right(percent(t.hit_rate)),
                _right(units.format_duration(t.saved_ms / 1000) if t.saved_ms else "—"),
            ])
        self._show(columns, rows, (view, str(self._width)))
