"""``kache daemon …`` on real processes: start, status, a second run, stop, SIGTERM, log."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kache import __version__
from kache.cli import main
from kache.daemon import client, control
from kache.remote.spec import RemoteSpec
from tests.support.daemon import intents
from tests.support.entries import add_seeded_entry, hexkey
from tests.support.waiting import wait_for


@pytest.fixture
def store_env(store_root: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("KACHE_CACHE_DIR", str(store_root))
    monkeypatch.setenv("KACHE_DAEMON_IDLE_TIMEOUT", "30")
    return store_root


def test_status_json_when_no_daemon_runs(store_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Not running: exit 3 (LSB's "program is not running"; it exited 0), every form."""
    assert main(["daemon", "--json"]) == 3
    out = json.loads(capsys.readouterr().out)
    assert out == {"running": False, "pid": None, "socket": str(store_env / "daemon.sock"),
                   "log": str(store_env / "daemon.log"), "responding": False, "state": "stopped"}
    assert main(["daemon", "status", "--json"]) == 3
    assert json.loads(capsys.readouterr().out)["state"] == "stopped"
    assert main(["daemon", "status"]) == 3
    assert capsys.readouterr().out.startswith("kache daemon: not running")
    assert main(["daemon"]) == 3
    assert capsys.readouterr().out.startswith("kache daemon: not running (start it with `kache daemon start`)\n")


