"""The daemon's runner process: it runs the calls the daemon declines, in children it forks.

See :mod:`kache.daemon.runner` for what it is and the protocol; the daemon starts this
module's :func:`main` (``python -c``, the daemon's interpreter and import path) and keeps
it up. It is the wrapper's process shell, started once: everything a call imports is
imported here (:data:`PRELOAD`), and each child becomes the ``kache`` process the client
would have started and runs :func:`kache.wrapper.run`.
"""

from __future__ import annotations

import os
import sys
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    import selectors
    import socket

__all__ = ["main", "PRELOAD", "STOP_GRACE_SECS", "RECEIVE_SECS", "READY"]

PRELOAD = (
    "kache.wrapper", "kache.wrapper.daemon_hit", "kache.wrapper.daemon_remote",
    "kache.engine.handle", "kache.engine.record", "kache.engine.portable", "kache.engine.objdigest",
    "kache.engine.restore", "kache.store.events", "kache.daemon.wire", "kache.loglevel", "fcntl", "select",
    "resource",
)
"""What a call imports, imported once in the runner: a child starts with it loaded."""

STOP_GRACE_SECS = 5.0
"""After SIGTERM to a call whose client went, how long before SIGKILL."""

RECEIVE_SECS = 0.5
"""How long the runner waits for a request once it said it is ready (a client sends it at
once; one that stalls holds up the calls behind it only this long)."""

READY = b'{"ok":true,"ready":true}\n'
"""What the runner says first on each connection: a client sends its descriptors only
after it, so a runner that does not answer (stopped) never holds them (cargo would wait
for the end of its pipes)."""


def _log(level: str, text: str) -> None:
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    try:
        os.write(2, f"{stamp} {level} kache.runner[{os.getpid()}]: {text}\n".encode("utf-8", "replace"))
    except OSError:
        pass


def main(root: str) -> int:
    """The runner process: listen on ``<root>/run.sock`` until stdin closes or SIGTERM."""
    import importlib

    for name in PRELOAD:
        importlib.import_module(name)
    import gc
    import selectors
    import signal

    from kache.daemon import client, wire
    from kache.store import layout

    path = layout.run_socket_path(root)
    if len(os.fsencode(path)) > wire.SUN_PATH_MAX:
        _log("WARNING", f"not started: the socket path is too long: {path}")
        return 1
    listener, inode = client.listen(path)  # the daemon starts one runner, after its pid lock
    listener.setblocking(False)
    server = _Server(listener, path, inode)

    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    os.set_blocking(wake_r, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda *_: server.close_listener())
    server.wake = (wake_r, wake_w)
    gc.collect()
    gc.freeze()  # the children's pages stay shared longer (no collection touches them)
    _log("INFO", f"started: {path}")

    sel = selectors.DefaultSelector()
    server.sel = sel
    sel.register(listener, selectors.EVENT_READ, "accept")
    sel.register(wake_r, selectors.EVENT_READ, "wake")
    sel.register(0, selectors.EVENT_READ, "daemon")
    while server.listening or server.calls:
        try:
            _turn(server, sel, wake_r)
        except Exception as e:  # noqa: BLE001 - the calls under way still need their statuses
            _log("WARNING", f"{type(e).__name__}: {e}")
            time.sleep(0.05)
    _log("INFO", "stopped")
    return 0


def _turn(server: _Server, sel: selectors.BaseSelector, wake_r: int) -> None:
    """One turn of the loop: accept, notice signals and clients that went, reap."""
    timeout = 1.0 if server.listening else 0.2
    for key, _ in sel.select(timeout):
        what = key.data
        if what == "accept":
            server.accept()
        elif what == "wake":
            try:
                while os.read(wake_r, 512):
                    pass
            except OSError:
                pass
        elif what == "daemon":
            try:
                gone = not os.read(0, 512)
            except OSError:
                gone = True
            if gone:
                sel.unregister(0)
                server.close_listener()
        else:
            server.client_readable(what)
    server.reap()
    server.stop_overdue()


class _Call:
    __slots__ = ("pid", "conn", "started_r", "term_at")

    def __init__(self, pid: int, conn: socket.socket | None, started_r: int) -> None:
        self.pid = pid
        self.conn = conn
        self.started_r = started_r
        self.term_at: float | None = None


