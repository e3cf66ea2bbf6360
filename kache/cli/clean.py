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
    its own (CACHEDIR.TAG); a PATH that is a target dir names just that one. For each
    it shows the size, when it was last used, and how much of it is hardlinked from the
    kache store: those bytes stay on disk (in the store) until `kache gc` evicts them.

    Then asks which to delete, by their numbers in the list (`1,3`, `2-4`), `all` or
    `none`; --yes deletes every one found.

    \b
    Example:
      kache clean --dry-run ~/src
      kache clean ~/src                  # pick among them
      kache clean -y ~/src/old-project/target
    """
    import time

    from kache import settings as settings_mod
    from kache import units
    from kache.cli.output import echo_json, echo_table
    from kache.target_dirs import delete, find_target_dirs, measure, store_inodes

    roots = [str(p) for p in paths] or [os.getcwd()]
    store_root = str(settings_mod.load_checked().local_store)  # refuses a store the settings do not name
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
        rows = [[str(n), t.path, units.format_size(t.size), units.format_size(t.shared_bytes),
                 units.format_ago(now - t.last_used) if t.last_used else "—"] for n, t in enumerate(found, 1)]
        echo_table(["#", "target dir", "size", "in kache store", "last used"], rows)
        total = sum(t.size for t in found)
        frees = sum(t.frees for t in found)
        click.echo(f"\n{len(found)} target dir(s), {units.format_size(total)}; deleting frees "
                   f"{units.format_size(frees)} now (the rest is shared with the kache store)")
    if dry_run:
        return
    if not yes:
        question = ("Delete it? (y/n)" if len(found) == 1 else
                    f"Delete which? (numbers such as 1,2 or 1-{len(found)}, all, none)")
        chosen: list[int] = click.prompt(question, default="none", show_default=False,
                                         value_proc=lambda text: parse_choice(text, len(found)))
        if not chosen:
            click.echo("nothing deleted")
            return
        found = [found[i] for i in chosen]
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


def parse_choice(text: str, count: int) -> list[int]:
    """The 0-based indexes that ``text`` picks among ``count`` numbered items: numbers
    from 1 and ranges (``1,3``, ``2-4``, ``1 3``), ``all``/``y``/``yes``, ``none``/``n``/
    ``no``/nothing. Raises click.BadParameter (click asks again) for anything else."""
    words = text.replace(",", " ").split()
    lowered = [w.lower() for w in words]
    if lowered in ([], ["none"], ["n"], ["no"]):
        return []
    if lowered in (["all"], ["y"], ["yes"], ["a"]):
        return list(range(count))
    picked: set[int] = set()
    for word in words:
        first, dash, last = word.partition("-")
        try:
            lo, hi = int(first), int(last if dash else first)
        except ValueError:
            raise click.BadParameter(f"{word!r} is not a number from the list; answer with numbers 1 to {count} "
                                     f"(such as 1,2 or 1-{count}), all or none") from None
        if not 1 <= lo <= hi <= count:
            raise click.BadParameter(f"{word}: the list has numbers 1 to {count}")
        picked.update(range(lo - 1, hi))
    return sorted(picked)


COMMANDS: list[click.Command] = [clean]
