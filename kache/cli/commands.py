"""The command tree of kache that later work fills in.

Each command here is registered with its real flags, so ``--help`` is already right,
and says clearly that it is not built yet (exit status 2).
"""

from __future__ import annotations

import click

from kache.errors import NotImplementedYet

__all__ = ["COMMANDS"]


def _unfinished(name: str) -> None:
    raise NotImplementedYet(f"`kache {name}` is not implemented yet in this version of kache")


@click.command()
@click.option("--since", metavar="DUR", help="Show events from this long ago (e.g. 1h, 7d).")
def monitor(since: str | None) -> None:
    """Live dashboard of build events, store totals and transfers.

    \b
    Example:
      kache monitor --since 1h
    """
    _unfinished("monitor")


@click.group(invoke_without_command=True)
@click.pass_context
def daemon(ctx: click.Context) -> None:
    """Show the daemon's status; subcommands run, start, stop and install it.

    \b
    Example:
      kache daemon start
    """
    if ctx.invoked_subcommand is None:
        _unfinished("daemon")


def _daemon_command(name: str, summary: str) -> click.Command:
    @click.command(name, help=f"{summary}\n\n\b\nExample:\n  kache daemon {name}")
    def command() -> None:
        _unfinished(f"daemon {name}")

    return command


for _name, _summary in [
    ("run", "Run the daemon in the foreground."),
    ("start", "Start the daemon in the background and return at once."),
    ("stop", "Stop a running daemon."),
    ("log", "Follow the daemon's log."),
    ("install", "Install the daemon as a systemd user service or launchd agent."),
    ("uninstall", "Remove the daemon service."),
]:
    daemon.add_command(_daemon_command(_name, _summary))

COMMANDS: list[click.Command] = [
    monitor, daemon,
]
