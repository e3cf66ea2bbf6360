"""What the daemon's parts share: one lock, the counters ``status`` reports, the jobs
running, the time of the last activity, the remotes builds ask for, and the local store."""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any

from kache.daemon.remotes import Remotes, Served
from kache.daemon.wire import ProtocolError
from kache.remote.spec import SpecError

if TYPE_CHECKING:
    from kache.store.store import Store

__all__ = ["DaemonState"]

log = logging.getLogger("kache.daemon")


class DaemonState:
    """The state every concern of one daemon reads and updates. ``lock`` guards the
    counters, ``active`` and each concern's own tables (one lock: ``status`` reads them
    all at once)."""

    def __init__(self, root: str, remotes: Remotes) -> None:
        self.root = root
        self.remotes = remotes
        self.lock = threading.Lock()
        self.uploads_done = 0
        self.uploads_failed = 0
        self.downloads = 0
        self.prefetches = 0
        self.hits_served = 0
        self.last_error: str | None = None
        self.active = 0
        """Jobs running (uploads, fetches, prefetches, use records): the daemon is busy."""
        self.last_activity = time.monotonic()

    def touch(self) -> None:
        """Something happened: the idle timeout starts again."""
        self.last_activity = time.monotonic()

    def job_started(self) -> None:
        with self.lock:
            self.active += 1

    def job_ended(self) -> None:
        with self.lock:
            self.active -= 1
        self.touch()

    def error(self, text: str) -> None:
        """Log a warning and keep it as ``status``'s ``last_error``."""
        with self.lock:
            self.last_error = text
        log.warning("%s", text)

    def open_store(self) -> Store:
        """A new connection to the local store (the caller closes it)."""
        from kache.store.store import Store

        return Store(self.root)

    def asked(self, msg: dict[str, Any]) -> Served | None:
        """The remote a request names (None: none). Raises ProtocolError for a bad one."""
        try:
            return self.remotes.asked(msg.get("remote"))
        except SpecError as e:
            raise ProtocolError(f"invalid request: {e}") from None
        except Exception as e:  # a remote that cannot be set up: said once, then no remote
            self.error(f"remote unavailable: {type(e).__name__}: {e}")
            return None
