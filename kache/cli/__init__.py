"""The ``kache`` command: a thin click layer over the library modules.

Each command parses its flags, calls one library function and hands the result to
``kache.cli.output``. Heavy libraries (boto3, textual) are imported inside command
bodies, so ``kache --help`` stays fast.
"""

from __future__ import annotations

import sys

import click

from kache import __version__
from kache.errors import KacheError, NotImplementedYet

__all__ = ["main", "root"]

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@click.group(context_settings=CONTEXT_SETTINGS, invoke_without_command=True)
@click.version_option(__version__, "-V", "--version", prog_name="kache", message="%(prog)s %(version)s")
@click.pass_context
def root(ctx: click.Context) -> None:
    """kache: a content-addressed build cache for Rust, used as cargo's RUSTC_WRAPPER.

    With no command, opens the live monitor.

    \b
    Example:
      export RUSTC_WRAPPER=kache
      cargo build
      kache stats
    """
    if ctx.invoked_subcommand is None:
        ctx.invoke(monitor)


def _register() -> None:
    from kache.cli import cache, commands, config, daemon, dev, remote, setup

    for group in (commands, cache, config, dev, setup, remote, daemon):
        for command in group.COMMANDS:
            root.add_command(command)


from kache.cli.commands import monitor  # noqa: E402  (needed by root's default)

_register()


def main(args: list[str] | None = None) -> int:
    """Run the CLI; return the exit code. Expected failures are one clean line, no traceback."""
    try:
        result = root.main(args=args, prog_name="kache", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("kache: aborted", err=True)
        return 1
    except click.ClickException as e:
        e.show()
        return e.exit_code
    except NotImplementedYet as e:
        click.echo(f"kache: {e}", err=True)
        return 2
    except KacheError as e:
        for line in str(e).splitlines():
            click.echo(f"kache: error: {line}", err=True)
        return 1
    except SystemExit as e:  # a command's own exit status
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BrokenPipeError:
        sys.stderr.close()
        return 1
    return result if isinstance(result, int) else 0
