"""The daemon from the outside: is it running, start it, stop it, read its log.

Used by ``kache daemon …``; each function returns a small record for the CLI to print.
"""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from kache import selfexec
from kache._record import Record
from kache.daemon import client
from kache.errors import KacheError
from kache.store import layout

if TYPE_CHECKING:
    from kache.settings import Settings

__all__ = ["Status", "StartResult", "StopResult", "RestartResult", "running_pid", "stopped_by_signal", "stopped_fix",
           "status",
           "daemon_env", "start",
           "stop", "restart", "tail", "follow", "BUILD_VARIABLES", "STARTING_SECS", "START_WAIT_SECS"]

BUILD_VARIABLES = ("RUSTC_WRAPPER", "RUSTC_WORKSPACE_WRAPPER", "RUSTC", "RUSTDOC", "RUSTFLAGS", "RUSTDOCFLAGS",
                   "OUT_DIR", "MAKEFLAGS", "MFLAGS", "CARGO_MAKEFLAGS")
"""Variables of a build that a daemon must not keep (with every ``CARGO*`` one)."""
_CARGO_COMPILE_MARKERS = ("CARGO_PKG_NAME", "CARGO_CRATE_NAME", "CARGO_MANIFEST_DIR", "CARGO_PRIMARY_PACKAGE")


STARTING_SECS = 30.0
"""A daemon that holds its pid file but does not answer yet is "starting" for this long
after it took the file (importing, binding its socket), then "not answering"."""
START_WAIT_SECS = 10.0
"""How long ``kache daemon start`` waits for a new daemon to answer, by default."""


class Status(Record):
    """What ``kache daemon`` shows: ``reply`` is the daemon's status reply when it answered.

    ``state``: ``running`` (it answered), ``starting`` (it holds the pid file since less
    than STARTING_SECS but does not answer yet), ``not-answering`` (longer), ``stopped``.
    """

    __slots__ = ("running", "pid", "socket", "log", "reply", "state", "since")
    _defaults = {"pid": None, "reply": None, "state": "stopped", "since": None}
    running: bool
    pid: int | None
    socket: str
    log: str
    reply: dict[str, Any] | None
    state: str
    since: float | None
    """When a daemon that does not answer took its pid file (Unix time), if one does."""

    def to_json(self) -> dict[str, Any]:
        if self.reply is not None:
            out = {"running": True, "responding": True, "state": self.state,
                   **{k: v for k, v in self.reply.items() if k != "ok"}}
            out["started"] = _iso(out.get("started"))
            return out
        return {"running": self.running, "responding": False, "state": self.state, "pid": self.pid,
                "socket": self.socket, "log": self.log}


class StartResult(Record):
    """What ``start`` did: ``already_running`` (none started; ``was_starting``: the one
    there did not answer yet, and ``ready`` says whether it did since), or one started
    (``ready``: it answers)."""

    __slots__ = ("already_running", "pid", "ready", "stripped", "log", "service", "was_starting")
    _defaults = {"ready": False, "stripped": list, "service": False, "was_starting": False}
    already_running: bool
    pid: int | None
    ready: bool
    stripped: list[str]
    log: str
    service: bool
    """The running daemon is a service's (systemd, launchd)."""
    was_starting: bool


class StopResult(Record):
    __slots__ = ("was_running", "pid", "how")
    _defaults = {"how": ""}
    was_running: bool
    pid: int | None
    how: str


class RestartResult(Record):
    """What ``restart`` did: ``old_pid`` None when no daemon ran; ``command`` the service
    manager's command it ran (empty when kache stopped and started the daemon itself)."""

    __slots__ = ("old_pid", "new_pid", "log", "command")
    _defaults = {"command": list}
    old_pid: int | None
    new_pid: int | None
    log: str
    command: list[str]


def _iso(t: Any) -> Any:
    if not isinstance(t, (int, float)):
        return t
    from datetime import datetime, timezone

    return datetime.fromtimestamp(t, tz=timezone.utc).isoformat(timespec="seconds")


