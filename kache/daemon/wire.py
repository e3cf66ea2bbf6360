"""The daemon's socket protocol, version 1: public and versioned.

This module is the protocol in code, for every side of the socket: its constants, the
framing (:func:`request_line`, :func:`reply_line`, :func:`read_line`, :func:`read_reply`,
:func:`too_deep`) and the checks of keys and crate names. The daemon
(:mod:`kache.daemon.server`), :mod:`kache.daemon.client` and the wrapper's own client
(:mod:`kache.wrapper.daemon_hit`) import it; the native client's constants
(``kache/native/wire.rs``) are generated from it by ``kache dev gen``. The wrapper imports
it on every call, so it imports only the standard library, and cheaply: no ``re``,
``json`` or ``socket`` (JSON goes through :mod:`kache.quickjson`, which calls the
standard library's ``_json`` directly).

Transport
---------
A Unix stream socket at ``<local_store>/daemon.sock``, owner-only: the daemon sets its
umask to 077 before ``bind`` and ``chmod``s the file to 0600 after. (Where the path is
longer than ``sun_path`` allows, about 104 bytes, both sides reach the same file through
``/proc/self/fd/<dir fd>/daemon.sock`` on Linux.)

Framing
-------
One JSON object per line, UTF-8, each line ending in ``\\n``. A request line holds at
most ``MAX_LINE`` (65,536) bytes before its newline, a reply line at most ``MAX_REPLY``
(64 MiB: a hit's messages can be long), and neither nests lists and objects deeper than
``MAX_DEPTH`` (8) levels. A client may send several requests on one
connection, one after another; each gets exactly one reply line, in order. A line that
is too long, not UTF-8, not JSON or not an object gets an error reply and the
connection is closed. The daemon never dies of bad input, and drops a connection that
sends no complete line for ``READ_TIMEOUT`` seconds.

Requests and replies
--------------------
Every request is ``{"v": 1, "op": "<op>", ...}``. Every reply is either
``{"ok": true, ...}`` or ``{"ok": false, "error": "<what failed>: <subject>: <why>"}``.
A request with another ``v`` is refused with an error that gives both numbers; an
unknown op is refused with an error that names it (clients use that as a capability
probe). Unknown extra fields are ignored, so later minor additions stay compatible;
anything that changes the meaning of an existing field bumps ``VERSION``.

``status``
    → ``pid``, ``version`` (the daemon's ``kache.__version__``), ``protocol``,
    ``started`` (unix time), ``uptime_s``, ``queue`` (uploads pending, including those
    waiting to retry), ``uploads_done``, ``uploads_failed`` (failed attempts),
    ``downloads`` (entries imported), ``prefetches`` (prefetches started),
    ``hits_served`` (``hit`` requests answered with a hit),
    ``last_error`` (text or null), ``socket``, ``store``, ``remotes`` (one object per
    remote builds asked for: ``url`` ``"s3://bucket/prefix"``, ``endpoint``, ``region``,
    ``credentials`` — where they came from, never their values —, ``asked`` (unix
    time, null when known from intents only) and ``queue``), ``remote`` (the URL of the
    one asked for last, or null), ``log`` (path), ``idle_timeout_s``, ``runner`` (the
    pid of its runner, or null).

Remotes
-------
The remote follows the build. ``upload``, ``fetch``, ``prefetch`` and ``used`` carry
``remote``: the remote the asking build's settings name, as an object
(:class:`kache.remote.spec.RemoteSpec`): ``bucket``, ``prefix``, ``endpoint``,
``region``, ``profile``, ``read_only``, optional ``files`` (``credentials_file``,
``config_file``) and optional ``credentials`` (``access_key``, ``secret_key``,
``session_token``), from the build's environment. The daemon serves each remote a
request names, with one client per place (endpoint, bucket, prefix, region) made from
the credentials of the last build that could write to it, and no remote a request
did not name: without ``remote`` (or with null) there is no remote. A string (what an
older kache sent) is refused as invalid.

``upload`` ``{key, crate, remote}``
    Queue an upload of a local entry to the remote (deduplicated by remote and key) and
    reply at once: ``{"ok": true, "queued": n}`` with n the uploads now pending. Uploads
    are durable: the wrapper first creates an empty file
    ``<local_store>/uploads/<remote id>/<key>.<crate>`` (an *intent*; the directory's
    ``remote.json`` holds the remote without credentials); the daemon creates it too if
    it is missing, scans the directories at start and every 30 s, deletes an intent after
    a successful upload and keeps it after a failure (retried with backoff; after
    ``MAX_TRIES`` failures it is left for the next daemon). An intent no build has asked
    for since the daemon started is uploaded with the credentials of the daemon's own
    environment. An older kache's ``uploads/<key>.<crate>`` is moved under the remote of
    the daemon's own settings, or left when they name none. Without a remote, or with a
    read-only one: ``{"ok": false, "error": "upload refused: ..."}``.

``fetch`` ``{crate, mkey, budget_ms?, remote}``
    Ask the remote for the entries recorded under a cheap (direct-mode) key and import
    them into the local store, waiting at most ``budget_ms`` (default 2500, at most
    3000). → ``{"ok": true, "imported": [keys]}``; an empty list means nothing. When the
    budget runs out the reply carries what was imported so far and ``"timed_out": true``;
    the download goes on in the background. Without a remote the list is empty (and
    ``"remote": null``). Each entry imported is then recorded as used (``used``).

``prefetch`` ``{root, remote}``
    Start a pull, in the background, of the crates named in ``<root>/Cargo.lock`` (root
    is an absolute path) from the remote, at most once per root and remote every 10
    minutes. → ``{"ok": true,
    "started": bool}`` at once, with ``"reason"`` when nothing was started.

``hit`` ``{argv, cwd, env, store, started?, client_ms?, umask?}``
    Serve a wrapped rustc call from the local store, as the wrapper would: ``argv`` is
    ``[compiler, args...]``, ``cwd`` the caller's absolute working directory, ``env`` its
    whole environment, ``store`` the local store it uses (the daemon answers only for its
    own), ``started`` its ``CLOCK_MONOTONIC`` start, for the event's timing, ``umask``
    its umask, for the modes of the files the daemon creates (default 022). On a plain
    local hit the daemon restores the outputs, records the hit and replies ``{"ok": true,
    "hit": true, "stdout": "...", "stderr": "..."}`` (rustc's recorded messages, for the
    caller to print); anything else is ``{"ok": true, "hit": false}`` (with ``why`` when
    the store, the settings or ``cache.daemon_hits`` ruled it out) and the caller
    handles the call itself. A client that knows no settings (the native client,
    ``kache daemon client``) sends ``store: null``: the daemon reads the settings that
    ``env`` gives and declines (``why``: ``"another store"``, ``"daemon hits are off"``,
    ``"invalid settings"``) unless their ``cache.local_store`` is its own store and
    ``cache.daemon_hits`` is on. Such a client may send
    ``client_ms`` (the milliseconds it ran before sending) instead of ``started``. To
    such a client, a decline for the daemon's own store carries ``run``: true when its
    runner is up and the caller's ``cache.daemon_misses`` is on.

The runner
----------
``<local_store>/run.sock`` (:data:`RUN_SOCKET_NAME`) is the daemon's runner
(:mod:`kache.daemon.runner`), one connection per call. The runner first says
``{"ok": true, "ready": true}`` (a client that does not read it within
:data:`RUN_READY_TIMEOUT` runs the call itself, having sent nothing: descriptors queued
to a runner that does not read them would keep cargo's pipes open). The client then
sends one line,
``{"v": 1, "op": "run", argv, cwd, env, umask, fds, tty, started? | client_ms?}``, its
first ``sendmsg`` carrying ``SCM_RIGHTS`` with the descriptors ``fds`` lists (every
descriptor an exec would pass on, at most :data:`MAX_RUN_FDS`), in that order, then its
``/dev/tty`` when ``tty`` is true. The runner answers ``{"ok": false, "why": ...}`` (nothing
ran: the client runs kache) or ``{"ok": true, "pid": n}`` (the call's process took it
over), later ``{"ok": true, "status": s}`` or ``{"ok": true, "signal": g}`` when it ends.
The connection closing before that line means the runner went away: the client waits
until process n is gone and runs the call itself. A client that closes the connection
early has its call's process group stopped.
``used`` ``{key, crate, remote}``
    An entry that came from the remote served a build (the first hit of a prefetched
    entry): the daemon records the use on the remote object in the background, at most
    once a day per entry (``Remote.record_use``: the archive is copied onto itself when
    it was last refreshed a day ago or more), so ``kache remote gc`` keeps what builds
    use. → ``{"ok": true, "queued": bool}``; nothing for a read-only remote.
``stop``
    → ``{"ok": true, "stopping": true, "pid": n}``, then the daemon finishes the replies under
    way, stops taking jobs (pending intents stay on disk), removes the socket and the
    pid file, and exits 0.

Keys and crate names are checked at this boundary: keys are 16–128 lowercase hex
digits, crate names ASCII letters, digits, ``_`` and ``-`` (at most 128).

History: 1 — first version; ``hit`` (and ``hits_served`` in ``status``) added later,
compatibly (older daemons refuse the op as unknown, which the wrapper treats as a miss);
``store: null``, ``client_ms`` and ``why`` later still (an older daemon answers
``"another store"`` to a null store, which sends the native client to kache); then
``remote`` as an object naming the build's remote, the ``used`` op, ``remotes`` in
``status`` and intents under ``uploads/<remote id>/`` (a daemon re-executes itself when
kache's code changes, so wrapper and daemon agree); then ``run`` in declines, ``runner``
in ``status`` and the runner's socket (clients of an older daemon see no ``run`` and
start kache).
"""

