"""Errors kache raises on purpose.

    KacheError                 anything kache reports to a person
    ├── SettingsError          a config file or environment variable is wrong
    ├── ProgramNotFound        the `kache` program itself cannot be found
    ├── NotImplementedYet      a command that exists but is not built yet
    ├── RemoteError            a remote (S3) operation failed      (kache.remote.s3)
    ├── ArchiveError           an archive is malformed or unsafe   (kache.remote.archive)
    ├── SyncError              sync cannot start                   (kache.remote.sync)
    ├── SpecError              a remote description is not one     (kache.remote.spec)
    ├── StoreError             the local store cannot be used      (kache.store.connection)
    │   └── DamagedBlob        a blob is missing or altered        (kache.store.integrity)
    ├── ToolchainError         the compiler chain is unknown       (kache.engine.toolchain)
    ├── ArgvError              rustc's command line is not one     (kache.engine.argv)
    └── BuildError             the native client did not build     (kache.native)

Library code raises these, never click's exceptions: the CLI (``kache.cli.main``) turns
them into ``kache: error: …`` lines on stderr and an exit status (an OSError no command
expected too: the file and the reason, no traceback). Classes that belong to one package are
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
