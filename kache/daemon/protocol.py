"""The daemon's socket protocol, version 1: public and versioned.

Transport
---------
A Unix stream socket at ``<local_store>/daemon.sock``, owner-only: the daemon sets its
umask to 077 before ``bind`` and ``chmod``s the file to 0600 after. (Where the path is
longer than ``sun_path`` allows, about 104 bytes, both sides reach the same file through
``/proc/self/fd/<dir fd>/daemon.sock`` on Linux.)

Framing
-------
One JSON object per line, UTF-8, each line ending in ``\\n``. A line holds at most
``MAX_LINE`` (65,536) bytes before its newline. A client may send several requests on one
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
    one asked for last, or null), ``log`` (path), ``idle_timeout_s``.

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
    ``client_ms`` (the milliseconds it ran before sending) instead of ``started``.
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
kache's code changes, so wrapper and daemon agree).
"""

from __future__ import annotations

import re

__all__ = [
    "VERSION", "SOCKET_NAME", "PID_NAME", "LOG_NAME", "INTENTS_DIR", "MAX_LINE", "MAX_REPLY", "READ_TIMEOUT",
    "FETCH_BUDGET_MS", "FETCH_MAX_MS", "PREFETCH_DEDUPE_SECS", "INTENT_SCAN_SECS", "MAX_TRIES", "OPS",
    "ProtocolError", "valid_key", "valid_crate", "check_key", "check_crate", "intent_name", "parse_intent",
]

VERSION = 1
"""The protocol version every request carries as ``v``."""
SOCKET_NAME = "daemon.sock"
PID_NAME = "daemon.pid"
LOG_NAME = "daemon.log"
INTENTS_DIR = "uploads"
MAX_LINE = 64 * 1024
"""Most bytes in one request line, newline excluded."""
MAX_REPLY = 64 << 20
"""Most bytes a client reads of one reply (a hit's messages can be long). The clients,
which do not import this module (the hot path, the native client), repeat it; a test
keeps them equal."""
READ_TIMEOUT = 10.0
"""Seconds a connection may take to send one complete line."""
FETCH_BUDGET_MS = 2500
FETCH_MAX_MS = 3000
PREFETCH_DEDUPE_SECS = 600.0
INTENT_SCAN_SECS = 30.0
MAX_TRIES = 5
OPS = ("status", "upload", "fetch", "prefetch", "hit", "used", "stop")

_KEY = re.compile(r"[0-9a-f]{16,128}")
_CRATE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]{0,127}")


class ProtocolError(ValueError):
    """A request that breaks the protocol; its text is the reply's ``error``."""


def valid_key(value: object) -> bool:
    return isinstance(value, str) and _KEY.fullmatch(value) is not None


def valid_crate(value: object) -> bool:
    return isinstance(value, str) and _CRATE.fullmatch(value) is not None


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


def parse_intent(name: str) -> tuple[str, str] | None:
    """(key, crate) from an intent's file name, or None for anything else."""
    key, dot, crate = name.partition(".")
    if not dot or not valid_key(key) or not valid_crate(crate):
        return None
    return key, crate


def _short(value: object) -> str:
    import json

    text = json.dumps(value, default=str)
    return text if len(text) <= 80 else text[:77] + "..."
