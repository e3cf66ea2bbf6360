"""``kache completion bash|zsh|fish``: the shell completion script click generates, and
the completion callbacks of kache's arguments (crate names from the local store).

The script calls kache back with ``_KACHE_COMPLETE=<shell>_complete`` (click's
protocol, handled by ``root.main``); ``kache/__main__.py`` sends such a call, which
has no compiler in argv, to the CLI.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from click.shell_completion import CompletionItem

__all__ = ["COMMANDS", "SHELLS", "complete_crates"]

SHELLS = ("bash", "zsh", "fish")
COMPLETE_VAR = "_KACHE_COMPLETE"


def complete_crates(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """The crate names (and the packages of build scripts) of the local store's entries
    that start with ``incomplete``; nothing when there is no store or it cannot be read."""
    from click.shell_completion import CompletionItem

    try:
        from kache import settings as settings_mod
        from kache.store.entries import known_names

        names = known_names(str(settings_mod.load().local_store))
    except Exception:  # noqa: BLE001 - a completion never prints a traceback into the shell
        return []
    want = incomplete.replace("-", "_")
    return [CompletionItem(n) for n in names if n.replace("-", "_").startswith(want)]


@click.command()
@click.argument("shell", type=click.Choice(SHELLS), metavar="SHELL")
def completion(shell: str) -> None:
    """Print the shell completion script for bash, zsh or fish.

    \b
    Example:
      source <(kache completion bash)               # ~/.bashrc
      source <(kache completion zsh)                # ~/.zshrc
      kache completion fish > ~/.config/fish/completions/kache.fish
    """
    from click.shell_completion import get_completion_class

    from kache.cli import root

    cls = get_completion_class(shell)
    assert cls is not None  # every name of SHELLS is one of click's
    click.echo(cls(root, {}, "kache", COMPLETE_VAR).source())


COMMANDS: list[click.Command] = [completion]
