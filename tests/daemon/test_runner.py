"""The daemon's runner (kache/daemon/runner.py): a call it takes over runs as the client's
own process would, with the client's descriptors, directory, environment, umask and exit
status; it stops a call whose client went; it refuses what it cannot take; it lets the
calls under way finish when the daemon stops.

The client here is a stand-in for the native client's runner step (CLIENT: the protocol
as kache/native/client.rs speaks it; tests/daemon/test_native_client.py runs the real
one). The "compiler" is a shell script kache passes through to (no ``--out-dir``), which
reports what it inherited; its parent tells who ran it: the runner's child execs it.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from kache.daemon.peer import elsewhere
from kache.daemon.runner import supported
from kache.store import layout
from kache.wrapper.runner import READY
from tests.support.daemon import Running
from tests.support.waiting import wait_for

pytestmark = pytest.mark.skipif(not supported(), reason="the runner is Linux only")

FAKE_COMPILER = """#!/bin/sh
echo "ppid=$PPID"
echo "cwd=$(pwd)"
echo "umask=$(umask)"
echo "mark=$MARK"
echo "oom=$(cat /proc/self/oom_score_adj)"
echo "policy=$(chrt -p $$ | head -1 | sed 's/.*: //')"
echo "to stderr" >&2
[ -n "$JOBSERVER_FD" ] && echo jobserver > /proc/self/fd/$JOBSERVER_FD
[ -n "$PID_FILE" ] && echo $$ > "$PID_FILE"
[ -n "$SLEEP" ] && sleep "$SLEEP"
[ -n "$DIE" ] && kill -"$DIE" $$
exit "${EXIT:-0}"
"""

CLIENT = """
import json, os, signal, socket, sys
path, argv = sys.argv[1], sys.argv[2:]
names = os.listdir("/proc/self/fd")
fds = []
for name in names:
    try:
        if os.get_inheritable(int(name)):
            fds.append(int(name))
    except OSError:
        pass
umask = os.umask(0); os.umask(umask)
request = {"v": 1, "op": "run", "argv": argv, "cwd": os.getcwd(), "env": dict(os.environ), "umask": umask,
           "fds": sorted(fds), "tty": False}
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(path)
lines = s.makefile("rb")
assert json.loads(lines.readline()) == {"ok": True, "ready": True}
socket.send_fds(s, [json.dumps(request).encode() + b"\\n"], sorted(fds))
first = json.loads(lines.readline())
if first.get("ok") is not True:
    sys.stderr.write(f"refused: {first}\\n")
    sys.exit(99)
last = lines.readline()
if not last:
    sys.exit(98)
last = json.loads(last)
if "signal" in last:
    signal.signal(last["signal"], signal.SIG_DFL)
    os.kill(os.getpid(), last["signal"])
