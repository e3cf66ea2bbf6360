"""Talking to the daemon: stdlib only, never raises, never waits long.

The wrapper imports this module on its hot path, so it uses ``socket``, ``os``, ``time``
and :mod:`kache.daemon.wire` alone (``subprocess`` and ``sys`` only inside :func:`spawn`).
Every function swallows its errors: no daemon, a refused or stale socket, a timeout and a
reply that is not one JSON object all read as "no answer" (``None`` or ``False``). The
protocol, its constants and its framing are :mod:`kache.daemon.wire`.

Example::

    from kache.daemon import client

    reply = client.request(store_root, {"op": "status"}, timeout=1.0)
    if reply is None:
        ...  # no daemon
    client.write_intent(store_root, key, crate)
    client.notify(store_root, {"op": "upload", "key": key, "crate": crate})
"""

from __future__ import annotations

import os
import socket
import time

from kache.daemon import wire
from kache.store import layout

TYPE_CHECKING = False  # typing costs ~11 ms to import; annotations are strings here

if TYPE_CHECKING:
    from typing import Any

__all__ = ["request", "notify", "socket_path", "address", "listen", "unlink_if_same", "intent_path", "write_intent",
           "fetch", "spawn", "NOTIFY_WAIT"]

NOTIFY_WAIT = 0.02
"""Seconds :func:`notify` waits for the reply it then ignores."""


def socket_path(store_root: str | os.PathLike[str]) -> str:
    """``<store_root>/daemon.sock``."""
    return layout.socket_path(store_root)


def address(path: str) -> tuple[str, int | None]:
    """An address ``bind``/``connect`` accept for ``path``, and a descriptor to close after.

    A path longer than ``sun_path`` is reached through the directory's descriptor
    (``/proc/self/fd/N/daemon.sock``, Linux only); elsewhere it is returned as is and
    the call fails, which reads as "no daemon".
    """
    if len(os.fsencode(path)) <= wire.SUN_PATH_MAX or not os.path.isdir("/proc/self/fd"):
        return path, None
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC | getattr(os, "O_PATH", 0)
    fd = os.open(os.path.dirname(path) or ".", flags)
    return f"/proc/self/fd/{fd}/{os.path.basename(path)}", fd


