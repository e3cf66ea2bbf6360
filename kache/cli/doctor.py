"""``kache doctor``: check the setup, one line per check, and ``--fix`` what can be fixed.

The checks are :mod:`kache.doctor`.
"""

from __future__ import annotations

import shutil
import sys

import click

__all__ = ["COMMANDS"]


@click.command()
@click.option("--fix", is_flag=True, help="Repair what can be repaired, including a migration from sccache.")
@click.option("--purge-sccache", is_flag=True,
              help="With --fix: delete sccache's local disk cache (SCCACHE_DIR), only when it holds nothing else.")
@click.option("--yes", "-y", is_flag=True, help="With --purge-sccache: delete without asking.")
@click.option("--verify", is_flag=True, help="Re-hash every blob of the store (slow on a big store).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def doctor(fix: bool, purge_sccache: bool, yes: bool, verify: bool, as_json: bool) -> None:
    """Check the setup, one line per check, with the fix.

    Checks: kache on PATH, the wrapper cargo will run (kache, not sccache), the
    config, the store (writable, same filesystem as your projects, index and blobs
    consistent, free disk), the daemon, the remote (when configured), rustc. Exits 1
    when a check fails (with --fix: still fails after it), or when --purge-sccache
    leaves the directory. --fix repairs what it can; what it cannot (a wrapper set in your environment or in a
    project's .cargo/config.toml wins over the file it writes) is named with what to do.
    Blobs are checked by their stamps (re-hashed when they changed since kache last
    verified them); --verify re-hashes them all.

    --purge-sccache deletes sccache's local disk cache (SCCACHE_DIR, else
    ~/.cache/sccache) only when every entry in it is one sccache makes (the hex-sharded
    entries, preprocessor/, .sccachetmp files); anything else, or a symbolic link,
    and it is left alone. Asks first when run in a terminal, unless --yes.

    \b
    Example:
      kache doctor
      kache doctor --fix --purge-sccache
      kache doctor --verify
    """
    from kache.cli.output import echo_json
    from kache.doctor import FAIL, OK, WARN, run_checks

    if purge_sccache and not fix:
        raise click.UsageError("--purge-sccache only goes with --fix")
    if yes and not purge_sccache:
        raise click.UsageError("--yes only goes with --purge-sccache")
    checks = run_checks(verify=verify)
    fixed: list[tuple[str, str]] = []  # (check, what was done)
    not_fixed: list[str] = []
    if fix:
        for c in checks:
            if c.status != OK and c.fix is not None:
                try:
                    fixed.append((c.name, c.fix()))
                except Exception as e:  # noqa: BLE001
                    fixed.append((c.name, f"could not fix ({e})"))
        if purge_sccache:
            done, text = _purge_sccache(yes)
            if done:
                fixed.append(("sccache", text))
            else:
                not_fixed.append(f"sccache: {text}")
        if fixed:
            checks = run_checks(verify=verify)  # report the state after the repairs
            failing = {c.name: c for c in checks if c.status == FAIL}
            for name, text in list(fixed):
                if name in failing:  # what it changed is not what decides: do not call it fixed
                    fixed.remove((name, text))
                    not_fixed.append(f"{name}: {text}, but the check still fails: {failing[name].detail}")
    if as_json:
        echo_json({"checks": [c.to_json() for c in checks], "fixed": [f"{n}: {t}" for n, t in fixed],
                   "not_fixed": not_fixed, "ok": not any(c.status == FAIL for c in checks) and not not_fixed})
    else:
        colour = {OK: "green", WARN: "yellow", FAIL: "red"}
        for c in checks:
            line = f"{click.style(c.status.ljust(4), fg=colour[c.status])}  {c.name}: {c.detail}"
            if c.status != OK and c.fix_hint:
                line += f"\n      fix: {c.fix_hint}"
            click.echo(line)
        for name, text in fixed:
            click.echo(f"{click.style('fixed', fg='green')} {name}: {text}")
        for text in not_fixed:
            click.echo(f"{click.style('not fixed', fg='red')} {text}")
    if any(c.status == FAIL for c in checks) or not_fixed:
        raise SystemExit(1)


def _interactive() -> bool:
    return sys.stdin.isatty()


def _purge_sccache(yes: bool) -> tuple[bool, str]:
    """Delete sccache's local disk cache when it is recognisably that alone: (done, what
    was done or why not)."""
    from kache import units
    from kache.doctor import inspect_sccache_dir, sccache_dir

    d = sccache_dir()
    found = inspect_sccache_dir(d)
    if found.problem:
        if not d.exists() and not d.is_symlink():
            return True, f"nothing to delete: no cache directory at {d}"
        return False, found.problem
    size = f"{found.files} file(s), {units.format_size(found.bytes)}"
    if found.unexpected:
        listed = ", ".join(found.unexpected[:5]) + (f" and {len(found.unexpected) - 5} more"
                                                     if len(found.unexpected) > 5 else "")
        return False, (f"left {d} as it is: it does not look like sccache's local disk cache alone (it also holds "
                       f"{listed}); delete what is sccache's by hand, or point SCCACHE_DIR at sccache's cache")
    if not yes and _interactive() and not click.confirm(f"Delete sccache's cache {d} ({size})?",
                                                            default=False, err=True):
        return False, f"left {d} as it is (not confirmed)"
    try:
        shutil.rmtree(d)  # does not follow symbolic links (and inspect found none)
    except OSError as e:
        return False, f"could not delete all of {d}: {e}"
    return True, f"deleted {d} ({size}), freeing {units.format_size(found.bytes)}"


COMMANDS: list[click.Command] = [doctor]