def stopped_by_signal(pid: int | None) -> bool:
    """Whether process ``pid`` is stopped (SIGSTOP, SIGTSTP, a debugger): its state in
    ``/proc/<pid>/stat`` is ``T`` or ``t``. False where that cannot be read."""
    if not pid:
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rpartition(b")")[2].split()[:1]
    except OSError:
        return False
    return state in ([b"T"], [b"t"])


def stopped_fix(pid: int | None) -> str:
    """What to do about a daemon :func:`stopped_by_signal` (status, doctor and start say it)."""
    return f"`kill -CONT {pid}` resumes it; `kache daemon restart` replaces it"


def running_pid(store_root: str) -> int | None:
    """The pid holding the daemon's pid-file lock, or None when no daemon runs.

    A pid file nobody locks is stale (its daemon died): None. A locked file whose pid
    cannot be read yet gives 0 (running, pid unknown).
    """
    path = layout.pid_path(store_root)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
            return int(text) if text.isdigit() else 0
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def status(store_root: str, timeout: float = 2.0) -> Status:
    """Ask the daemon for its status; say whether one runs when it does not answer."""
    reply = client.request(store_root, {"op": "status"}, timeout=timeout)
    sock = client.socket_path(store_root)
    log = layout.log_path(store_root)
    if reply is not None and reply.get("ok") is True:
        return Status(True, reply.get("pid"), reply.get("socket", sock), reply.get("log", log), reply, "running")
    pid = running_pid(store_root)
    since: float | None = None
    if pid is None:
        pid, since = _spawned(store_root)
        if pid is None:
            return Status(False, None, sock, log)
    else:
        try:
            since = os.stat(layout.pid_path(store_root)).st_mtime
        except OSError:
            pass
    young = since is not None and time.time() - since < STARTING_SECS and not stopped_by_signal(pid)
    return Status(True, pid, sock, log, None, "starting" if young else "not-answering", since)


def _starting_path(store_root: str) -> str:
    """Where ``start`` notes the pid it launched: until that process takes the pid file
    (and removes this), a status says it is starting (STARTING_SECS at most, while the
    process lives)."""
    return layout.tmp_path(store_root, layout.DAEMON_STARTING)


def _spawned(store_root: str) -> tuple[int | None, float | None]:
    """The pid ``start`` launched, and when, while that process lives and has not taken
    the pid file yet (the interpreter starting): (None, None) when there is none."""
    path = _starting_path(store_root)
    try:
        with open(path, "rb") as f:
            text = f.read(32).decode("ascii", "replace").strip()
            since = os.fstat(f.fileno()).st_mtime
    except OSError:
        return None, None
    if not text.isdigit() or time.time() - since >= STARTING_SECS:
        return None, None
    pid = int(text)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None, None
    except PermissionError:
        pass
    try:  # a zombie no one reaped yet (Linux) is gone too
        with open(f"/proc/{pid}/stat", "rb") as f:
            if f.read().rpartition(b")")[2].split()[:1] == [b"Z"]:
                return None, None
    except OSError:
        pass
    return pid, since


def _note_spawned(store_root: str, pid: int) -> None:
    path = _starting_path(store_root)
    old = os.umask(0o077)
    try:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        tmp = f"{path}.{os.getpid()}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        with open(fd, "w", encoding="ascii") as f:
            f.write(f"{pid}\n")
        os.replace(tmp, path)
    except OSError:
        pass
    finally:
        os.umask(old)


def _log_size(log: str) -> int:
    try:
        return os.stat(log).st_size
    except OSError:
        return 0


def _log_since(log: str, offset: int, lines: int = 8) -> str:
    """The last ``lines`` lines written to ``log`` after ``offset``, indented, for an error."""
    try:
        with open(log, "rb") as f:
            f.seek(offset)
            text = f.read()[-65536:].decode("utf-8", "replace")
    except OSError:
        return ""
    tail = [line for line in text.splitlines() if line.strip()][-lines:]
    return "".join(f"\n  {line}" for line in tail)


