"""What a wrapped rustc call asks of the daemon: remote checks, uploads, prefetch.

The wrapper never talks to S3 itself and never waits on a dead or slow daemon:

- on a local miss it asks the daemon to look for the cheap key on the remote, waiting at
  most ``cache.remote.check_timeout_ms`` (the daemon imports what it finds into the
  local store; the wrapper then looks up locally again);
- it tells the daemon (fire and forget) that a build runs in this workspace, so the
  daemon prefetches the crates of its Cargo.lock;
- after storing a new entry it leaves a durable upload intent (an empty file
  ``uploads/<key>.<crate>`` in the store) and pokes the daemon; intents left while no
  daemon runs are picked up when one starts;
- with no daemon running it starts one in the background (at most once a minute), with
  cargo's variables and file descriptors left behind.
"""

from __future__ import annotations

import os
import time
TYPE_CHECKING = False  # typing costs ~11 ms to import; annotations are strings here

if TYPE_CHECKING:
    from kache.settings import Settings
    from kache.wrapper.cache import Call

__all__ = ["enabled", "check", "announce", "queue_upload"]

AUTOSTART_INTERVAL_SECS = 60.0


def enabled(settings: Settings) -> bool:
    return bool(settings["cache.remote.bucket"])


def _remote(settings: Settings) -> str | None:
    from kache.daemon import client

    return client.remote_url(settings["cache.remote.bucket"], settings["cache.remote.prefix"])


def check(c: Call, settings: Settings) -> bool:
    """Ask the daemon to fetch entries for this call's cheap key; True if it imported any.

    A daemon that serves another remote (its own config) refuses; the build compiles.
    """
    budget_ms = int(settings["cache.remote.check_timeout_ms"] or 0)
    if budget_ms <= 0:
        return False
    from kache.daemon import client

    keys = client.fetch(c.store.root, c.crate, c.mkey, budget_ms, remote=_remote(settings))
    if keys is None:
        start_daemon(c.store.root, settings)
        return False
    return bool(keys)


def announce(c: Call, settings: Settings) -> None:
    """Tell the daemon a build runs in this workspace (it prefetches its Cargo.lock)."""
    from kache.daemon import client

    client.notify(c.store.root, {"v": 1, "op": "prefetch", "root": c.root, "remote": _remote(settings)})


def queue_upload(c: Call, key: str, settings: Settings) -> None:
    """Leave a durable upload intent for a new entry and poke the daemon."""
    from kache.daemon import client

    client.write_intent(c.store.root, key, c.crate)
    if not client.notify(c.store.root, {"v": 1, "op": "upload", "key": key, "crate": c.crate}):
        start_daemon(c.store.root, settings)


def start_daemon(store_root: str, settings: Settings) -> None:
    """Start the daemon detached, at most once a minute; never wait for it.

    ``--from-build``: the daemon takes its remote from the config files, not from this
    build's variables (REFERENCE §7: a daemon that kept one build's remote served it to
    every later build).
    """
    if not settings["cache.daemon_autostart"]:
        return
    stamp = os.path.join(store_root, "tmp", "daemon-autostart")
    try:
        if time.time() - os.stat(stamp).st_mtime < AUTOSTART_INTERVAL_SECS:
            return
    except OSError:
        pass
    try:
        os.makedirs(os.path.dirname(stamp), mode=0o700, exist_ok=True)
        os.close(os.open(stamp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))
    except OSError:
        return
    from kache.daemon import client

    client.spawn(from_build=True)
