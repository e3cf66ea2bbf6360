"""Fixtures the hostile-input tests borrow: the daemon's (a daemon in this process with a
fake remote, or a real ``kache daemon run`` process) and the e2e workspace."""

from __future__ import annotations

from tests.daemon.conftest import fake_remote, kache_process, make_settings, start_daemon, store_root
from tests.e2e.conftest import workspace

__all__ = ["fake_remote", "kache_process", "make_settings", "start_daemon", "store_root", "workspace"]