from __future__ import annotations

import time

from kache import quickjson
from kache.store import layout

TYPE_CHECKING = False  # typing costs ~11 ms to import; annotations are strings here
if TYPE_CHECKING:
    from collections.abc import Iterable
    from typing import Any, Protocol

    class Connection(Protocol):
        """What :func:`read_line` needs of a socket (``socket.socket`` or ``_socket.socket``)."""

        def settimeout(self, value: float | None, /) -> None: ...

        def recv(self, bufsize: int, /) -> bytes: ...

__all__ = [
    "VERSION", "SOCKET_NAME", "RUN_SOCKET_NAME", "PID_NAME", "LOG_NAME", "INTENTS_DIR", "MAX_LINE", "MAX_REPLY", "MAX_DEPTH",
    "MAX_RUN_FDS", "RUN_READY_TIMEOUT", "READ_TIMEOUT", "CONNECT_TIMEOUT", "HIT_TIMEOUT", "STALLED_NAME", "STALL_SECS",
    "SUN_PATH_MAX", "FETCH_BUDGET_MS", "FETCH_MAX_MS",
    "PREFETCH_DEDUPE_SECS", "INTENT_SCAN_SECS", "MAX_TRIES", "OPS",
    "ProtocolError", "request_line", "reply_line", "read_line", "read_reply", "too_deep",
    "valid_key", "valid_crate", "valid_queue_id", "check_key", "check_crate", "intent_name", "parse_intent",
    "client_start", "client_umask",
]

