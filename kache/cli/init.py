"""``kache init``: make cargo use kache, one checked step at a time.

The steps are :mod:`kache.init_steps` (``kache doctor --fix`` runs them too).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import click

from kache.selfexec import kache_executable

if TYPE_CHECKING:
    from kache.init_steps import Step

__all__ = ["COMMANDS"]


@click.command()
@click.option("--dry-run", is_flag=True, help="Show what would change; change nothing.")
@click.option("--no-service", is_flag=True, help="Do not install or start the daemon service.")
@click.option("--no-client", is_flag=True, help="Keep kache as cargo's wrapper; do not build the native client.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask; apply every change.")
def init(dry_run: bool, no_service: bool, no_client: bool, yes: bool) -> None:
    """Set kache up: cargo's rustc-wrapper, a starter config, the daemon service and,
    with the service, the native client.

    The client (what `kache daemon client` builds, with your rustc, in a few seconds)
    then becomes cargo's wrapper: it asks the daemon without starting Python and hands
    everything else to kache.

    Safe to run again: it checks each step first, changes only what is not right yet,
    and says what it changed and what already was. Asks before each change when run in
    a terminal (unless --yes).

    \b
    Example:
      kache init --dry-run
      kache init --yes --no-service
    """
    from kache.init_steps import client_step, service_manager, starter_config_step, wrapper_step

    exe = kache_executable()
    steps = [wrapper_step(exe), starter_config_step()]
    if not no_service:
        steps += service_steps()
        if not no_client and service_manager() is not None:
            steps.append(client_step(exe))
    interactive = sys.stdin.isatty() and not yes and not dry_run
    changed = failed = 0
    for step in steps:
        if step.ok:
            click.echo(f"{click.style('ok', fg='green')}       {step.name}: {step.detail}")
            continue
        if step.apply is None:
            click.echo(f"{click.style('fail', fg='red')}     {step.name}: {step.detail}")
            failed += 1
            continue
        if dry_run:
            click.echo(f"{click.style('would', fg='yellow')}    {step.name}: {step.detail}")
            continue
        if interactive and not click.confirm(f"{step.name}: {step.detail}?", default=True):
            click.echo(f"skipped  {step.name}")
            continue
        try:
            step.apply()
        except Exception as e:  # noqa: BLE001 - report and go on with the other steps
            click.echo(f"{click.style('fail', fg='red')}     {step.name}: {e}")
            failed += 1
            continue
        changed += 1
        click.echo(f"{click.style('changed', fg='yellow')}  {step.name}: {step.detail}")
    if not dry_run:
        click.echo(f"\n{changed} change(s); " + ("all set: run `cargo build`, then `kache stats`" if not failed
                                                 else f"{failed} step(s) failed; see above"))
    if failed:
        raise SystemExit(1)


def service_steps() -> list[Step]:
    """The daemon service step (a no-op step where no service manager runs)."""
    from kache.init_steps import service_step

    return [service_step()]


COMMANDS: list[click.Command] = [init]