def _wait_answer(root: str, wait: float, proc: subprocess.Popen[bytes] | None, log: str, offset: int
                 ) -> Status:
    """Wait up to ``wait`` seconds for the daemon of ``root`` to answer; raise KacheError
    with the end of its log when ``proc`` (the one just started) exits first with a
    failure, or nothing answers in time."""
    end = time.monotonic() + wait
    what = f"pid {proc.pid}" if proc is not None else "the daemon"
    while True:
        current = status(root, timeout=0.5)
        if current.reply is not None:
            return current
        code = proc.poll() if proc is not None else None
        if code is not None and code != 0:
            raise KacheError(f"starting the daemon failed: {what} exited with status {code}; the end of its log "
                             f"({log}):{_log_since(log, offset) or ' (nothing new)'}")
        if time.monotonic() >= end:
            break
        time.sleep(0.05)
    raise KacheError(f"starting the daemon failed: {what} did not answer within {wait:g}s; the end of its log "
                     f"({log}):{_log_since(log, offset) or ' (nothing new)'}\n"
                     "`kache daemon status` shows whether it answers later; `kache daemon stop` stops it")


def _remote_variables() -> list[str]:
    from kache.settings import settings_table

    return [s.env for s in settings_table() if s.key.startswith("cache.remote.") and s.env]


def daemon_env(env: Mapping[str, str], *, from_build: bool) -> tuple[dict[str, str], list[str]]:
    """The environment a daemon started now gets, and the remote variables left out.

    Always without cargo's and rustc's variables (``CARGO*``, ``RUSTC_WRAPPER``, …).
    ``from_build`` (the wrapper's ``start --from-build``, or a ``start`` run inside a
    compile, seen by cargo's ``CARGO_PKG_NAME``/``CARGO_CRATE_NAME``): also without the
    variables that choose the remote (``cache.remote.*``: bucket, endpoint, prefix, …).
    Builds name their remote, with their credentials, in each request; the daemon's own
    settings name one only for the upload intents an older kache left, and that one
    comes from the config files. The build's credential variables (``KACHE_S3_*`` keys,
    ``AWS_*`` keys, profile and files) go too: a daemon a build started must not lend
    that build's keys to another build. A daemon started by hand or by a service keeps
    them, for the builds that bring none.
    """
    from_build = from_build or any(k in env for k in _CARGO_COMPILE_MARKERS)
    out = {k: v for k, v in env.items() if not k.startswith("CARGO") and k not in BUILD_VARIABLES}
    stripped: list[str] = []
    if from_build:
        from kache.remote.spec import CREDENTIAL_VARIABLES

        for name in (*_remote_variables(), *CREDENTIAL_VARIABLES):
            if name in out:
                del out[name]
                stripped.append(name)
    return out, stripped


