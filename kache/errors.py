"""Errors kache raises on purpose.

    KacheError                 anything kache reports to a person
    ├── SettingsError          a config file or environment variable is wrong
    └── NotImplementedYet      a command that exists but is not built yet

Messages read ``<what failed>: <subject>: <why>``, then the fix when there is one.
"""

from __future__ import annotations

__all__ = ["KacheError", "SettingsError", "NotImplementedYet"]


class KacheError(Exception):
    """Base of every error kache reports to a person (one clean line, no traceback)."""


class SettingsError(KacheError):
    """A setting could not be read or is invalid; ``problems`` holds one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class NotImplementedYet(KacheError):
    """A command of the command tree whose implementation has not landed yet."""