sys.exit(last["status"])
"""


@pytest.fixture
def runner(start_daemon: Callable[..., Running], store_root: Path) -> Running:
    running = start_daemon()
    assert wait_for(lambda: os.path.exists(layout.run_socket_path(running.root)), 10), "no run.sock"
    return running


def runner_pid(running: Running) -> int:
    pid = running.status()["runner"]
    assert isinstance(pid, int)
    return pid


def client(tmp_path: Path, store: Path, *, pass_fds: tuple[int, ...] = (), umask: int = 0o022,
           prefix: tuple[str, ...] | list[str] = (), oom: int | None = None, **env: str) -> subprocess.Popen[str]:
    """A client handing the runner ``<fake compiler> --crate-name x --crate-type lib lib.rs``."""
    fake = tmp_path / "fake-rustc"
    fake.write_text(FAKE_COMPILER)
    fake.chmod(0o755)
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    (work / "lib.rs").write_text("pub fn f() {}\n")
    full = {"PATH": os.environ["PATH"], "HOME": os.environ["HOME"], "XDG_CACHE_HOME": os.environ["XDG_CACHE_HOME"],
            "KACHE_CACHE_DIR": str(store), "KACHE_DAEMON_HITS": "0", "MARK": "the client's", **env}
    return subprocess.Popen([*prefix, sys.executable, "-c", CLIENT, layout.run_socket_path(store), str(fake), "--crate-name",
                             "x", "--crate-type", "lib", "lib.rs"], cwd=work, env=full, pass_fds=pass_fds, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=lambda: _setup(umask, oom))


def _setup(umask: int, oom: int | None) -> None:
    os.umask(umask)
    if oom is not None:
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write(str(oom))


def report(out: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def test_a_call_runs_as_the_clients_own_process(runner: Running, tmp_path: Path) -> None:
    read, write = os.pipe()
    try:
        proc = client(tmp_path, Path(runner.root), pass_fds=(write,), umask=0o027, JOBSERVER_FD=str(write),
                      prefix=["chrt", "-b", "0"], oom=300, EXIT="7")
        os.close(write)
        out, err = proc.communicate(timeout=60)
        jobserver = os.read(read, 100)
    finally:
        os.close(read)
    got = report(out)
    assert proc.returncode == 7, err
    assert got["ppid"] == str(runner_pid(runner))  # the runner's child became the compiler
    assert got["cwd"] == str(tmp_path / "work")
    assert got["umask"] == "0027"
    assert got["mark"] == "the client's"
    assert got["oom"] == "300" and got["policy"] == "SCHED_BATCH", got
    assert "to stderr" in err
    assert jobserver == b"jobserver\n"  # a descriptor the client had open, at its number


def hit_request(running: Running, tmp_path: Path, **env: str) -> dict[str, object] | None:
    """What the daemon answers the native client for a call it does not serve."""
    (tmp_path / "lib.rs").write_text("pub fn f() {}\n")
    argv = ["/bin/false", "--crate-name", "x", "--crate-type", "lib", "--out-dir", str(tmp_path), "lib.rs"]
    full = {"HOME": os.environ["HOME"], "KACHE_CACHE_DIR": running.root, **env}
    return running.request({"op": "hit", "store": None, "argv": argv, "cwd": str(tmp_path), "env": full})


def test_the_daemon_offers_its_runner_to_the_native_client(runner: Running, tmp_path: Path) -> None:
    reply = hit_request(runner, tmp_path)
    assert reply is not None and reply["hit"] is False and reply["run"] is True, reply
    reply = hit_request(runner, tmp_path, KACHE_DAEMON_MISSES="0")  # the caller's settings say no
    assert reply is not None and reply["hit"] is False and reply["run"] is False, reply


def test_off_no_runner(start_daemon: Callable[..., Running], tmp_path: Path) -> None:
    running = start_daemon({"KACHE_DAEMON_MISSES": "0"})
    assert running.status()["runner"] is None
    assert not os.path.exists(layout.run_socket_path(running.root))
    reply = hit_request(running, tmp_path)
    assert reply is not None and reply["run"] is False, reply


def test_a_call_killed_by_a_signal_kills_the_client_alike(runner: Running, tmp_path: Path) -> None:
    proc = client(tmp_path, Path(runner.root), DIE="TERM")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGTERM, (out, err)
    assert report(out)["ppid"] == str(runner_pid(runner))


def test_the_call_of_a_client_that_went_is_stopped(runner: Running, tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    proc = client(tmp_path, Path(runner.root), PID_FILE=str(pid_file), SLEEP="60")
    assert wait_for(lambda: pid_file.exists() and pid_file.read_text().strip(), 30)
    pid = int(pid_file.read_text())
    proc.kill()  # as Ctrl-C kills cargo's children
    proc.communicate(timeout=10)
    assert wait_for(lambda: not os.path.exists(f"/proc/{pid}") or _zombie(pid), 10), "the call still runs"


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] == "Z"
    except OSError:
        return True


def _ask(path: str, data: bytes, fds: list[int] | None = None) -> dict[str, object]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(path)
        lines = s.makefile("rb")
        assert lines.readline() == READY
        if fds:
            socket.send_fds(s, [data], fds)
        else:
            s.sendall(data)
        line = lines.readline()
    return json.loads(line)


def test_what_it_cannot_take_is_refused_and_it_goes_on(runner: Running, tmp_path: Path) -> None:
    path = layout.run_socket_path(runner.root)
    assert _ask(path, b"not json\n") == {"ok": False, "why": "not taken"}
    call = {"v": 1, "op": "run", "argv": ["/bin/true"], "cwd": "/", "env": {}, "umask": 18, "fds": [0, 1]}
    assert _ask(path, json.dumps(call).encode() + b"\n", [0]) == {"ok": False, "why": "descriptors missing"}
    assert _ask(path, json.dumps({**call, "op": "hit"}).encode() + b"\n", [0, 1])["why"] == "unknown request"
    assert _ask(path, json.dumps({**call, "cwd": "rel"}).encode() + b"\n", [0, 1])["why"] == "invalid cwd"
    proc = client(tmp_path, Path(runner.root), EXIT="3")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 3, err
    assert report(out)["ppid"] == str(runner_pid(runner))


def test_a_call_from_another_directory_than_the_clients_is_refused(runner: Running, tmp_path: Path) -> None:
    """The runner checks that the client sees the files it would compile: its directory
    (and its mount namespace) are the client's own."""
    call = {"v": 1, "op": "run", "argv": ["/bin/true"], "cwd": str(tmp_path), "env": {}, "umask": 18,
            "fds": [0, 1, 2]}
    answer = _ask(layout.run_socket_path(runner.root), json.dumps(call).encode() + b"\n", [0, 1, 2])
    assert answer == {"ok": False, "why": "another working directory"}