VERSION = 1
"""The protocol version every request carries as ``v``."""
SOCKET_NAME = layout.SOCKET
"""The daemon's socket, in the local store (the store's layout names every file in it)."""
RUN_SOCKET_NAME = layout.RUN_SOCKET
"""The socket of the daemon's runner, in the local store: it runs a call the daemon declined
(a hit reply with ``"run": true``) in a child it forks, with the caller's descriptors."""
MAX_RUN_FDS = 200
"""Most descriptors a client hands the runner (SCM_RIGHTS carries at most 253)."""
RUN_READY_TIMEOUT = 0.5
"""Seconds a client waits for the runner to say it is ready; then it runs the call itself."""
PID_NAME = layout.PID
LOG_NAME = layout.LOG
INTENTS_DIR = layout.UPLOADS
MAX_LINE = 64 * 1024
"""Most bytes in one request line, newline excluded."""
MAX_REPLY = 64 << 20
"""Most bytes in one reply line, newline excluded (a hit's messages can be long)."""
MAX_DEPTH = 8
"""Most levels of lists and objects in a line: requests are flat objects of scalars, and
anything nested deeper is refused; replies are flat objects too."""
READ_TIMEOUT = 10.0
"""Seconds a connection may take to send one complete line."""
CONNECT_TIMEOUT = 0.05
"""Seconds a client waits for a connection (a live daemon accepts at once)."""
HIT_TIMEOUT = 2.0
"""Seconds a client waits for the reply to a ``hit``; then it handles the call itself."""
STALLED_NAME = f"{layout.TMP}/{layout.DAEMON_STALLED}"
"""A file in the local store that a client touches when the daemon accepted its request
and did not answer in time (or the runner did not greet it in time): stopped, wedged."""
STALL_SECS = 30.0
"""While that file is younger than this, clients do not ask the daemon or its runner: a
build must not pay a timeout on every call."""
SUN_PATH_MAX = 100
"""Longest socket path used as is: ``sun_path`` is 104 bytes on macOS, 108 on Linux, the NUL included."""
FETCH_BUDGET_MS = 2500
FETCH_MAX_MS = 3000
PREFETCH_DEDUPE_SECS = 600.0
INTENT_SCAN_SECS = 30.0
MAX_TRIES = 5
OPS = ("status", "upload", "fetch", "prefetch", "hit", "used", "stop")

