"""``kache clean``: cargo target directories, their sizes, and deleting them.

Finding and measuring them is :mod:`kache.target_dirs`.
"""

from __future__ import annotations

import os
from pathlib import Path

import click

__all__ = ["COMMANDS"]


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
    store_root = settings_mod.load_checked().converted("cache.local_store")
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


COMMANDS: list[click.Command] = [clean]
