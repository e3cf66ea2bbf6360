"""What a call prints: rustc's recorded messages on a hit, and kache's own warnings.

Replayed messages go where rustc would have written them (cargo keeps them with the
unit). Warnings go to the terminal and to ``kache.log`` in the store, never on rustc's
stderr (cargo would keep them with the unit and replay them on every later build), and
each is said once per build (per cargo process). ``KACHE_LOG=kache=debug`` adds one
line per call to ``kache.log`` (:func:`log_line`). Standard library only (blake3 when a
warning is said): the daemon-hit path imports this.
"""

from __future__ import annotations

import os
import sys
import time

TYPE_CHECKING = False  # typing costs ~11 ms to import; annotations are strings here

from kache.store import layout

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["warn_once", "write_replay", "log_level", "log_line", "build_identity", "set_caller", "run_for_client"]

WARN_INTERVAL_SECS = 600.0
"""How long a warning stays said for a caller with no build to tell apart (no parent, or
no start time of it to read): then by time."""
STAMP_MAX_AGE_SECS = 86400.0
"""Stamps older than this are removed whenever a warning is said."""


def write_replay(stdout: str, stderr: str) -> None:
    """Pass rustc's recorded messages on to cargo, as rustc would have printed them."""
    if stdout:
        sys.stdout.buffer.write(stdout.encode("utf-8", "surrogateescape"))
        sys.stdout.flush()
    if stderr:
        sys.stderr.buffer.write(stderr.encode("utf-8", "surrogateescape"))
        sys.stderr.flush()


LOG_MAX_BYTES = 1 << 20


def warn_once(message: str, env: Mapping[str, str] | None = None, *, suffix: str = "; running rustc directly",
              store: str | None = None) -> None:
    """Say ``kache: warning: …`` once per build: unless this build said it already.

    Never on rustc's stderr: cargo keeps what a unit printed and replays it on every later
    build that finds the unit fresh, so a warning said there would outlive its cause. It
    goes to the terminal (``/dev/tty``, when the build has one and runs in its foreground)
    and to ``kache.log`` in the store (``store``, else the default cache dir). cargo runs hundreds of rustc calls
    per build; a problem should be said once per build, not once per crate, and again in
    the next build while it lasts. The build is the parent process (cargo) with its start
    time (:func:`build_identity`); without one, once in :data:`WARN_INTERVAL_SECS`. The
    memory of what was said lives in the default cache dir (the configured one may be
    what is broken).
    """
    from blake3 import blake3

    from kache.settings import default_cache_dir

    env = os.environ if env is None else env
    digest = blake3(message.encode("utf-8", "surrogateescape")).hexdigest()[:24]
    default = default_cache_dir(env)
    build = build_identity()
    name = digest if build is None else f"{digest}.{build}"
    stamp = os.path.join(layout.tmp_path(default, layout.WARNED), name)
    if not _claim(stamp, by_time=build is None or "-" not in build):
        return
    line = f"kache: warning: {message}{suffix}\n"
    if log_level(env) <= 30:  # KACHE_LOG=kache=error (or off) keeps warnings out of the log
        if not (store and _log(store, line)):
            _log(default, line)
    if _caller:  # run by the daemon's runner: the client's terminal, when it had one
        tty, pgrp = _caller["tty"], _caller["pgrp"]
        try:
            if tty >= 0 and os.tcgetpgrp(tty) == pgrp:
                os.write(tty, line.encode("utf-8", "replace"))
        except OSError:
            pass
        return
    try:
        fd = os.open("/dev/tty", os.O_WRONLY | os.O_NOCTTY)
    except OSError:
        return  # no terminal (CI, an IDE): the log has it
    try:
        # Only a build in the terminal's foreground: a background job that writes to it
        # is stopped (SIGTTOU) under `stty tostop`, and the build with it.
        if os.tcgetpgrp(fd) == os.getpgrp():
            os.write(fd, line.encode("utf-8", "replace"))
    except OSError:
        pass
    finally:
        os.close(fd)


_caller: dict[str, int] = {}
"""Set in a call the daemon's runner runs for a client (:func:`set_caller`)."""


def run_for_client() -> bool:
    """Whether this process runs a client's call for the daemon's runner."""
    return bool(_caller)