_HEX = frozenset("0123456789abcdef")
_CRATE_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")


class ProtocolError(ValueError):
    """A request that breaks the protocol; its text is the reply's ``error``."""


# ---------------------------------------------------------------------- framing


def request_line(message: dict[str, Any]) -> bytes:
    """One request as a line: ``message`` with ``"v"`` added when missing, as ASCII JSON
    (texts that are not UTF-8, kept by ``surrogateescape``, travel as ``\\udcXX``) and a
    newline. Raises ``TypeError`` for an object JSON cannot hold, ``ValueError`` for a
    circular one."""
    if "v" not in message:
        message = {"v": VERSION, **message}
    return quickjson.dumps(message).encode("ascii") + b"\n"


def reply_line(reply: dict[str, Any]) -> bytes:
    """One reply as a line: ASCII JSON (anything JSON cannot hold written as its ``str``)
    and a newline."""
    return quickjson.dumps(reply, default=str).encode("ascii") + b"\n"


def read_line(conn: Connection, pending: bytearray, limit: int | None = None, timeout: float | None = None) -> bytes:
    """The next line from ``conn`` (with its newline), read within ``timeout`` seconds
    (:data:`READ_TIMEOUT` when None) as a whole: a peer trickling bytes cannot hold the
    reader longer than that. ``limit`` is :data:`MAX_LINE` when None.

    ``pending`` holds what was read past the line, for the next call (a client may send
    several requests on one connection). Returns what is left at end of stream (b"" if
    nothing). A line longer than ``limit`` comes back whole when its newline came in the
    same read, else as its first ``limit + 2`` bytes, without a newline: the caller
    refuses any line longer than ``limit``. Raises ``TimeoutError`` (an ``OSError``) when the
    line is not complete in time, and the socket's other ``OSError``\\ s.
    """
    limit = MAX_LINE if limit is None else limit
    deadline = time.monotonic() + (READ_TIMEOUT if timeout is None else timeout)
    scanned = 0
    while True:
        end = pending.find(b"\n", scanned)
        if end >= 0 or len(pending) > limit + 1:
            cut = end + 1 if end >= 0 else limit + 2
            line = bytes(pending[:cut])
            del pending[:cut]
            return line
        scanned = len(pending)
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("no complete line within the read timeout")
        conn.settimeout(left)
        chunk = conn.recv(65536)
        if not chunk:
            line = bytes(pending)
            pending.clear()
            return line
        pending += chunk