class _Server:
    def __init__(self, listener: socket.socket, path: str, inode: tuple[int, int]) -> None:
        self.listener: socket.socket | None = listener
        self.path = path
        self.inode = inode
        self.calls: dict[int, _Call] = {}
        self.by_conn: dict[int, _Call] = {}
        self.wake: tuple[int, int] = (-1, -1)
        self.sel: selectors.BaseSelector | None = None

    @property
    def listening(self) -> bool:
        return self.listener is not None

    def close_listener(self) -> None:
        if self.listener is None:
            return
        _unregister(self.sel, self.listener)
        self.listener.close()
        self.listener = None
        from kache.daemon import client

        try:
            client.unlink_if_same(self.path, self.inode)
        except OSError:
            pass

    def accept(self) -> None:
        assert self.listener is not None
        try:
            conn, _ = self.listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            _log("WARNING", f"accept failed: {e}")
            return
        fds: list[int] = []
        try:
            conn.settimeout(RECEIVE_SECS)
            conn.sendall(READY)  # only now does the client send its descriptors
            msg, fds, peer = _receive(conn)
            why = _refusal(msg, fds, peer)
            if why is not None:
                _log("INFO", f"refused a call: {why}")
                conn.sendall(b'{"ok":false,"why":"' + why.encode("ascii", "replace") + b'"}\n')
                conn.close()
                return
            self._fork(conn, msg, fds, peer)
        except Exception as e:  # noqa: BLE001 - one bad client must not stop the runner
            _log("WARNING", f"call not taken: {type(e).__name__}: {e}")
            try:
                conn.sendall(b'{"ok":false,"why":"not taken"}\n')
            except OSError:
                pass
            conn.close()
        finally:
            for fd in fds:
                try:
                    os.close(fd)
                except OSError:
                    pass

    def _fork(self, conn: socket.socket, msg: dict[str, object], fds: list[int], peer: tuple[int, int, int]) -> None:
        started_r, started_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: never returns
            os.close(started_r)
            _child(conn, msg, fds, peer, started_w)
        os.close(started_w)
        call = _Call(pid, conn, started_r)
        self.calls[pid] = call
        self.by_conn[conn.fileno()] = call
        conn.setblocking(False)
        assert self.sel is not None
        import selectors

        self.sel.register(conn, selectors.EVENT_READ, conn.fileno())

    def client_readable(self, fileno: int) -> None:
        """The client sent something (nothing is expected) or went away."""
        call = self.by_conn.get(fileno)
        if call is None or call.conn is None:
            return
        try:
            data = call.conn.recv(512)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if data:
            return
        self._forget_conn(call)
        _kill_group(call.pid, 15)
        call.term_at = time.monotonic()

    def _forget_conn(self, call: _Call) -> None:
        if call.conn is None:
            return
        self.by_conn.pop(call.conn.fileno(), None)
        _unregister(self.sel, call.conn)
        call.conn.close()
        call.conn = None

    def reap(self) -> None:
        while self.calls:
            try:
                # A look first (WNOWAIT): while the ended process is not reaped, its pid (its
                # group's id) cannot be reused, so its group can be killed safely.
                info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
                if info is None:
                    return
                if info.si_code in (os.CLD_KILLED, os.CLD_DUMPED):
                    _kill_group(info.si_pid, 9)  # what it started (rustc) goes with it
                pid, status = os.waitpid(info.si_pid, 0)
            except ChildProcessError:
                return
            call = self.calls.pop(pid, None)
            if call is None:
                continue
            try:
                took_over = os.read(call.started_r, 1) == b"1"
            except OSError:
                took_over = False
            os.close(call.started_r)
            if call.conn is not None:
                if not took_over:
                    line = b'{"ok":false,"why":"the call could not be set up"}\n'
                    _log("WARNING", f"call process {pid} ended before it took the call over")
                elif os.WIFSIGNALED(status):
                    line = b'{"ok":true,"signal":%d}\n' % os.WTERMSIG(status)
                else:
                    line = b'{"ok":true,"status":%d}\n' % os.waitstatus_to_exitcode(status)
                try:
                    call.conn.setblocking(True)
                    call.conn.settimeout(1.0)
                    call.conn.sendall(line)
                except OSError:
                    pass
                self._forget_conn(call)

    def stop_overdue(self) -> None:
        now = time.monotonic()
        for call in self.calls.values():
            if call.term_at is not None and now - call.term_at > STOP_GRACE_SECS:
                _kill_group(call.pid, 9)
                call.term_at = None


