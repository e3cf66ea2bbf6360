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
    from kache.init_steps import (
        client_step,
        override_step,
        service_manager,
        starter_config_step,
        wrapper_step,
    )

    exe = kache_executable()
    steps = [wrapper_step(exe)]
    override = override_step(exe)  # what wins over the file the wrapper step writes
    if override is not None:
        steps.append(override)
    steps.append(starter_config_step())
    if not no_service:
        steps += service_steps()
        if not no_client and service_manager() is not None:
            steps.append(client_step(exe))
    interactive = sys.stdin.isatty() and not yes and not dry_run
    changed = 0
    failed: list[tuple[str, str]] = []  # (step, why)
    service_missing = ""  # why no daemon service runs, when its step did not make one
    for step in steps:
        if step.name == "native client" and service_missing and not step.ok:
            # the client asks the daemon: without the service it only adds a hop
            click.echo(f"skipped  {step.name}: {service_missing}, so kache stays cargo's wrapper (the client "
                       "without a daemon only hands every call to kache)")
            continue
        if step.ok:
            click.echo(f"{click.style('ok', fg='green')}       {step.name}: {step.detail}")
            continue
        if step.apply is None:
            click.echo(f"{click.style('fail', fg='red')}     {step.name}: {step.detail}")
            failed.append((step.name, step.detail))
            continue
        if dry_run:
            click.echo(f"{click.style('would', fg='yellow')}    {step.name}: {step.detail}")
            continue
        if interactive and not click.confirm(f"{step.name}: {step.detail}?", default=True):
            click.echo(f"skipped  {step.name}")
            if step.name == "daemon service":
                service_missing = "the daemon service was not installed"
            continue
        try:
            step.apply()
        except Exception as e:  # noqa: BLE001 - report and go on with the other steps
            first, *rest = str(e).splitlines() or [type(e).__name__]
            click.echo(f"{click.style('fail', fg='red')}     {step.name}: {first}")
            for line in rest:
                click.echo(f"         {line}")
            failed.append((step.name, first))
            if step.name == "daemon service":
                service_missing = "the daemon service step failed"
            continue
        changed += 1
        click.echo(f"{click.style('changed', fg='yellow')}  {step.name}: {step.done or step.detail}")
    if not dry_run:
        _summary(changed, failed)
    if failed:
        raise SystemExit(1)


def _summary(changed: int, failed: list[tuple[str, str]]) -> None:
    """The last lines: what changed, and for each failed step what to do."""
    if not failed:
        click.echo(f"\n{changed} change(s); all set: run `cargo build`, then `kache stats`")
        return
    names = ", ".join(name for name, _ in failed)
    click.echo(f"\n{changed} change(s); {len(failed)} step(s) failed: {names}")
    for name, _why in failed:
        click.echo(f"  {name}: {_WHAT_TO_DO.get(name, 'see the reason above, fix it, then run `kache init` again')}")


_WHAT_TO_DO = {
    "cargo wrapper": "fix cargo's config named above by hand, then run `kache init` again",
    "user config": "see the reason above (a directory you cannot write?), then run `kache init` again",
    "wrapper in effect": "do what the line above says (kache does not edit your environment or a project's "
                         "files), then run `kache doctor` to check",
    "daemon service": "kache works without it (with a remote, builds start the daemon when they need it; "
                      "`kache daemon start` starts it by hand); fix the reason above and run `kache init` again, "
                      "or `kache init --no-service` to stop trying",
    "native client": "kache stays cargo's wrapper (it works, a little slower per hit); `kache daemon client` "
                     "builds the client by hand",
}


def service_steps() -> list[Step]:
    """The daemon service step (a no-op step where no service manager runs)."""
    from kache.init_steps import service_step

    return [service_step()]


COMMANDS: list[click.Command] = [init]
