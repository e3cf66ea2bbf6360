"""``kache monitor`` (also bare ``kache``): the live dashboard.

The command only parses ``--since``; :mod:`kache.cli.tui` checks for a terminal and
opens :class:`kache.tui.monitor.app.MonitorApp` (textual is imported there, not here).
"""

from __future__ import annotations

import click

__all__ = ["COMMANDS"]


@click.command()
@click.option("--since", metavar="DUR", help="Show events from this long ago (e.g. 1h, 7d).")
def monitor(since: str | None) -> None:
    """Live dashboard of build events, store totals and transfers.

    Keys: 1 events, 2 projects, 3 crates, / filter, s sort, q quit.

    \b
    Example:
      kache monitor --since 1h
    """
    from kache.cli.tui import run_monitor

    run_monitor(since)


COMMANDS: list[click.Command] = [
    monitor,
]