def read_reply(conn: Connection, timeout: float) -> dict[str, Any] | None:
    """The daemon's reply to the request just sent, read within ``timeout`` seconds; None
    when the connection ends first, or the line is longer than :data:`MAX_REPLY` or is
    not a JSON object. Raises ``TimeoutError`` when no whole line came in time, and the
    socket's other ``OSError``\\ s."""
    line = read_line(conn, bytearray(), MAX_REPLY, timeout)
    if not line.endswith(b"\n") or len(line) > MAX_REPLY + 1:
        return None
    try:
        reply = quickjson.loads(line)
    except (ValueError, RecursionError):
        return None
    return reply if isinstance(reply, dict) else None


def too_deep(value: Any, limit: int | None = None) -> bool:
    """Whether a decoded JSON value nests lists/objects more than ``limit`` levels
    (:data:`MAX_DEPTH` when None; iterative: no recursion limit to hit)."""
    limit = MAX_DEPTH if limit is None else limit
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children: Iterable[Any]
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


# ---------------------------------------------------------------------- fields


def valid_key(value: object) -> bool:
    """A cache key: 16 to 128 lowercase hex digits."""
    return isinstance(value, str) and 16 <= len(value) <= 128 and _HEX.issuperset(value)


def valid_crate(value: object) -> bool:
    """A crate name: ASCII letters, digits, ``_`` and ``-``, not first; at most 128."""
    return (isinstance(value, str) and 1 <= len(value) <= 128 and _CRATE_CHARS.issuperset(value)
            and value[0] != "-")


def valid_queue_id(value: object) -> bool:
    """The name of a remote's intents directory (``uploads/<queue id>/``): 24 lowercase
    hex digits (:attr:`kache.remote.spec.RemoteSpec.queue_id`)."""
    return isinstance(value, str) and len(value) == 24 and _HEX.issuperset(value)


def check_key(value: object, field: str = "key") -> str:
    if not valid_key(value):
        raise ProtocolError(f"invalid request: {field} = {_short(value)}: expected 16 to 128 lowercase hex digits")
    assert isinstance(value, str)
    return value


def check_crate(value: object) -> str:
    if not valid_crate(value):
        raise ProtocolError(f"invalid request: crate = {_short(value)}: expected letters, digits, _ and - "
                            "(at most 128)")
    assert isinstance(value, str)
    return value


def intent_name(key: str, crate: str) -> str:
    """The file name of an upload intent: ``<key>.<crate>``."""
    return f"{check_key(key)}.{check_crate(crate)}"


def client_start(msg: dict[str, Any], now: float) -> float:
    """When the caller of a ``hit`` or ``run`` started, for its event's timing: its
    ``started`` (``CLOCK_MONOTONIC`` is system-wide), else ``now`` less its ``client_ms``;
    ``now`` when neither is believable (within the last minute)."""
    started = msg.get("started")
    client_ms = msg.get("client_ms")
    if (started is None and not isinstance(client_ms, bool) and isinstance(client_ms, (int, float))
            and 0 <= client_ms < 60_000):
        started = now - client_ms / 1000  # a client without CLOCK_MONOTONIC: its time before asking
    if isinstance(started, bool) or not isinstance(started, (int, float)) or not now - 60 < started <= now:
        return now
    return float(started)


def client_umask(msg: dict[str, Any]) -> int:
    """The caller's ``umask`` (for the modes of the files made for it), 022 when invalid."""
    umask = msg.get("umask")
    if isinstance(umask, bool) or not isinstance(umask, int) or not 0 <= umask <= 0o777:
        return 0o022
    return umask


def parse_intent(name: str) -> tuple[str, str] | None:
    """(key, crate) from an intent's file name, or None for anything else."""
    key, dot, crate = name.partition(".")
    if not dot or not valid_key(key) or not valid_crate(crate):
        return None
    return key, crate


def _short(value: object) -> str:
    import json  # an error's text only: not on the hot path

    text = json.dumps(value, default=str)
    return text if len(text) <= 80 else text[:77] + "..."
