"""``kache demo``: the bundled workspace built twice through kache, the times and hits printed.

The demo itself is :mod:`kache.demo`.
"""

from __future__ import annotations

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


COMMANDS: list[click.Command] = [demo]