def _unregister(sel: selectors.BaseSelector | None, what: socket.socket) -> None:
    """Stop watching ``what`` (not watched: nothing to do)."""
    if sel is None:
        return
    try:
        sel.unregister(what)
    except (KeyError, ValueError):
        pass


def _kill_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except OSError:
        try:
            os.kill(pid, sig)
        except OSError:
            pass


def _receive(conn: socket.socket) -> tuple[dict[str, object], list[int], tuple[int, int, int]]:
    """The request line, the descriptors that came with it, and the peer's (pid, uid, gid)."""
    import array
    import socket

    from kache.daemon import wire
    from kache.daemon.peer import credentials

    peer = credentials(conn)
    fds: list[int] = []
    data = bytearray()
    itemsize = array.array("i").itemsize
    first = True
    while b"\n" not in data:
        if first:
            chunk, ancdata, _flags, _addr = conn.recvmsg(wire.MAX_LINE + 1,
                                                         socket.CMSG_SPACE((wire.MAX_RUN_FDS + 1) * itemsize))
            for level, kind, body in ancdata:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    got = array.array("i")
                    got.frombytes(body[:len(body) - len(body) % itemsize])
                    fds.extend(got)
            first = False
        else:
            chunk = conn.recv(wire.MAX_LINE + 1)
        if not chunk:
            break
        data += chunk
        if len(data) > wire.MAX_LINE + 1:
            break
    line, _, _ = bytes(data).partition(b"\n")
    if len(line) > wire.MAX_LINE:
        raise ValueError("request too long")
    from kache import quickjson

    msg = quickjson.loads(line.decode("utf-8", "surrogateescape"))
    if not isinstance(msg, dict):
        raise ValueError("request is not an object")
    return msg, fds, peer


def _refusal(msg: dict[str, object], fds: list[int], peer: tuple[int, int, int]) -> str | None:
    """Why this request is not taken, or None."""
    from kache.daemon import wire

    if peer[1] != os.getuid():
        return "another user"
    if msg.get("v") != wire.VERSION or msg.get("op") != "run":
        return "unknown request"
    argv, env, cwd, numbers = msg.get("argv"), msg.get("env"), msg.get("cwd"), msg.get("fds")
    if not (isinstance(argv, list) and argv and all(isinstance(a, str) and "\0" not in a for a in argv)):
        return "invalid argv"
    if not (isinstance(env, dict) and all(isinstance(k, str) and isinstance(v, str) and k and "=" not in k
                                          and "\0" not in k + v for k, v in env.items())):
        return "invalid env"
    if not (isinstance(cwd, str) and os.path.isabs(cwd)):
        return "invalid cwd"
    if not (isinstance(numbers, list) and all(isinstance(n, int) and not isinstance(n, bool) and 0 <= n < 4096
                                              for n in numbers) and len(set(numbers)) == len(numbers)):
        return "invalid fds"
    tty = msg.get("tty") is True
    if len(fds) != len(numbers) + tty:
        return "descriptors missing"
    from kache.daemon.peer import elsewhere, unlike

    return elsewhere(peer[0], cwd) or unlike(peer[0])


def _child(conn: socket.socket, msg: dict[str, object], fds: list[int], peer: tuple[int, int, int],
           started_w: int) -> None:
    """Become the client's ``kache`` process and run the call; never returns."""
    status = 1
    placed = False
    try:
        import signal

        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        from kache.daemon import wire

        os.setsid()  # its own process group: the runner stops it whole when the client goes
        numbers = list(msg["fds"])  # type: ignore[call-overload]
        tty = fds[len(numbers)] if msg.get("tty") is True else None
        tty, started_w, conn_fd = _place_descriptors(fds[:len(numbers)], numbers, tty, started_w, conn.fileno())
        placed = True  # from here on, stderr is the client's (rustc's, which cargo keeps)
        client_pid = peer[0]
        _take_process_state(client_pid)
        os.chdir(str(msg["cwd"]))
        os.umask(wire.client_umask(msg))
        env = msg["env"]
        assert isinstance(env, dict)
        os.environ.clear()
        os.environ.update(env)
        argv = [str(a) for a in msg["argv"]]  # type: ignore[attr-defined]
        sys.argv = ["kache", *argv]
        from kache.engine import notices

        notices.set_caller(_parent_of(client_pid), tty, _pgrp_of(client_pid))
        started = wire.client_start(msg, time.monotonic())
        os.write(conn_fd, b'{"ok":true,"pid":%d}\n' % os.getpid())
        os.close(conn_fd)
        os.write(started_w, b"1")
        os.close(started_w)
        from kache.wrapper import run

        status = run(argv, started=started)
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        if status < 0:  # rustc died of a signal: so does this process, as cargo would have seen
            from kache.wrapper import die_of

            die_of(-status)
    except BaseException as e:  # noqa: BLE001 - the child must end here, whatever happened
        if not placed:
            try:
                _log("WARNING", f"call not set up: {type(e).__name__}: {e}")
            except BaseException:  # noqa: BLE001
                pass
    os._exit(status & 0xFF)


