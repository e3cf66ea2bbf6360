"""What a wrapped rustc call asks of the daemon: remote checks, uploads, prefetch.

The remote follows the build: every request carries the remote this build's settings
name (:mod:`kache.remote.spec`: system file, user file or environment, with the
build's credentials), and the daemon serves that one. The wrapper never talks to S3
itself:

- on a local miss it asks the daemon to look for the cheap key on the remote, waiting at
  most ``cache.remote.check_timeout_ms`` (the daemon imports what it finds into the
  local store; the wrapper then looks up locally again);
- it tells the daemon (fire and forget) that a build runs in this workspace, so the
  daemon prefetches the crates of its Cargo.lock;
- after storing a new entry it leaves a durable upload intent (an empty file
  ``uploads/<remote id>/<key>.<crate>`` in the store) and pokes the daemon; intents
  left while no daemon runs are picked up when one starts. A read-only remote
  (``cache.remote.read_only``) gets no uploads;
- with no daemon running it starts one in the background (at most every 10 s). The
  calls of the first seconds after a start wait for it, within their check budget: a
  fresh machine's first crates come from the remote too (docs/performance.md, "A fresh
  machine").
"""

from __future__ import annotations

import os
import time

TYPE_CHECKING = False  # typing costs ~11 ms to import; annotations are strings here

if TYPE_CHECKING:
    from typing import Any

    from kache.engine.call import PreparedCall
    from kache.remote.spec import RemoteSpec
    from kache.settings import Settings

__all__ = ["enabled", "check", "announce", "queue_upload", "note_use", "start_daemon"]

AUTOSTART_INTERVAL_SECS = 10.0
"""At most one start per store in this long (a daemon that died is replaced as soon)."""
STARTUP_WAIT_SECS = 5.0
"""Calls within this long of a start wait for the daemon (within their budget); later
ones, if it is still not up, do not."""
_POLL_SECS = 0.01

_spec_memo: tuple[int, RemoteSpec | None] | None = None


def enabled(settings: Settings) -> bool:
    return bool(settings["cache.remote.bucket"])


def spec(settings: Settings) -> RemoteSpec | None:
    """The remote this build asks for, with its credentials (None without a bucket)."""
    global _spec_memo
    if _spec_memo is not None and _spec_memo[0] == id(settings):
        return _spec_memo[1]
    from kache.remote import spec as spec_mod

    found = spec_mod.from_settings(settings)
    _spec_memo = (id(settings), found)
    return found


def _doc(settings: Settings) -> dict[str, Any] | None:
    found = spec(settings)
    return None if found is None else found.to_json()


def check(c: PreparedCall, settings: Settings) -> bool:
    """Ask the daemon to fetch entries for this call's cheap key; True if it imported any.

    With no daemon, start one; in the first seconds after a start, wait for it (within
    the budget) and ask it then.
    """
    budget_ms = int(settings["cache.remote.check_timeout_ms"] or 0)
    if budget_ms <= 0:
        return False
    from kache.daemon import client
    from kache.wrapper.daemon_hit import note_stall, stalled

    if stalled(c.store.root):  # a daemon that does not answer: compile now
        return False
    began = time.monotonic()
    deadline = began + budget_ms / 1000
    doc = _doc(settings)
    keys = client.fetch(c.store.root, c.crate, c.mkey, budget_ms, remote=doc)
    if keys is not None:
        return bool(keys)
    if time.monotonic() - began >= budget_ms / 1000:  # it took the request and never answered
        note_stall(c.store.root)
        return False
    if not start_daemon(c.store.root, settings):
        return False
    sock = client.socket_path(c.store.root)
    while True:
        left = deadline - time.monotonic()
        if left <= 0.05:
            return False
        time.sleep(_POLL_SECS)
        if not os.path.exists(sock):
            continue
        reply = client.request(c.store.root, {"op": "status"}, timeout=min(left, 0.25))
        if reply is None or reply.get("ok") is not True:
            continue
        announce(c, settings)  # the first announce found no daemon
        left_ms = int((deadline - time.monotonic()) * 1000)
        if left_ms <= 50:
            return False
        keys = client.fetch(c.store.root, c.crate, c.mkey, left_ms, remote=doc)
        return bool(keys)


def announce(c: PreparedCall, settings: Settings) -> None:
    """Tell the daemon a build runs in this workspace (it prefetches its Cargo.lock)."""
    from kache.daemon import client

    client.notify(c.store.root, {"v": 1, "op": "prefetch", "root": c.root, "remote": _doc(settings)})


def queue_upload(c: PreparedCall, key: str, settings: Settings) -> None:
    """Leave a durable upload intent for a new entry and poke the daemon (nothing for a
    read-only remote)."""
    found = spec(settings)
    if found is None or found.read_only:
        return
    from kache.daemon import client

    client.write_intent(c.store.root, key, c.crate, found)
    if not client.notify(c.store.root, {"v": 1, "op": "upload", "key": key, "crate": c.crate,
                                        "remote": found.to_json()}):
        start_daemon(c.store.root, settings)


def note_use(store_root: str, key: str, crate: str, settings: Settings) -> None:
    """Tell the daemon an entry that came from the remote served a build (it records the
    use on the remote object, at most once a day; nothing for a read-only remote)."""
    found = spec(settings)
    if found is None or found.read_only:
        return
    from kache.daemon import client

    client.notify(store_root, {"v": 1, "op": "used", "key": key, "crate": crate, "remote": found.to_json()})


def start_daemon(store_root: str, settings: Settings) -> bool:
    """Start the daemon detached, at most every 10 s; True when one was started in the
    last :data:`STARTUP_WAIT_SECS` (by this call or another), so waiting for it makes sense.
    """
    if not settings["cache.daemon_autostart"]:
        return False
    from kache.store import layout

    stamp = layout.tmp_path(store_root, layout.DAEMON_AUTOSTART)
    try:
        age = time.time() - os.stat(stamp).st_mtime
        if age < AUTOSTART_INTERVAL_SECS:
            return age < STARTUP_WAIT_SECS
    except OSError:
        pass
    try:
        os.makedirs(os.path.dirname(stamp), mode=0o700, exist_ok=True)
        os.close(os.open(stamp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))
    except OSError:
        return False
    from kache.daemon import client

    return client.spawn(from_build=True)
