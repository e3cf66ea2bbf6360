"""The daemon's knobs that are not settings: where its remotes come from, whether it
re-executes itself, and the intervals of its housekeeping (tests shorten them).

A service or ``kache daemon run`` uses the defaults (``run()`` turns on ``reexec``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kache.daemon import wire

__all__ = ["DaemonOptions", "stand_in", "STATS_FOLD_SECS", "STATS_FOLD_BYTES"]

# While idle, the event log is folded into `kache stats`'s kept fold once it grew this
# much (checked this often): a stats after a long build then folds minutes, not hours.
STATS_FOLD_SECS = 60.0
STATS_FOLD_BYTES = 1 << 20

RemoteFactory = Callable[[Any, bool], Any]
"""``factory(spec, for_fetch)`` → the remote object serving a :class:`RemoteSpec` (None: no remote)."""


def stand_in(remote: Any) -> RemoteFactory:
    """A factory that answers every remote a request names with ``remote`` (a test's
    fake; None: requests get no remote)."""
    return lambda spec, for_fetch: remote


@dataclass(frozen=True)
class DaemonOptions:
    """How one :class:`kache.daemon.server.Daemon` runs, besides its settings."""

    remote_factory: RemoteFactory | None = None
    """Makes the remotes requests name; None: :class:`kache.remote.s3.Remote` (see
    :func:`kache.daemon.remotes.default_factory`). Tests pass :func:`stand_in`."""
    sync: Callable[..., Any] | None = None
    """Replaces :func:`kache.remote.sync.sync` for prefetches."""
    reexec: bool = False
    """Re-execute the process when kache's code or config files change."""
    exec_hook: Callable[[list[str]], None] | None = None
    """Replaces ``os.execve`` for the re-execution (it gets the argv)."""
    handle_signals: bool | None = None
    """Stop on SIGTERM/SIGINT; None: when serving from the main thread."""
    scan_interval: float = wire.INTENT_SCAN_SECS
    """Seconds between two scans of the upload intents on disk."""
    watch_interval: float = 10.0
    """Seconds between two checks for changed code or config files (with ``reexec``)."""
    watch_dir: str | None = None
    """The code whose change re-executes the daemon; None: the kache package."""
    retry_delay: float = 30.0
    """Seconds before the first retry of a failed upload (doubling after each try)."""
    max_tries: int = wire.MAX_TRIES
    """Tries of an upload before it is given up (its intent stays for the next daemon)."""
    prefetch_dedupe_secs: float = wire.PREFETCH_DEDUPE_SECS
    """A prefetch of the same root and remote within this many seconds is not started again."""
    accept_timeout: float = 0.2
    """Seconds the accept loop waits for a connection before doing its housekeeping."""
    fold_interval: float = STATS_FOLD_SECS
    """Seconds between two looks at the event log's growth (see ``fold_bytes``)."""
    fold_bytes: int = STATS_FOLD_BYTES
    """Growth of the event log after which an idle daemon folds it for ``kache stats``."""