def _place_descriptors(received: list[int], numbers: list[int], tty: int | None, started_w: int,
                       conn_fd: int) -> tuple[int | None, int, int]:
    """Put each received descriptor at the client's number and close every other
    descriptor of the runner's, keeping ``tty``, ``started_w`` and ``conn_fd``
    (close-on-exec, above the client's numbers). Returns their new numbers."""
    import fcntl

    base = max([*numbers, 2]) + 1
    moved = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, base) for fd in received]
    new_tty = None if tty is None else fcntl.fcntl(tty, fcntl.F_DUPFD_CLOEXEC, base)
    new_started = fcntl.fcntl(started_w, fcntl.F_DUPFD_CLOEXEC, base)
    new_conn = fcntl.fcntl(conn_fd, fcntl.F_DUPFD_CLOEXEC, base)
    keep = {*moved, new_started, new_conn} | ({new_tty} if new_tty is not None else set())
    for name in os.listdir("/proc/self/fd"):
        if int(name) not in keep:
            try:
                os.close(int(name))
            except OSError:
                pass
    for fd, number in zip(moved, numbers, strict=True):
        os.dup2(fd, number, inheritable=True)
        os.close(fd)
    return new_tty, new_started, new_conn


def _take_process_state(pid: int) -> None:
    """The client's CPU affinity, scheduling policy, niceness, OOM score adjustment and
    resource limits, where allowed (its I/O priority and control group are not taken)."""
    try:
        os.sched_setaffinity(0, os.sched_getaffinity(pid))
    except OSError:
        pass
    try:
        policy = os.sched_getscheduler(pid)
        if policy != os.sched_getscheduler(0):
            os.sched_setscheduler(0, policy, os.sched_getparam(pid))
    except OSError:
        pass
    try:
        with open(f"/proc/{pid}/oom_score_adj", "rb") as f:
            adj = f.read()
        with open("/proc/self/oom_score_adj", "wb") as f:
            f.write(adj)
    except OSError:
        pass
    try:
        nice = os.getpriority(os.PRIO_PROCESS, pid)
        os.setpriority(os.PRIO_PROCESS, 0, nice)
    except OSError:
        pass
    try:
        import resource

        for name in dir(resource):
            if name.startswith("RLIMIT_"):
                which = getattr(resource, name)
                try:
                    soft, hard = resource.prlimit(pid, which)
                    resource.setrlimit(which, (soft, hard))
                except (OSError, ValueError):
                    try:  # a higher hard limit than ours cannot be taken: the soft one, within ours
                        _, own_hard = resource.getrlimit(which)
                        soft, _ = resource.prlimit(pid, which)
                        if own_hard == resource.RLIM_INFINITY or (soft != resource.RLIM_INFINITY
                                                                  and soft <= own_hard):
                            resource.setrlimit(which, (soft, own_hard))
                    except (OSError, ValueError):
                        pass
    except ImportError:
        pass


def _stat_fields(pid: int) -> list[bytes]:
    with open(f"/proc/{pid}/stat", "rb") as f:
        return f.read().rpartition(b")")[2].split()


def _parent_of(pid: int) -> int:
    """The client's parent (cargo): the build kache's warnings are said once for."""
    try:
        return int(_stat_fields(pid)[1])
    except (OSError, ValueError, IndexError):
        return 0


def _pgrp_of(pid: int) -> int:
    try:
        return os.getpgid(pid)
    except OSError:
        return -1