def test_start_status_second_run_and_stop(store_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    try:
        assert main(["daemon", "start", "--wait"]) == 0
        out = capsys.readouterr().out
        assert out.startswith("kache daemon started (pid ") and out.endswith(f"log: {store_env}/daemon.log\n")
        pid = control.running_pid(str(store_env))
        assert pid and pid != os.getpid()

        assert main(["daemon", "start"]) == 0  # already running is success
        assert capsys.readouterr().out == f"kache daemon is already running (pid {pid})\n"

        assert main(["daemon", "--json"]) == 0
        st = json.loads(capsys.readouterr().out)
        assert st["running"] is True and st["pid"] == pid and st["version"] == __version__
        assert st["remote"] is None and st["queue"] == 0 and st["started"].endswith("+00:00")
        assert main(["daemon"]) == 0
        text = capsys.readouterr().out
        assert text.startswith(f"kache daemon: running (pid {pid}, up ") and f"version {__version__})" in text
        assert "  remotes  none yet (each build brings the remote its settings name)\n" in text
        runner = client.request(store_env, {"op": "status"})["runner"]  # type: ignore[index]
        assert f"  runner   pid {runner} (runs the native client's misses)\n" in text, text

        second = subprocess.run([sys.executable, "-m", "kache", "daemon", "run"], capture_output=True, text=True,
                                timeout=20)
        assert second.returncode == 0
        assert second.stdout == f"kache daemon is already running (pid {pid})\n"
        assert client.request(store_env, {"op": "status"})["pid"] == pid  # type: ignore[index]
    finally:
        assert main(["daemon", "stop"]) == 0
    assert capsys.readouterr().out == f"kache daemon stopped (pid {pid})\n"
    assert not (store_env / "daemon.sock").exists() and not (store_env / "daemon.pid").exists()
    assert main(["daemon", "stop"]) == 0
    assert capsys.readouterr().out == "kache daemon is not running\n"

    assert main(["daemon", "log", "-n", "1"]) == 0
    assert capsys.readouterr().out.rstrip().endswith("INFO kache.daemon[%d]: stopped (stop requested)" % pid)


def test_status_right_after_start_agrees_with_it(store_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`start` returns once the daemon answers, so the status right after it says
    running (it used to say "not running" while a second start said "already running")."""
    try:
        assert main(["daemon", "start"]) == 0
        out = capsys.readouterr().out
        pid = control.running_pid(str(store_env))
        assert out == f"kache daemon started (pid {pid}); log: {store_env}/daemon.log\n"
        assert main(["daemon", "status"]) == 0
        assert capsys.readouterr().out.startswith(f"kache daemon: running (pid {pid}, up ")
        assert main(["daemon", "start"]) == 0
        assert capsys.readouterr().out == f"kache daemon is already running (pid {pid})\n"
    finally:
        main(["daemon", "stop"])


def test_a_daemon_still_starting_is_starting_for_status_and_start(store_env: Path, tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """A daemon `start --no-wait` launched that has not taken its pid file yet, then one
    that holds it but does not answer yet: status says "starting", start starts no second
    one and says it did not answer, with the end of its log."""
    from kache.daemon.lifecycle import PidFile
    from kache.store import layout

    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (store_env / "tmp").mkdir()
        Path(layout.tmp_path(store_env, layout.DAEMON_STARTING)).write_text(f"{sleeper.pid}\n")
        assert main(["daemon", "status"]) == 0
        lines = capsys.readouterr().out.splitlines()
        assert lines[0].startswith(f"kache daemon: starting (pid {sleeper.pid}, since ")
        assert lines[0].endswith("; it does not answer yet)") and len(lines) == 3
        assert main(["daemon", "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["state"] == "starting"
    finally:
        sleeper.kill()
        sleeper.wait()
    assert main(["daemon", "status"]) == 3  # that process is gone: nothing is starting
    assert capsys.readouterr().out.startswith("kache daemon: not running")

    held = PidFile(str(store_env / "daemon.pid"))
    held.lock()  # this process holds the pid file, as a daemon does before its socket answers
    try:
        (store_env / "daemon.log").write_text("an older line\n")
        assert main(["daemon", "status"]) == 0
        assert capsys.readouterr().out.startswith(f"kache daemon: starting (pid {os.getpid()}, since ")
        assert main(["daemon", "start", "--timeout", "0.3"]) == 1
        captured = capsys.readouterr()
        assert captured.out == ""
        assert captured.err == (
            "kache: error: starting the daemon failed: the daemon did not answer within 0.3s; the end of its log "
            f"({store_env}/daemon.log): (nothing new)\n"
            "kache: error: `kache daemon status` shows whether it answers later; `kache daemon stop` stops it\n")
        assert main(["daemon", "start", "--no-wait"]) == 0
        assert capsys.readouterr().out == f"kache daemon is starting (pid {os.getpid()}; it does not answer yet)\n"
    finally:
        held.release()


def test_a_daemon_that_cannot_start_is_reported_with_its_log(store_env: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    (store_env / "daemon.sock").mkdir()  # where its socket goes: it cannot bind
    (store_env / "daemon.log").write_text("a line from before\n")
    assert main(["daemon", "start"]) == 1
    captured = capsys.readouterr()
    new = (store_env / "daemon.log").read_text().splitlines()[1:]
    assert new and new[-1] == f"kache: error: cannot start the daemon: {store_env}/daemon.sock: Is a directory"
    pid = new[0].split("[", 1)[1].split("]", 1)[0]
    assert captured.out == ""
    assert captured.err == "".join(
        [f"kache: error: starting the daemon failed: pid {pid} exited with status 1; the end of its log "
         f"({store_env}/daemon.log):\n", *(f"kache: error:   {line}\n" for line in new)])
    assert main(["daemon", "status"]) == 3
    assert capsys.readouterr().out.startswith("kache daemon: not running")


def test_start_and_status_name_a_service_daemon(store_env: Path, kache_process,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    proc = kache_process("--service")
    wait_for(lambda: client.request(store_env, {"op": "status"}, timeout=0.5), timeout=10, what="the daemon")
    assert main(["daemon", "status"]) == 0
    assert capsys.readouterr().out.startswith(f"kache daemon: running as a service (pid {proc.pid}, up ")
    assert main(["daemon", "start"]) == 0
    assert capsys.readouterr().out == f"kache daemon is already running as a service (pid {proc.pid})\n"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(10) == 0


def test_sigterm_stops_cleanly_and_leaves_intents(store_env: Path, kache_process) -> None:
    key = add_seeded_entry(store_env, "sig", "s1")
    unreachable = RemoteSpec("fake", endpoint="http://127.0.0.1:9")  # the upload fails and waits to retry
    client.write_intent(store_env, key, "sig", unreachable)
    proc = kache_process()
    wait_for(lambda: client.request(store_env, {"op": "status"}, timeout=0.5), timeout=10, what="the daemon")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(10) == 0
    assert not (store_env / "daemon.sock").exists() and not (store_env / "daemon.pid").exists()
    assert intents(store_env, unreachable) == [f"{key}.sig"]
    assert "stopped (signal SIGTERM)" in (store_env / "daemon.log").read_text()
    assert "stopped (signal SIGTERM)" in proc.stderr.read()  # in the foreground it logs to stderr too


def test_a_daemon_started_from_a_build_serves_the_remote_each_request_names(
        store_env: Path, user_config: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    user_config.write_text('[cache.remote]\nbucket = "team-cache"\n')
    monkeypatch.setenv("KACHE_S3_BUCKET", "one-builds-bucket")
    monkeypatch.setenv("CARGO_PKG_NAME", "somecrate")
    monkeypatch.setenv("RUSTC_WRAPPER", "kache")
    wanted = RemoteSpec("one-builds-bucket", endpoint="http://127.0.0.1:9",
                        credentials={"access_key": "AKIDBUILD", "secret_key": "build-secret-0123456789"})
    try:
        assert main(["daemon", "start", "--wait", "--from-build"]) == 0
        assert capsys.readouterr().err == ""
        st = client.request(store_env, {"op": "status"})
        assert st is not None and st["remote"] is None and st["remotes"] == []  # none until a build asks
        reply = client.request(store_env, {"op": "fetch", "crate": "x", "mkey": hexkey("m"),
                                           "remote": wanted.to_json(), "budget_ms": 10})
        assert reply is not None and reply["ok"] is True and reply["imported"] == []
        assert main(["daemon"]) == 0
        text = capsys.readouterr().out
        assert ("  remotes  s3://one-builds-bucket/artifacts at http://127.0.0.1:9 (credentials from environment, "
                f"access {wanted.access_id}, 0 upload(s) pending)\n") in text
        assert "build-secret" not in text
    finally:
        main(["daemon", "stop"])
    assert "build-secret-0123456789" not in (store_env / "daemon.log").read_text()


def test_daemon_env_drops_build_and_remote_variables() -> None:
    env = {"PATH": "/bin", "HOME": "/h", "RUSTC_WRAPPER": "kache", "CARGO_HOME": "/c", "CARGO_PKG_NAME": "x",
           "RUSTFLAGS": "-Cfoo", "KACHE_CACHE_DIR": "/s", "KACHE_S3_BUCKET": "b", "KACHE_S3_ENDPOINT": "http://e",
           "KACHE_S3_ACCESS_KEY": "ak", "AWS_PROFILE": "p", "KACHE_LOG": "kache=debug"}
    kept, stripped = control.daemon_env(env, from_build=False)  # CARGO_PKG_NAME: a compile started it
    assert kept == {"PATH": "/bin", "HOME": "/h", "KACHE_CACHE_DIR": "/s", "KACHE_LOG": "kache=debug"}
    assert sorted(stripped) == ["AWS_PROFILE", "KACHE_S3_ACCESS_KEY", "KACHE_S3_BUCKET", "KACHE_S3_ENDPOINT"]
    by_hand = {k: v for k, v in env.items() if k != "CARGO_PKG_NAME"}
    kept, stripped = control.daemon_env(by_hand, from_build=False)
    assert kept["KACHE_S3_BUCKET"] == "b" and stripped == [] and "CARGO_HOME" not in kept


def test_log_without_a_log_is_one_clean_error(store_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["daemon", "log"]) == 1
    assert capsys.readouterr().err == (
        f"kache: error: cannot read the daemon log: {store_env}/daemon.log: it does not exist (the daemon has not "
        "run yet; `kache daemon start` starts it)\n")


def test_log_tail_and_follow(store_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = store_env / "daemon.log"
    log.write_text("".join(f"line {i}\n" for i in range(100)))
    assert main(["daemon", "log", "-n", "3"]) == 0
    assert capsys.readouterr().out == "line 97\nline 98\nline 99\n"
    got: list[str] = []

    def writer() -> None:
        time.sleep(0.1)
        with open(log, "a") as f:
            f.write("new 1\npart")
            f.flush()
            time.sleep(0.1)
            f.write("ial\n")
        os.replace(log, store_env / "daemon.log.1")  # rotation
        log.write_text("after rotation\n")

    import threading

    t = threading.Thread(target=writer)
    t.start()
    for line in control.follow(str(log), poll=0.02, stop_after=0.8):
        got.append(line)
    t.join()
    assert got == ["new 1", "partial", "after rotation"]


def test_every_daemon_command_has_help_with_an_example() -> None:
    from kache.cli.daemon import daemon

    assert "Example:" in (daemon.help or "")
    for name, cmd in daemon.commands.items():
        assert "Example:" in (cmd.help or ""), name
        assert f"kache daemon {name}" in (cmd.help or ""), name


def test_a_service_stands_by_behind_another_service_and_follows_it(store_env: Path) -> None:
    """Two service managers (a module's agent and `kache daemon install`'s) each run a
    service for one store: the second never evicts the first (they would take turns
    forever); it waits, and serves once the first stops."""
    from kache import selfexec

    env = selfexec.environ({**os.environ, "KACHE_CACHE_DIR": str(store_env), "KACHE_DAEMON_IDLE_TIMEOUT": "1"})
    run = selfexec.command("daemon", "run", "--service")
    first = subprocess.Popen(run, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd="/")
    second = None
    try:
        wait_for(lambda: control.running_pid(str(store_env)) == first.pid, timeout=20, what="the first service")
        second = subprocess.Popen(run, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd="/")
        time.sleep(3)  # past the idle timeout and a few stand-by looks
        assert first.poll() is None and second.poll() is None
        assert control.running_pid(str(store_env)) == first.pid
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=20) == 0
        wait_for(lambda: control.running_pid(str(store_env)) == second.pid, timeout=20, what="the second to serve")
        # It holds the pid file before its socket is bound: wait for its first answer.
        reply = wait_for(lambda: client.request(store_env, {"op": "status"}), timeout=20, what="its status")
        assert reply["service"] is True
    finally:
        for p in (first, second):
            if p is not None and p.poll() is None:
                p.send_signal(signal.SIGTERM)
                p.wait(timeout=20)
    assert second is not None
    out = second.stdout.read() if second.stdout else ""
    assert f"kache daemon is already running (pid {first.pid}), as a service too; standing by until it stops" in out


def test_a_stopped_daemon_is_said_stopped_by_status_and_doctor(store_env: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    """Was (review of issue 25): `kache doctor` said "not running" of a daemon stopped
    with SIGSTOP, and `kache daemon status` said "not answering" and exited 0."""
    from kache.doctor import WARN, check_daemon

    assert main(["daemon", "start"]) == 0
    capsys.readouterr()
    pid = control.running_pid(str(store_env))
    assert pid
    os.kill(pid, signal.SIGSTOP)  # right after its start: stopped, not "starting"
    try:
        assert main(["daemon", "status"]) == 4  # LSB: status unknown
        out = capsys.readouterr().out
        assert out.startswith(f"kache daemon: stopped (pid {pid} was sent SIGSTOP or is under a debugger; "
                              "builds do not ask it)\n"
                              f"  `kill -CONT {pid}` resumes it; `kache daemon restart` replaces it\n"), out
        check = check_daemon(str(store_env), remote_configured=False)
        assert (check.status, check.fix_hint) == (WARN, f"`kill -CONT {pid}` resumes it; `kache daemon restart` "
                                                        "replaces it")
        assert check.detail.startswith(f"stopped: pid {pid} was sent SIGSTOP")
        began = time.monotonic()
        assert main(["daemon", "start"]) == 1  # at once (it waited 10 s, naming no pid)
        assert time.monotonic() - began < 5
        assert f"one runs but is stopped (pid {pid} was sent SIGSTOP" in capsys.readouterr().err
        # The fix it names works: restart stops it (TERM, then CONT) and starts another.
        began = time.monotonic()
        assert main(["daemon", "restart"]) == 0, capsys.readouterr()
        assert time.monotonic() - began < 10
        new = control.running_pid(str(store_env))
        assert new and new != pid and main(["daemon", "status"]) == 0
    finally:
        try:
            os.kill(pid, signal.SIGCONT)
        except ProcessLookupError:
            pass
        main(["daemon", "stop"])