def test_a_call_that_cannot_be_set_up_is_refused(start_daemon: Callable[..., Running]) -> None:
    """A descriptor number the child cannot take (above the runner's limit): nothing ran,
    the client is told so (and runs the call itself)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(soft, 1024), hard))  # what the runner inherits
    try:
        running = start_daemon()
        assert wait_for(lambda: os.path.exists(layout.run_socket_path(running.root)), 10), "no run.sock"
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    call = {"v": 1, "op": "run", "argv": ["/bin/true"], "cwd": os.getcwd(), "env": {}, "umask": 18,
            "fds": [0, 1, 2000]}
    answer = _ask(layout.run_socket_path(running.root), json.dumps(call).encode() + b"\n", [0, 1, 2])
    assert answer == {"ok": False, "why": "the call could not be set up"}


def test_a_client_with_other_rights_is_refused(runner: Running, tmp_path: Path) -> None:
    """A build that runs without the right to gain privileges (a sandbox) is not compiled
    by the runner's child, which has it."""
    proc = client(tmp_path, Path(runner.root), prefix=["setpriv", "--no-new-privs"], EXIT="0")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 99 and "other rights (NoNewPrivs)" in err, (out, err)


def test_a_client_in_its_own_network_namespace_is_refused(runner: Running, tmp_path: Path) -> None:
    """A build without network (unshare -n, bwrap --unshare-net) must not have its proc
    macros run where the network is (needs the right to make a namespace)."""
    if subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode != 0:
        pytest.skip("cannot make a network namespace here")
    proc = client(tmp_path, Path(runner.root), prefix=["unshare", "-n"], EXIT="0")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 99 and "another net namespace" in err, (out, err)


def test_a_client_in_another_mount_namespace_is_seen_elsewhere() -> None:
    """What the daemon checks before restoring a hit into a client's paths, and the runner
    before compiling for it (needs the right to make a mount namespace)."""
    other = subprocess.Popen(["unshare", "-m", "sleep", "30"], stderr=subprocess.PIPE)
    try:
        time.sleep(0.5)
        if other.poll() is not None:
            pytest.skip("cannot make a mount namespace here")
        child = wait_for(lambda: _child_of(other.pid), 10)
        assert elsewhere(child) == "another mount namespace"
        assert elsewhere(os.getpid()) is None and elsewhere(os.getpid(), os.getcwd()) is None
        assert elsewhere(os.getpid(), "/") == ("another working directory" if os.getcwd() != "/" else None)
    finally:
        other.kill()
        other.wait()


def _child_of(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            kids = f.read().split()
    except OSError:
        return None
    return int(kids[0]) if kids else (pid if os.path.exists(f"/proc/{pid}") else None)


def test_calls_under_way_finish_when_the_daemon_stops(runner: Running, tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    proc = client(tmp_path, Path(runner.root), PID_FILE=str(pid_file), SLEEP="2", EXIT="5")
    assert wait_for(lambda: pid_file.exists() and pid_file.read_text().strip(), 30)
    started = time.monotonic()
    runner.stop()
    assert not os.path.exists(layout.run_socket_path(runner.root))
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 5, err
    assert time.monotonic() - started > 0.5  # it waited for the call, which was not cut short
