"""The daemon's runner: the calls the daemon declines, run without starting Python again.

A miss costs kache ~18 ms of starting CPython and importing before it does anything
(docs/performance.md, "A miss"); over the ~320 misses of a cold build that is most of
kache's overhead. The runner is one process the daemon starts, single-threaded, with the
wrapper's modules imported. It listens on ``<store>/run.sock``; the native client, after
the daemon declined a call and offered the runner (``"run": true``), connects, reads the
runner's ``{"ok": true, "ready": true}``, then sends the call as one line with its open
descriptors attached (``SCM_RIGHTS``); the process is :mod:`kache.wrapper.runner`, this
module the daemon's handle on it (the protocol: :mod:`kache.daemon.wire`)::

    {"v": 1, "op": "run", "argv": [...], "cwd": "...", "env": {...}, "umask": 18,
     "fds": [0, 1, 2, 5, 6], "tty": false, "client_ms": ...}

The runner refuses a client that does not see the same files or run with the same rights
(:mod:`kache.daemon.peer`: another user, namespace or root directory, other groups,
no_new_privs, seccomp, capabilities or personality). Otherwise it forks a child per
call, which becomes the process an exec of ``kache`` would have been: the client's
descriptors at the client's numbers (stdin, stdout, stderr, cargo's jobserver pipe), its
environment, directory, umask, CPU affinity, scheduling policy, niceness, OOM score and
resource limits, the client's parent as the build kache's warnings are said once for, the
client's terminal (``"tty": true``: one more descriptor, the client's ``/dev/tty``) for
those warnings. Then it runs :func:`kache.wrapper.run`, which compiles and records, or
execs rustc, exactly as in a process of its own. The child sends ``{"ok": true, "pid":
N}`` once it has taken the call over; when it ends, the runner sends ``{"ok": true,
"status": S}`` (or ``"signal": G``) and the client exits with it. ``{"ok": false, "why":
...}`` first means nothing ran: the client runs ``kache`` itself.

What differs from a process of its own: the child is in its own session, not in cargo's
process group, so a signal cargo's terminal sends does not reach it; when the client
goes (Ctrl-C kills it with cargo), the runner sees its connection close and stops the
child's process group (SIGTERM, then SIGKILL). A stopped client (Ctrl-Z) does not stop the
call. The call runs in the daemon's control group with its I/O priority, and its CPU time
counts for the daemon, not for cargo.

Only on Linux (``SO_PEERCRED``, ``/proc``); only for clients of the same user. The
runner stops accepting when the daemon goes (its stdin closes) or on SIGTERM, and exits
once its calls have ended.
"""

from __future__ import annotations

import os
import sys
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    import subprocess

__all__ = ["Runner", "supported", "RESTART_SECS"]

RESTART_SECS = 10.0
"""The daemon starts a runner that died again after this long at the soonest."""

_BOOTSTRAP = (
    "import os, site, sys\n"
    "for d in os.environ.pop({var!r}, '').split(os.pathsep):\n"
    "    d and site.addsitedir(d)\n"
    "from kache.wrapper.runner import main\n"
    "sys.exit(main(sys.argv[1]))\n"
)


def supported() -> bool:
    """Whether this platform has what the runner needs (Linux: SO_PEERCRED, /proc)."""
    return sys.platform == "linux"


class Runner:
    """The daemon's handle on its runner process (start, health, stop)."""

    def __init__(self, root: str, log_path: str) -> None:
        self.root = root
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self._next_start = 0.0

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else None

    def running(self) -> bool:
        return self.pid is not None

    def start(self) -> bool:
        """Start the runner (its output appended to the daemon's log); False if it could not."""
        import subprocess

        from kache import selfexec

        self._next_start = time.monotonic() + RESTART_SECS
        command = [sys.executable, "-c", _BOOTSTRAP.format(var=selfexec.SITE_DIRS_VARIABLE), self.root]
        try:
            log = os.open(self.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError:
            log = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
        try:
            self.proc = subprocess.Popen(command, env=selfexec.environ(), stdin=subprocess.PIPE, stdout=log,
                                         stderr=log, close_fds=True, start_new_session=True, cwd="/")
        except OSError:
            self.proc = None
            return False
        finally:
            os.close(log)
        return True

    def keep_up(self) -> None:
        """Start the runner again if it died (at most every :data:`RESTART_SECS`)."""
        if self.proc is not None and self.proc.poll() is not None and time.monotonic() >= self._next_start:
            self.start()

    def stop(self) -> None:
        """Close its stdin: it stops accepting now and exits once its calls have ended
        (they are builds' compiles: never cut short here)."""
        if self.proc is not None and self.proc.stdin is not None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
