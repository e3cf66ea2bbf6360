"""``kache demo`` (and, later, init / doctor / clean): getting started and upkeep."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import click

from kache.selfexec import kache_executable

__all__ = ["COMMANDS"]


@click.command()
@click.argument("directory", required=False, type=click.Path(file_okay=False, path_type=Path))
def demo(directory: Path | None) -> None:
    """Build a small bundled workspace twice and show the cache at work.

    Writes a workspace (a library with a build script, a proc-macro, a binary; no
    registry dependencies) to DIRECTORY (default: a new temporary directory), builds it
    through kache with a private store, runs `cargo clean`, builds again, and prints the
    two times and the hits.

    \b
    Example:
      kache demo /tmp/kache-demo
    """
    from kache.demo import run_demo

    if directory is None:
        directory = Path(tempfile.mkdtemp(prefix="kache-demo-"))
    exe = kache_executable()
    report = run_demo(directory, exe, say=lambda line: click.echo(click.style(line, dim=True)))
    click.echo()
    click.echo(f"cold build    {report.cold_s:6.2f} s   (every crate compiled, outputs stored)")
    click.echo(f"after clean   {report.warm_s:6.2f} s   ({report.hits} of {report.cacheable} cacheable units "
               f"restored from the cache; the binary itself is compiled)")
    click.echo(f"speed-up      {report.speedup:6.1f}x")
    if report.hits < report.cacheable:
        click.echo(f"not from the cache: {', '.join(report.compiled_warm)}", err=True)
    click.echo()
    click.echo("The demo binary says:")
    for line in report.output.splitlines():
        click.echo(f"  {line}")
    click.echo()
    click.echo("Use kache for your own builds:")
    click.echo(f"  export RUSTC_WRAPPER={exe}")
    click.echo("  cargo build")
    click.echo("  kache stats")
    click.echo("or for good, in ~/.cargo/config.toml:")
    click.echo(f'  [build]\n  rustc-wrapper = "{exe}"')
    if report.hits < report.cacheable:
        raise SystemExit(1)


COMMANDS = [demo]


@click.command()
@click.argument("paths", nargs=-1, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--dry-run", is_flag=True, help="Only show what would be deleted.")
@click.option("--yes", "-y", is_flag=True, help="Delete without asking.")
@click.option("--json", "as_json", is_flag=True, help="Print the breakdown as JSON (implies --dry-run unless --yes).")
def clean(paths: tuple[Path, ...], dry_run: bool, yes: bool, as_json: bool) -> None:
    """Find cargo target/ directories and delete them, with a breakdown.

    Looks under PATHS (default: the current directory) for directories cargo marked as
    its own (CACHEDIR.TAG). For each it shows the size, when it was last used, and how
    much of it is hardlinked from the kache store: those bytes stay on disk (in the
    store) until `kache gc` evicts them.

    \b
    Example:
      kache clean --dry-run ~/src
      kache clean -y ~/src/old-project
    """
    import time

    from kache import settings as settings_mod
    from kache import units
    from kache.cli.output import echo_json, echo_table
    from kache.target_dirs import delete, find_target_dirs, measure, store_inodes

    roots = [str(p) for p in paths] or [os.getcwd()]
    store_root = settings_mod.load().get("cache.local_store")
    blob_inodes = store_inodes(store_root)
    found = [measure(p, blob_inodes) for p in find_target_dirs(roots)]
    now = time.time()
    if as_json:
        echo_json([{"path": t.path, "bytes": t.size, "shared_with_store_bytes": t.shared_bytes,
                    "frees_bytes": t.frees, "files": t.files, "last_used": t.last_used} for t in found])
        if not yes:
            return
    elif not found:
        click.echo(f"no cargo target directories under {', '.join(roots)}")
        return
    else:
        rows = [[t.path, units.format_size(t.size), units.format_size(t.shared_bytes),
                 units.format_ago(now - t.last_used) if t.last_used else "—"] for t in found]
        echo_table(["target dir", "size", "in kache store", "last used"], rows)
        total = sum(t.size for t in found)
        frees = sum(t.frees for t in found)
        click.echo(f"\n{len(found)} target dir(s), {units.format_size(total)}; deleting frees "
                   f"{units.format_size(frees)} now (the rest is shared with the kache store)")
    if dry_run:
        return
    if not yes and not click.confirm(f"Delete these {len(found)} directories?", default=False):
        click.echo("nothing deleted")
        return
    from rich.progress import Progress

    problems: list[str] = []
    with Progress(transient=True) as progress:
        task = progress.add_task("deleting", total=len(found))
        for t in found:
            progress.update(task, description=f"deleting {t.path}")
            problems += delete(t.path)
            progress.advance(task)
    for p in problems:
        click.echo(f"kache: warning: could not delete {p}", err=True)
    if not as_json:
        click.echo(f"deleted {sum(not os.path.exists(t.path) for t in found)} of {len(found)} target dir(s)")
    if problems:
        raise SystemExit(1)


COMMANDS.append(clean)


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


def service_steps() -> list:
    """The daemon service step (a no-op step where no service manager runs)."""
    from kache.init_steps import service_step

    return [service_step()]


COMMANDS.append(init)


@click.command()
@click.option("--fix", is_flag=True, help="Repair what can be repaired, including a migration from sccache.")
@click.option("--purge-sccache", is_flag=True, help="With --fix: delete sccache's cache directory.")
@click.option("--verify", is_flag=True, help="Re-hash every blob of the store (slow on a big store).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def doctor(fix: bool, purge_sccache: bool, verify: bool, as_json: bool) -> None:
    """Check the setup, one line per check, with the fix.

    Checks: kache on PATH, the wrapper cargo will run (kache, not sccache), the
    config, the store (writable, same filesystem as your projects, index and blobs
    consistent, free disk), the daemon, the remote (when configured), rustc. Exits 1
    when a check fails. --fix repairs what it can. Blobs are checked by their stamps
    (re-hashed when they changed since kache last verified them); --verify re-hashes
    them all.

    \b
    Example:
      kache doctor
      kache doctor --fix --purge-sccache
      kache doctor --verify
    """
    from kache import units
    from kache.cli.output import echo_json
    from kache.doctor import FAIL, OK, WARN, run_checks, sccache_dir

    if purge_sccache and not fix:
        raise click.UsageError("--purge-sccache only goes with --fix")
    checks = run_checks(verify=verify)
    fixed: list[str] = []
    if fix:
        for c in checks:
            if c.status != OK and c.fix is not None:
                try:
                    fixed.append(f"{c.name}: {c.fix()}")
                except Exception as e:  # noqa: BLE001
                    fixed.append(f"{c.name}: could not fix ({e})")
        if purge_sccache:
            d = sccache_dir()
            if d.is_dir():
                size = sum(f.stat().st_size for f in d.rglob("*") if f.is_file())
                shutil.rmtree(d, ignore_errors=True)
                fixed.append(f"sccache: deleted {d}, freeing {units.format_size(size)}")
            else:
                fixed.append(f"sccache: no cache directory at {d}")
        if fixed:
            checks = run_checks(verify=verify)  # report the state after the repairs
    if as_json:
        echo_json({"checks": [c.to_json() for c in checks], "fixed": fixed,
                   "ok": not any(c.status == FAIL for c in checks)})
    else:
        colour = {OK: "green", WARN: "yellow", FAIL: "red"}
        for c in checks:
            line = f"{click.style(c.status.ljust(4), fg=colour[c.status])}  {c.name}: {c.detail}"
            if c.status != OK and c.fix_hint:
                line += f"\n      fix: {c.fix_hint}"
            click.echo(line)
        for f in fixed:
            click.echo(f"{click.style('fixed', fg='green')} {f}")
    if any(c.status == FAIL for c in checks):
        raise SystemExit(1)


COMMANDS.append(doctor)
