"""``kache dev …``: tools for working on kache itself (generated files)."""

from __future__ import annotations

import difflib
from pathlib import Path

import click

__all__ = ["COMMANDS"]


@click.group(hidden=True)
def dev() -> None:
    """Tools for kache's own development."""


@dev.command()
@click.option("--check", is_flag=True, help="Fail if a generated file is out of date; write nothing.")
@click.option("--root", type=click.Path(file_okay=False, path_type=Path), default=".",
              show_default=True, help="The kache source tree.")
def gen(check: bool, root: Path) -> None:
    """Regenerate the files made from schema/config.schema.json (README table, Nix module)
    and from kache/daemon/wire.py (the native client's constants, kache/native/wire.rs).

    \b
    Example:
      kache dev gen --check
    """
    from kache.gen import generate

    if not (root / "schema" / "config.schema.json").is_file():
        raise click.ClickException(f"{root.resolve()} is not a kache source tree (no schema/config.schema.json)")
    stale = []
    for rel, (current, wanted) in generate(root).items():
        if current == wanted:
            continue
        stale.append(rel)
        if check:
            diff = difflib.unified_diff(current.splitlines(True), wanted.splitlines(True), rel, rel + " (generated)")
            click.echo("".join(diff), err=True)
        else:
            (root / rel).write_text(wanted, encoding="utf-8")
            click.echo(f"wrote {rel}")
    if check and stale:
        raise click.ClickException("out of date: " + ", ".join(stale) + "; run `kache dev gen`")
    if not stale:
        click.echo("generated files are up to date")


COMMANDS = [dev]