def start(settings: Settings, *, from_build: bool = False, wait: float = 0.0,
          env: Mapping[str, str] | None = None) -> StartResult:
    """Start ``kache daemon run`` detached (new session, stdin from /dev/null, output to
    the log), unless one runs or is starting; with ``wait`` > 0, wait that long for it
    (the new one, or the one starting) to answer.

    Raises KacheError, with the end of the log, when it exits at once or does not
    answer within ``wait``.
    """
    root = str(settings.local_store)
    log = layout.log_path(root)
    current = status(root, timeout=1.0)
    if current.reply is not None:
        return StartResult(True, current.pid, True, log=log, service=bool(current.reply.get("service")))
    if current.running:  # it holds the pid file but does not answer (yet): no second one
        if stopped_by_signal(current.pid):  # waiting for it would be in vain
            raise KacheError(f"cannot start the daemon: one runs but is stopped (pid {current.pid} was sent SIGSTOP "
                             f"or is under a debugger); {stopped_fix(current.pid)}")
        result = StartResult(True, current.pid, False, log=log, was_starting=True)
        if wait > 0:
            answered = _wait_answer(root, wait, None, log, _log_size(log))
            result.ready, result.pid = True, answered.pid
            result.service = bool(answered.reply and answered.reply.get("service"))
        return result
    child_env, stripped = daemon_env(os.environ if env is None else env, from_build=from_build)
    old = os.umask(0o077)
    try:
        os.makedirs(root, mode=0o700, exist_ok=True)
        out = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as e:
        raise KacheError(f"cannot start the daemon: {e.filename or root}: {e.strerror or e}") from None
    finally:
        os.umask(old)
    offset = _log_size(log)
    try:
        proc = subprocess.Popen(selfexec.command("daemon", "run", "--detached"),
                                stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=selfexec.environ(child_env),
                                cwd="/", close_fds=True, start_new_session=True)
    except OSError as e:
        raise KacheError(f"cannot start the daemon: {sys.executable}: {e.strerror or e}") from None
    finally:
        os.close(out)
    _note_spawned(root, proc.pid)
    result = StartResult(False, proc.pid, False, stripped, log)
    if wait <= 0:
        return result
    current = _wait_answer(root, wait, proc, log, offset)
    result.ready = True
    if current.pid != proc.pid:  # another start won the race: fine
        result.already_running = True
        result.pid = current.pid
        result.service = bool(current.reply and current.reply.get("service"))
    return result


def _wait_gone(root: str, seconds: float) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if running_pid(root) is None:
            return True
        time.sleep(0.05)
    return running_pid(root) is None


def stop(store_root: str, *, timeout: float = 5.0) -> StopResult:
    """Ask the daemon to stop and wait up to ``timeout`` for it; then SIGTERM it (and
    SIGCONT: one stopped by SIGSTOP is not asked, and ends once continued).

    Raises KacheError when it is still running after that.
    """
    pid = running_pid(store_root)
    # A stopped daemon (SIGSTOP) would not answer the request: straight to the signals.
    reply = None if stopped_by_signal(pid) else client.request(store_root, {"op": "stop"}, timeout=2.0)
    if reply is not None and reply.get("ok"):
        if isinstance(reply.get("pid"), int):
            pid = reply["pid"]
        if _wait_gone(store_root, timeout):
            return StopResult(True, pid, "request")
        pid = running_pid(store_root)
        if pid is None:
            return StopResult(True, None, "request")
    if pid is None:
        return StopResult(False, None)
    if pid <= 0:
        raise KacheError(f"cannot stop the daemon: {layout.pid_path(store_root)}: it is locked but holds "
                         "no pid")
    try:
        os.kill(pid, signal.SIGTERM)
        os.kill(pid, signal.SIGCONT)  # a stopped one acts on the TERM once continued (as systemd does)
    except ProcessLookupError:
        return StopResult(True, pid, "gone")
    except PermissionError:
        raise KacheError(f"cannot stop the daemon: pid {pid}: not allowed to signal it") from None
    if _wait_gone(store_root, 3.0):
        return StopResult(True, pid, "SIGTERM")
    raise KacheError(f"cannot stop the daemon: pid {pid}: still running after SIGTERM; `kill -9 {pid}` ends it")


