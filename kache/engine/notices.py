"""What a call prints: rustc's recorded messages on a hit, and kache's own warnings.

Replayed messages go where rustc would have written them (cargo keeps them with the
unit). Warnings go to the terminal and to ``kache.log`` in the store, never on rustc's
stderr (cargo would keep them with the unit and replay them on every later build), and
each is said once in ten minutes. Standard library only (blake3 when a warning is said):
the daemon-hit path imports this.
"""

from __future__ import annotations

import os
import sys
import time

TYPE_CHECKING = False  # typing costs ~11 ms to import; annotations are strings here

from kache.store import layout

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["warn_once", "write_replay"]

WARN_INTERVAL_SECS = 600.0


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
    """Say ``kache: warning: …`` unless the same warning was said in the last 10 minutes.

    Never on rustc's stderr: cargo keeps what a unit printed and replays it on every later
    build that finds the unit fresh, so a warning said there would outlive its cause. It
    goes to the terminal (``/dev/tty``, when the build has one) and to ``kache.log`` in
    the store (``store``, else the default cache dir). cargo runs hundreds of rustc calls
    per build; a broken config should say so once per build, not once per crate. The
    memory of what was said lives in the default cache dir (the configured one may be
    what is broken).
    """
    from blake3 import blake3

    from kache.settings import default_cache_dir

    env = os.environ if env is None else env
    digest = blake3(message.encode()).hexdigest()[:24]
    default = default_cache_dir(env)
    stamp = os.path.join(layout.tmp_path(default, layout.WARNED), digest)
    if not _claim(stamp):
        return
    line = f"kache: warning: {message}{suffix}\n"
    if not (store and _log(store, line)):
        _log(default, line)
    try:
        fd = os.open("/dev/tty", os.O_WRONLY | os.O_NOCTTY)
    except OSError:
        return  # no terminal (CI, an IDE): the log has it
    try:
        os.write(fd, line.encode("utf-8", "replace"))
    except OSError:
        pass
    finally:
        os.close(fd)


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


def _claim(stamp: str) -> bool:
    """Atomically claim the right to print (parallel rustc calls race for it)."""
    for _ in range(2):
        try:
            os.close(os.open(stamp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            return True
        except FileExistsError:
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
