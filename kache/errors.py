"""Errors kache raises on purpose.

    KacheError                 anything kache reports to a person
    ├── SettingsError          a config file or environment variable is wrong
    ├── ProgramNotFound        the `kache` program itself cannot be found
    ├── NotImplementedYet      a command that exists but is not built yet
    ├── RemoteError            a remote (S3) operation failed      (kache.remote.s3)
    ├── ArchiveError           an archive is malformed or unsafe   (kache.remote.archive)
    └── SyncError              sync cannot start                   (kache.remote.sync)

Library code raises these, never click's exceptions: the CLI (``kache.cli.main``) turns
them into one line on stderr and an exit status. Classes that belong to one package are
defined there and drawn here; ``tests/test_errors.py`` checks that this tree is the real
one. Messages read ``<what failed>: <subject>: <why>``, then the fix when there is one.
"""

from __future__ import annotations

__all__ = ["KacheError", "SettingsError", "ProgramNotFound", "NotImplementedYet"]


class KacheError(Exception):
    """Base of every error kache reports to a person (one clean line, no traceback)."""


class SettingsError(KacheError):
    """A setting could not be read or is invalid; ``problems`` holds one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class ProgramNotFound(KacheError):
    """The ``kache`` program running now has no path cargo could run: not ``argv[0]``,
    not beside the interpreter, not on ``PATH`` (an install that only ``python -m kache``
    reaches). The CLI shows it as click shows its own errors: ``Error: …``, exit 1."""


class NotImplementedYet(KacheError):
    """A command of the command tree whose implementation has not landed yet."""