def restart(settings: Settings, *, wait: float = 5.0) -> RestartResult:
    """Stop the running daemon (if any) and start it again; return once the new one
    answers (within ``wait`` seconds).

    A daemon run by a service manager (its status says ``service``) is restarted
    through that manager (``systemctl --user restart <unit>``, ``launchctl kickstart
    -k gui/<uid>/<label>``): stopped by hand, the manager would not start it again.
    Raises KacheError saying what to run when that is not possible here, and when the
    new daemon does not answer.
    """
    import shlex
    import shutil

    from kache.daemon.service import restart_argv

    root = str(settings.local_store)
    log = layout.log_path(root)
    current = status(root, timeout=2.0)
    if current.reply is not None and current.reply.get("service"):
        manager = current.reply.get("manager")
        if "manager" in current.reply and not isinstance(manager, dict):  # no "manager": an older daemon, kache's unit assumed
            raise KacheError(f"cannot restart the daemon: pid {current.pid} runs with --service, but not under "
                             "systemd or launchd: restart it where it was started (`kache daemon stop` stops it)")
        argv = restart_argv(manager if isinstance(manager, dict) else None)
        shown = shlex.join(argv)
        tool = shutil.which(argv[0])
        if tool is None:
            raise KacheError(f"cannot restart the daemon: pid {current.pid} runs as a service and {argv[0]} is not "
                             f"on PATH; restart it with `{shown}`")
        out = subprocess.run([tool, *argv[1:]], capture_output=True, text=True)
        if out.returncode != 0:
            why = (out.stderr or out.stdout).strip().splitlines()
            raise KacheError(f"cannot restart the daemon: `{shown}` failed: exit status {out.returncode}: "
                             f"{why[-1] if why else 'no output'}")
        new = _wait_new(root, current.pid, wait)
        if new is None:
            raise KacheError(f"restarting the daemon failed: `{shown}` ran, but no new daemon answered within "
                             f"{wait:g}s: see `kache daemon log` ({log})")
        return RestartResult(current.pid, new, log, argv)
    old = current.pid if current.running else None
    if current.running:
        old = stop(root).pid or old
    started = start(settings, wait=wait)
    return RestartResult(old, started.pid, log)


def _wait_new(root: str, old: int | None, seconds: float) -> int | None:
    """The pid of a daemon other than ``old`` once it answers, or None after ``seconds``."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        reply = client.request(root, {"op": "status"}, timeout=0.5)
        if reply is not None and reply.get("ok") is True and reply.get("pid") != old:
            pid = reply.get("pid")
            return pid if isinstance(pid, int) else 0
        time.sleep(0.05)
    return None


def tail(path: str, lines: int) -> list[str]:
    """The last ``lines`` lines of a text file (read from the end, block by block)."""
    if lines <= 0:
        return []
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        pos = f.tell()
        data = b""
        while pos > 0 and data.count(b"\n") <= lines:
            step = min(65536, pos)
            pos -= step
            f.seek(pos)
            data = f.read(step) + data
    text = data.decode("utf-8", "replace").splitlines()
    return text[-lines:]


def follow(path: str, *, poll: float = 0.25, stop_after: float | None = None) -> Iterator[str]:
    """Lines appended to a log from now on, across rotation (a new file at the same path).

    Runs until interrupted, or for ``stop_after`` seconds.
    """
    end = None if stop_after is None else time.monotonic() + stop_after
    f = None
    ident: tuple[int, int] | None = None
    from_start = False  # the first file is read from its end; a rotated-in one from its start
    try:
        while end is None or time.monotonic() < end:
            if f is None:
                try:
                    f = open(path, "rb")
                except FileNotFoundError:
                    from_start = True
                    time.sleep(poll)
                    continue
                st = os.fstat(f.fileno())
                ident = (st.st_dev, st.st_ino)
                if not from_start:
                    f.seek(0, os.SEEK_END)
            line = f.readline()
            if line.endswith(b"\n"):
                yield line.decode("utf-8", "replace").rstrip("\n")
                continue
            if line:  # a line still being written: read it whole next time
                f.seek(-len(line), os.SEEK_CUR)
            try:
                st = os.stat(path)
                rotated = (st.st_dev, st.st_ino) != ident or st.st_size < f.tell()
            except FileNotFoundError:
                rotated = True
            if rotated:
                f.close()
                f = None
                from_start = True
                continue
            time.sleep(poll)
    finally:
        if f is not None:
            f.close()
