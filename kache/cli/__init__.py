"""The ``kache`` command: a thin click layer over the library modules.

Each command parses its flags, calls one library function and hands the result to
``kache.cli.output``. A command's module loads only when that command runs, and heavy
libraries (boto3, textual) only inside command bodies, so every command starts fast.
``KACHE_LOG`` (``kache=debug``, ...) sends the ``kache`` logger to stderr; unset, nothing
is added (``logging`` is not even imported).
"""

from __future__ import annotations

import sys
from typing import Any

import click

from kache import __version__
from kache.command_names import LAZY_COMMANDS
from kache.errors import KacheError, NotImplementedYet, ProgramNotFound

__all__ = ["main", "root"]

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


# A command's module is imported when the command runs (or for --help), not for every
# command (`kache --version`: 0.13 -> 0.05 s); kache.command_names says which holds which.


class LazyGroup(click.Group):
    """click's group, loading a command's module when the command is first asked for
    (click's documented pattern for lazily loaded subcommands)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*LAZY_COMMANDS, *self.commands})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in LAZY_COMMANDS:
            import importlib

            module = importlib.import_module(f"kache.cli.{LAZY_COMMANDS[cmd_name]}")
            for command in module.COMMANDS:
                self.add_command(command)
        return self.commands.get(cmd_name)


@click.group(cls=LazyGroup, context_settings=CONTEXT_SETTINGS, invoke_without_command=True)
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
        monitor = root.get_command(ctx, "monitor")
        assert monitor is not None
        ctx.invoke(monitor)


def _log_to_stderr() -> Any:
    """With ``KACHE_LOG`` set, a stderr handler on the ``kache`` logger at its level
    (credentials scrubbed, as in the daemon's log); the logger, or None when unset, and
    in a shell's completion call (the shell shows whatever it prints)."""
    import os

    from kache.cli.completion import COMPLETE_VAR

    text = os.environ.get("KACHE_LOG", "").strip()
    if not text or os.environ.get(COMPLETE_VAR):
        return None
    import logging

    from kache import loglevel
    from kache.daemon.logs import Redact, secret_values

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("kache: %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(Redact(secret_values(os.environ)))
    handler.kache_cli = True  # type: ignore[attr-defined]  # the daemon in the foreground replaces it
    logger = logging.getLogger("kache")
    logger.addHandler(handler)
    logger.setLevel(loglevel.level(text))
    logger.propagate = False
    return logging.getLogger("kache.cli")


def main(args: list[str] | None = None) -> int:
    """Run the CLI; return the exit code. Expected failures are one clean line, no traceback."""
    log = _log_to_stderr()
    if log is None:
        return _main(args)
    import time

    started = time.monotonic()
    shown = " ".join(sys.argv[1:] if args is None else args)
    log.debug("kache %s: running `kache %s`", __version__, shown)
    status = _main(args)
    log.debug("`kache %s` ended with status %s in %.0f ms", shown, status, (time.monotonic() - started) * 1000)
    return status


def _main(args: list[str] | None) -> int:
    try:
        result = root.main(args=args, prog_name="kache", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("kache: aborted", err=True)
        return 1
    except click.ClickException as e:
        e.show()
        return e.exit_code
    except ProgramNotFound as e:  # click's own format: the CLI used to raise this one as a click error
        click.ClickException(str(e)).show()
        return 1
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
    except OSError as e:  # a file no command expected to fail on: where and why, not a traceback
        where = f"{e.filename}: " if e.filename else ""
        click.echo(f"kache: error: {where}{e.strerror or e} (`kache doctor` checks the setup)", err=True)
        return 1
    return result if isinstance(result, int) else 0
