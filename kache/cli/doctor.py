"""``kache doctor``: check the setup, one line per check, and ``--fix`` what can be fixed.

The checks are :mod:`kache.doctor`.
"""

from __future__ import annotations

import shutil

import click

__all__ = ["COMMANDS"]


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


COMMANDS: list[click.Command] = [doctor]
