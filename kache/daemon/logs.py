"""The daemon's log: its level, its owner-only rotating file, and the scrubbing of secrets.

Logging goes to ``<store>/daemon.log`` (rotated at 4 MiB, two old files kept) and, in
the foreground, to stderr. The level comes from ``KACHE_LOG`` (``kache=debug``,
``info``, ``warn``, ``error``; :mod:`kache.loglevel`); unset, ``info``, the schema's
default. Values of
credential variables (the daemon's own, and those builds send) are replaced by
``[redacted]`` in every line.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import sys
from typing import Any

__all__ = ["DaemonLog", "Redact", "PrivateRotatingFileHandler", "log_level", "secret_values"]

LOG_MAX_BYTES = 4 << 20
LOG_BACKUPS = 2
REDACTED = "[redacted]"


def log_level(text: str | None) -> int:
    """The level of the ``kache`` logger from ``KACHE_LOG`` (:func:`kache.loglevel.level`,
    the one reader of its syntax shared with the wrapper and the CLI)."""
    from kache import loglevel

    return loglevel.level(text)


class PrivateRotatingFileHandler(logging.handlers.RotatingFileHandler):
    """A rotating log whose files are created owner-only (0600)."""

    def _open(self) -> Any:
        fd = os.open(self.baseFilename, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        return open(fd, self.mode, encoding=self.encoding, errors=self.errors)


class Redact(logging.Filter):
    """Replace every credential value in a record's message and traceback."""

    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if len(s) >= 4]

    def add(self, secrets: list[str]) -> None:
        """Credentials a build sent: scrubbed from now on (before anything logs them)."""
        new = [s for s in secrets if len(s) >= 4 and s not in self.secrets]
        if new:
            self.secrets = self.secrets + new  # replaced whole: readers in other threads see one or the other

    def scrub(self, text: str) -> str:
        """``text`` with every known secret replaced by ``[redacted]``."""
        for s in self.secrets:
            text = text.replace(s, REDACTED)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.secrets:
            return True
        message = record.getMessage()
        clean = self.scrub(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.scrub(record.exc_text)
        return True


def secret_values(env: Any) -> list[str]:
    """The values of the credential variables set in ``env`` (the schema's secret
    settings and AWS's own)."""
    from kache.settings import env_settings

    names = [e.name for e in env_settings() if e.secret] + ["AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"]
    return [str(env[n]).strip() for n in names if env.get(n)]


class DaemonLog:
    """The handlers a running daemon adds to the ``kache`` logger, and their removal
    (which puts the logger's level and propagation back)."""

    def __init__(self, path: str, env: Any) -> None:
        self.path = path
        self.level = log_level(env.get("KACHE_LOG"))
        self.redact = Redact(secret_values(env))
        self.handlers: list[logging.Handler] = []
        self._saved: tuple[int, bool] | None = None

    @property
    def active(self) -> bool:
        """Whether :meth:`start` added the handlers (and :meth:`stop` has not removed them)."""
        return bool(self.handlers)

    def start(self, foreground: bool) -> None:
        """Log to the file, and to stderr too in the ``foreground`` (unless stderr is the file)."""
        logger = logging.getLogger("kache")
        self._saved = (logger.level, logger.propagate)
        fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s")
        handlers: list[logging.Handler] = [PrivateRotatingFileHandler(
            self.path, maxBytes=LOG_MAX_BYTES, backupCount=LOG_BACKUPS, encoding="utf-8")]
        for h in list(logger.handlers):  # the CLI's KACHE_LOG handler: the daemon's own replaces it
            if getattr(h, "kache_cli", False):
                logger.removeHandler(h)
        if foreground and not _stderr_is(self.path):
            handlers.append(logging.StreamHandler(sys.stderr))
        for h in handlers:
            h.setFormatter(fmt)
            h.addFilter(self.redact)
            logger.addHandler(h)
        self.handlers = handlers
        logger.setLevel(self.level)
        logger.propagate = False

    def stop(self) -> None:
        logger = logging.getLogger("kache")
        for h in self.handlers:
            logger.removeHandler(h)
            h.close()
        self.handlers = []
        if self._saved is not None:
            logger.setLevel(self._saved[0])
            logger.propagate = self._saved[1]


def _stderr_is(path: str) -> bool:
    """True when stderr is the log file itself (launchd's StandardErrorPath, ``start``)."""
    try:
        return os.path.samestat(os.fstat(2), os.stat(path))
    except OSError:
        return False
