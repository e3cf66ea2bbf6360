"""The wrapper as a thin client: ask a running daemon to serve a hit.

A hit spends most of its time importing (SQLite, blake3, kache's store and key code)
and opening the index; a daemon has all of that loaded and open. When one runs for the
local store (``<store>/daemon.sock`` exists) and ``cache.daemon_hits`` is on, the
wrapper sends the call (argv, working directory, environment) as one ``hit`` request;
the daemon restores the outputs exactly as the wrapper would (``kache.engine.hit.serve_hit``)
and replies with rustc's messages to print. Anything else (no daemon, a miss, a
timeout, an error, a reply that does not say "hit") falls back to the wrapper's own
path, which looks up again.

Only the standard library's ``_socket`` (``socket`` itself imports ``enum`` and
``selectors``) and the protocol's :mod:`kache.daemon.wire` (stdlib only, and cheap;
imported only when the daemon's socket is there).
"""

from __future__ import annotations

import os

from kache.store import layout

TYPE_CHECKING = False
if TYPE_CHECKING:
    from kache.settings import Settings

__all__ = ["served_by_daemon", "stalled", "note_stall"]


def stalled(root: str) -> bool:
    """Whether a daemon of this store (or its runner) failed to answer in the last
    :data:`~kache.daemon.wire.STALL_SECS` (the native client reads and writes the same file)."""
    import time

    from kache.daemon.wire import STALL_SECS, STALLED_NAME

    try:
        return time.time() - os.stat(os.path.join(root, STALLED_NAME)).st_mtime < STALL_SECS
    except OSError:
        return False


def note_stall(root: str) -> None:
    """Say that the daemon accepted a request and did not answer in time."""
    from kache.daemon.wire import STALLED_NAME

    try:
        os.makedirs(layout.tmp_dir(root), mode=0o700, exist_ok=True)
        os.close(os.open(os.path.join(root, STALLED_NAME), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))
    except OSError:
        pass


def served_by_daemon(argv: list[str], settings: Settings, started: float) -> bool:
    """True when the daemon restored this call's outputs; its messages are printed."""
    root = os.path.abspath(settings.converted("cache.local_store"))
    path = layout.socket_path(root)
    if not os.path.exists(path) or stalled(root):
        return False
    # The protocol only when a daemon may answer: a call with none (every call of a build
    # without one) saves its import, ~0.3 ms.
    from kache.daemon import wire

    if len(os.fsencode(path)) > wire.SUN_PATH_MAX:
        return False
    try:
        import _socket

        sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    except (ImportError, OSError):
        return False
    try:
        umask = os.umask(0o022)
        os.umask(umask)
        request = {"v": wire.VERSION, "op": "hit", "argv": argv, "cwd": os.getcwd(), "env": dict(os.environ),
                   "store": root, "started": started, "umask": umask}
        data = wire.request_line(request)
        sock.settimeout(wire.CONNECT_TIMEOUT)
        sock.connect(path)
        sock.settimeout(wire.HIT_TIMEOUT)
        sock.sendall(data)
        answer = wire.read_reply(sock, wire.HIT_TIMEOUT)
    except TimeoutError:  # connected, and no answer in time
        note_stall(root)
        return False
    except (OSError, ValueError, TypeError, RecursionError):
        return False
    finally:
        sock.close()
    if answer is None or answer.get("ok") is not True or answer.get("hit") is not True:
        return False
    stdout, stderr = answer.get("stdout"), answer.get("stderr")
    if not isinstance(stdout, str) or not isinstance(stderr, str):
        return False
    from kache.engine.notices import write_replay

    write_replay(stdout, stderr)
    return True