def set_caller(parent: int, tty: int | None, pgrp: int) -> None:
    """This process runs a client's call (kache.daemon.runner): its build is the
    client's parent's, and its terminal the client's ``/dev/tty`` (``tty``, an open
    descriptor; None: none), written to while ``pgrp`` (the client's group) is in its
    foreground."""
    _caller.update(parent=parent, tty=-1 if tty is None else tty, pgrp=pgrp)


def build_identity() -> str | None:
    """The build this call belongs to: ``<ppid>-<start time>`` of the parent (cargo; a
    native client execs kache, so its parent is cargo too), from ``/proc``; ``<ppid>``
    where there is no ``/proc``; None with no parent (orphaned, the daemon)."""
    ppid = _caller["parent"] if _caller else os.getppid()
    if ppid <= 1:
        return None
    try:
        with open(f"/proc/{ppid}/stat", "rb") as f:
            stat = f.read()
        # after "(comm)": state is field 3; starttime is field 22
        return f"{ppid}-{int(stat.rpartition(b')')[2].split()[19])}"
    except (OSError, ValueError, IndexError):
        return str(ppid)


_level: list[int] = []


def log_level(env: Mapping[str, str] | None = None) -> int:
    """This process's ``KACHE_LOG`` level (read once; :mod:`kache.loglevel`)."""
    if env is not None and env is not os.environ:
        from kache import loglevel

        return loglevel.level(env.get("KACHE_LOG"))
    if not _level:
        from kache import loglevel

        _level.append(loglevel.level(os.environ.get("KACHE_LOG")))
    return _level[0]


def log_line(store: str | None, level: str, text: str, *, name: str = "kache.wrapper") -> None:
    """Append ``<time> <level> <name>[<pid>]: <text>`` to ``kache.log`` in ``store``
    (else the default cache dir). Never raises; callers check :func:`log_level` first."""
    from kache.settings import default_cache_dir

    line = f"{level} {name}[{os.getpid()}]: {text}\n"
    if not (store and _log(store, line)):
        _log(default_cache_dir(os.environ), line)


def _log(directory: str, line: str) -> bool:
    """Append a line to ``<directory>/kache.log`` (kept under 1 MiB: the old half moves to
    ``kache.log.1``); False if it could not. Never raises."""
    path = layout.wrapper_log_path(directory)
    try:
        old = os.umask(0o077)
        try:
            os.makedirs(directory, mode=0o700, exist_ok=True)
        finally:
            os.umask(old)
        try:
            if os.stat(path).st_size > LOG_MAX_BYTES:
                os.replace(path, path + ".1")
        except FileNotFoundError:
            pass
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime())
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, f"{stamp} {line}".encode("utf-8", "replace"))
        finally:
            os.close(fd)
    except OSError:
        return False
    return True


def _claim(stamp: str, by_time: bool) -> bool:
    """Atomically claim the right to print (parallel rustc calls race for it). A stamp of
    a known build is never claimed twice; one kept ``by_time`` again after the interval.
    Claiming removes stamps of long-gone builds."""
    for _ in range(2):
        try:
            os.close(os.open(stamp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            _sweep(os.path.dirname(stamp))
            return True
        except FileExistsError:
            if not by_time:
                return False
            try:
                if time.time() - os.stat(stamp).st_mtime < WARN_INTERVAL_SECS:
                    return False
                os.unlink(stamp)
            except OSError:
                return False
        except OSError:
            old = os.umask(0o077)  # it may create the default cache dir: owner-only
            try:
                os.makedirs(os.path.dirname(stamp), mode=0o700, exist_ok=True)
            except OSError:
                return True  # nowhere to remember: better to warn than to stay silent
            finally:
                os.umask(old)
    return False


def _sweep(directory: str) -> None:
    """Remove stamps older than :data:`STAMP_MAX_AGE_SECS` (only when a warning is said)."""
    limit = time.time() - STAMP_MAX_AGE_SECS
    try:
        with os.scandir(directory) as it:
            for entry in it:
                try:
                    if entry.stat().st_mtime < limit:
                        os.unlink(entry.path)
                except OSError:
                    pass
    except OSError:
        pass
