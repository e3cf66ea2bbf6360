"""Starting the two terminal UIs from the CLI: ``kache``/``kache monitor`` and ``kache config``.

textual is imported here, inside the functions, so ``kache --help`` and every other
command stay fast. Both refuse to start without a terminal rather than hang.
"""

from __future__ import annotations

import sys

import click

from kache import settings as settings_mod
from kache import units
from kache.errors import SettingsError

__all__ = ["run_monitor", "run_editor"]


def _require_terminal(what: str, instead: str) -> None:
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise click.ClickException(f"{what} needs a terminal: standard input or output is not one; {instead}")


def run_monitor(since: str | None) -> None:
    """Open the live monitor of the configured store (events of the last ``since``)."""
    seconds = None
    if since is not None:
        try:
            seconds = units.parse_duration(since)
        except units.UnitError as e:
            raise click.BadParameter(str(e), param_hint="--since") from None
    _require_terminal("kache monitor", "for numbers in a script, use `kache stats --json`")
    s = settings_mod.load_checked()
    try:
        max_size = s.converted("cache.local_max_size")
    except SettingsError:
        max_size = None  # a bad size only costs the bar; `kache config validate` names it
    from kache.tui.monitor.app import MonitorApp

    MonitorApp(str(s.local_store), since=seconds, max_size=max_size).run()


def run_editor() -> None:
    """Open the config editor on the user's file."""
    _require_terminal("kache config", "use `kache config show` and edit `kache config path` by hand")
    from kache.tui.config.app import ConfigApp

    ConfigApp().run()