def listen(path: str) -> tuple[socket.socket, tuple[int, int]]:
    """A listening socket at ``path`` (a stale one there replaced: the caller holds what
    makes it the only server), owner-only, and its file's (st_dev, st_ino), for
    :func:`unlink_if_same`. Raises ``OSError``."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    bound, fd = address(path)
    old = os.umask(0o077)
    try:
        sock.bind(bound)
    finally:
        os.umask(old)
        if fd is not None:
            os.close(fd)
    os.chmod(path, 0o600)
    st = os.stat(path)
    sock.listen(128)
    return sock, (st.st_dev, st.st_ino)


def unlink_if_same(path: str, inode: tuple[int, int]) -> None:
    """Remove the socket file at ``path`` if it is still the one :func:`listen` made (a
    successor may have bound its own there since)."""
    try:
        st = os.stat(path)
        if (st.st_dev, st.st_ino) == inode:
            os.unlink(path)
    except FileNotFoundError:
        pass


def _connect(path: str, timeout: float) -> socket.socket | None:
    if not os.path.exists(path):
        return None
    try:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    except OSError:
        return None
    fd: int | None = None
    try:
        where, fd = address(path)
        sock.settimeout(max(0.001, timeout))
        sock.connect(where)
        return sock
    except (OSError, ValueError):
        sock.close()
        return None
    finally:
        if fd is not None:
            os.close(fd)


def request(store_root: str | os.PathLike[str], message: dict[str, Any], timeout: float = 1.0) -> dict[str, Any] | None:
    """Send one request and return the daemon's reply, or None.

    ``"v"`` is added when missing. None means no daemon, a refused or stale socket, no
    reply within ``timeout`` seconds (connecting takes at most
    :data:`~kache.daemon.wire.CONNECT_TIMEOUT` of it), or a reply that is not a JSON object. Never raises.
    """
    deadline = time.monotonic() + timeout
    try:
        data = wire.request_line(message)
    except (TypeError, ValueError):
        return None
    sock = _connect(socket_path(store_root), min(wire.CONNECT_TIMEOUT, timeout))
    if sock is None:
        return None
    try:
        sock.settimeout(max(0.001, deadline - time.monotonic()))
        sock.sendall(data)
        return wire.read_reply(sock, deadline - time.monotonic())
    except OSError:
        return None
    finally:
        sock.close()


def notify(store_root: str | os.PathLike[str], message: dict[str, Any]) -> bool:
    """Send one request without waiting for its outcome (fire and forget).

    Waits at most :data:`NOTIFY_WAIT` for the reply, which is ignored. True when the
    message was delivered to a daemon; False otherwise. Never raises.
    """
    try:
        data = wire.request_line(message)
    except (TypeError, ValueError):
        return False
    sock = _connect(socket_path(store_root), wire.CONNECT_TIMEOUT)
    if sock is None:
        return False
    try:
        sock.sendall(data)
    except OSError:
        sock.close()
        return False
    try:
        sock.settimeout(NOTIFY_WAIT)
        sock.recv(4096)
    except OSError:
        pass
    finally:
        sock.close()
    return True


def intent_path(store_root: str | os.PathLike[str], key: str, crate: str, remote_id: str | None = None) -> str | None:
    """``<store_root>/uploads/<remote_id>/<key>.<crate>`` (the remote's queue id:
    place and access; ``uploads/<key>.<crate>``
    without a remote id: an intent of an older kache), or None when key, crate or
    remote id is not valid."""
    if not (wire.valid_key(key) and wire.valid_crate(crate)):
        return None
    if remote_id is None:
        return os.path.join(layout.uploads_dir(store_root), f"{key}.{crate}")
    if not wire.valid_queue_id(remote_id):
        return None
    return os.path.join(layout.uploads_dir(store_root), remote_id, f"{key}.{crate}")


def write_intent(store_root: str | os.PathLike[str], key: str, crate: str, remote: Any) -> bool:
    """Leave a durable upload intent (an empty file) for the daemon, in the directory of
    its remote (a :class:`kache.remote.spec.RemoteSpec`, whose ``remote.json`` is written
    there first, without credentials); True on success."""
    path = intent_path(store_root, key, crate, remote.queue_id)
    if path is None:
        return False
    try:
        folder = os.path.dirname(path)
        if not os.path.exists(os.path.join(folder, "remote.json")):
            from kache.daemon.remotes import write_spec

            write_spec(os.path.dirname(folder), remote)
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600))
    except OSError:
        return False
    return True


def fetch(store_root: str | os.PathLike[str], crate: str, mkey: str, budget_ms: int = wire.FETCH_BUDGET_MS,
          remote: dict[str, Any] | None = None) -> list[str] | None:
    """Ask the daemon to import, from ``remote`` (a spec's JSON), the entries recorded
    under a cheap key; the keys imported.

    Waits about ``budget_ms`` at most (the daemon replies by then). None when there is
    no daemon or it refused; an empty list when the remote has nothing new.
    """
    message: dict[str, Any] = {"op": "fetch", "crate": crate, "mkey": mkey, "budget_ms": budget_ms,
                               "remote": remote}
    reply = request(store_root, message, timeout=budget_ms / 1000 + 0.25)
    if reply is None or reply.get("ok") is not True or not isinstance(reply.get("imported"), list):
        return None
    return [k for k in reply["imported"] if isinstance(k, str)]


def spawn(from_build: bool = True) -> bool:
    """Run ``kache daemon start`` detached (new session, no inherited descriptors), not waiting.

    With ``from_build`` (the wrapper's case), ``start`` drops the build's variables,
    the remote-deciding ones and its credentials: each build names its remote, with its
    credentials, in its own requests. True when the process was launched.
    """
    from kache import selfexec

    return selfexec.spawn_detached(["daemon", "start"] + (["--from-build"] if from_build else []))
