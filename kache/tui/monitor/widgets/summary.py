"""One-line panels above the monitor's table: views, store, calls, hit rate, daemon.

Each takes its data through a reactive set by the app and renders words first, colour
second, so a terminal without colour (``NO_COLOR``) reads the same.
"""

from __future__ import annotations

import time
from typing import Any

from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget

from kache import units
from kache.tui.monitor.model import VIEWS, Tally, Totals, daemon_line, hit_rate_series, percent

__all__ = ["ViewBar", "StoreLine", "CallsLine", "HitRateLine", "DaemonLine", "GROUP_STYLES", "MONO_STYLES",
           "group_style"]

GROUP_STYLES = {"hit": "green", "miss": "yellow", "error": "bold red", "passthrough": "dim"}
"""Colour of each outcome group: hits green, misses yellow, errors red, pass-through dim."""
MONO_STYLES = {"hit": "", "miss": "", "error": "bold reverse", "passthrough": "dim"}
"""The same without colour (``NO_COLOR``): red turns dark grey there, so errors stand out
by reverse video instead."""


def group_style(group: str, no_color: bool) -> str:
    """The style of an outcome group, with or without colour."""
    return (MONO_STYLES if no_color else GROUP_STYLES)[group]

_SPARKS = "▁▂▃▄▅▆▇█"


class PanelLine(Widget):
    """A one-line panel."""

    DEFAULT_CSS = """
    PanelLine {
        height: 1;
        width: 1fr;
        padding: 0 1;
    }
    """


class ViewBar(PanelLine):
    """The title, the views (the current one in brackets), the sort key and the filter."""

    DEFAULT_CSS = """
    ViewBar {
        height: 1;
        padding: 0 1;
        background: $panel;
    }
    """

    view: reactive[str] = reactive("events")
    sort: reactive[str] = reactive("time")
    needle: reactive[str] = reactive("")
    since: reactive[str] = reactive("")

    def render(self) -> Text:
        text = Text.assemble(("kache monitor", "bold"), "  ")
        for i, name in enumerate(VIEWS, 1):
            if name == self.view:
                text.append(f"[{i} {name}]", style="bold reverse")
            else:
                text.append(f" {i} {name} ")
            text.append(" ")
        text.append(f" sort: {self.sort}")
        if self.needle:
            text.append("  filter: ")
            text.append(self.needle, style="bold")
        if self.since:
            text.append(f"  since {self.since}")
        text.truncate(max(1, self.size.width - 2), overflow="ellipsis")
        return text


class StoreLine(PanelLine):
    """Entries, size against ``local_max_size`` as a bar, and what dedup saves."""

    totals: reactive[Totals | None] = reactive(None)
    max_size: reactive[int | None] = reactive(None)

    def render(self) -> Text:
        t = self.totals
        if t is None:
            return Text("store: reading…", style="dim")
        if not t.exists:
            return Text("store: not created yet (it appears with the first cached build)", style="dim")
        head = Text.assemble(("store ", "bold"), f"{t.entries:,} entries · ",
                             units.format_size(t.physical_bytes))
        tail = Text(f" · dedup saves {units.format_size(t.dedup_saved_bytes)}")
        if self.max_size:
            share = t.physical_bytes / self.max_size
            head.append(f" of {units.format_size(self.max_size)} ")
            room = self.size.width - 2 - len(head) - len(tail) - 7
            bar_width = max(8, min(40, room))
            filled = min(bar_width, round(share * bar_width))
            style = "red" if share >= 0.95 else "yellow" if share >= 0.8 else "green"
            head.append("█" * filled, style=style)
            head.append("░" * (bar_width - filled), style="dim")
            head.append(f" {share * 100:.0f}%")
        head.append_text(tail)
        head.truncate(max(1, self.size.width - 2), overflow="ellipsis")
        return head


class CallsLine(PanelLine):
    """Calls by outcome group and the compile time hits saved."""

    total: reactive[Tally | None] = reactive(None, always_update=True)
    remote_hits: reactive[int] = reactive(0)
    zeroed: reactive[float | None] = reactive(None)
    """When ``kache stats --zero`` zeroed the counts (None: never)."""

    def render(self) -> Text:
        t = self.total or Tally("")
        text = Text.assemble(("calls ", "bold"), f"{t.calls:,}")
        if self.zeroed is not None:
            text.append(time.strftime(" (since zeroed %Y-%m-%d %H:%M)", time.localtime(self.zeroed)), style="dim")
        text.append(" · hits ")
        text.append(f"{t.hits:,}", style=group_style("hit", self.app.no_color))
        if self.remote_hits:
            text.append(f" ({self.remote_hits:,} remote)")
        text.append(" · misses ")
        text.append(f"{t.misses:,}", style=group_style("miss", self.app.no_color))
        text.append(f" · pass {t.passthrough:,} · errors ")
        text.append(f"{t.errors:,}", style=group_style("error", self.app.no_color) if t.errors else "")
        text.append(f" · saved {units.format_duration(t.saved_ms / 1000) if t.saved_ms else '0s'}")
        text.truncate(max(1, self.size.width - 2), overflow="ellipsis")
        return text


class HitRateLine(PanelLine):
    """The overall hit rate, then one bar per minute (blank: no cacheable call then)."""

    rate: reactive[float | None] = reactive(None)
    buckets: reactive[dict[int, list[int]]] = reactive(dict, always_update=True)
    now: reactive[float] = reactive(0.0)

    def render(self) -> Text:
        head = Text.assemble(("hit rate ", "bold"), f"{percent(self.rate):>4} ")
        suffix = " per min"
        n = max(0, self.size.width - 2 - len(head) - len(suffix) - 2)
        series = hit_rate_series(self.buckets, self.now, n) if n else []
        if not any(r is not None for r in series):
            quiet = "(no cacheable calls yet)" if self.rate is None else "(none lately)"
            head.append(quiet, style="dim")
            return head
        head.append("▕", style="dim")
        for r in series:
            if r is None:
                head.append(" ")
            else:
                style = "green" if r >= 0.8 else "yellow" if r >= 0.5 else "red"
                head.append(_SPARKS[min(len(_SPARKS) - 1, int(r * (len(_SPARKS) - 1) + 0.5))], style=style)
        head.append("▏", style="dim")
        head.append(suffix, style="dim")
        return head


class DaemonLine(PanelLine):
    """The daemon's queue and transfers, or that it is not running."""

    status: reactive[dict[str, Any] | None] = reactive(None, always_update=True)
    error: reactive[str] = reactive("")

    def render(self) -> Text:
        if self.error:
            text = Text(self.error, style="red")
        else:
            line = daemon_line(self.status)
            text = Text(line, style="dim" if self.status is None else "")
            if self.status and self.status.get("last_error"):
                text.highlight_words(["last error:"], style="red")
        text.truncate(max(1, self.size.width - 2), overflow="ellipsis")
        return text
