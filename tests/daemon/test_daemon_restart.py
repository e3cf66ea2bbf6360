"""``kache daemon restart`` on real daemons: started by hand, by a build, none, and one
run by a service manager (restarted through it, or told what to run)."""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from kache import settings as settings_mod
from kache.cli import main
from kache.daemon import client, control
from kache.daemon.service import manager_of_self, restart_argv
from tests.support.waiting import wait_for


@pytest.fixture
def store_env(store_root: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("KACHE_CACHE_DIR", str(store_root))
    monkeypatch.setenv("KACHE_DAEMON_IDLE_TIMEOUT", "30")
    return store_root


def _answering_pid(root: Path) -> int:
    reply = client.request(root, {"op": "status"})
    assert reply is not None and reply["ok"] is True
    return int(reply["pid"])


def test_restart_a_daemon_started_by_hand(store_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    try:
        assert main(["daemon", "start", "--wait"]) == 0
        capsys.readouterr()
        old = _answering_pid(store_env)
        assert main(["daemon", "restart"]) == 0
        new = _answering_pid(store_env)  # answering when restart returned
        assert new != old
        assert capsys.readouterr().out == f"kache daemon restarted (pid {old} → {new})\n"
    finally:
        main(["daemon", "stop"])


def test_restart_a_daemon_a_build_started(store_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    s = settings_mod.load()
    try:
        old = control.start(s, from_build=True, wait=5.0).pid
        assert main(["daemon", "restart"]) == 0
        new = _answering_pid(store_env)
        assert new != old
        assert capsys.readouterr().out == f"kache daemon restarted (pid {old} → {new})\n"
    finally:
        main(["daemon", "stop"])


def test_restart_without_a_daemon_starts_one(store_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    try:
        assert main(["daemon", "restart"]) == 0
        pid = _answering_pid(store_env)
        assert capsys.readouterr().out == (f"kache daemon was not running; started (pid {pid}); "
                                           f"log: {store_env}/daemon.log\n")
    finally:
        main(["daemon", "stop"])


def _service_daemon(kache_process: Callable[..., object], store_env: Path) -> int:
    kache_process("--service", env={"INVOCATION_ID": "0123abcd"})  # as systemd starts it
    wait_for(lambda: client.request(store_env, {"op": "status"}, timeout=0.5) is not None, timeout=20)
    reply = client.request(store_env, {"op": "status"})
    assert reply is not None and reply["service"] is True
    assert reply["manager"] == {"kind": "systemd", "name": "kache.service"}
    return int(reply["pid"])


def test_restart_of_a_service_without_its_manager_says_what_to_run(
        store_env: Path, kache_process: Callable[..., object], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    pid = _service_daemon(kache_process, store_env)
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    assert main(["daemon", "restart"]) == 1
    assert capsys.readouterr().err == (
        f"kache: error: cannot restart the daemon: pid {pid} runs as a service and systemctl is not on PATH; "
        "restart it with `systemctl --user restart kache.service`\n")
    assert _answering_pid(store_env) == pid  # left alone: stopped by hand, the manager would not restart it


def test_restart_of_a_service_goes_through_its_manager(
        store_env: Path, kache_process: Callable[..., object], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    old = _service_daemon(kache_process, store_env)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls"
    # Does what `systemctl --user restart` does to a Type=simple unit: SIGTERM the main
    # process, run ExecStart again (the new daemon waits until the old one is gone).
    start = shlex.join([sys.executable, "-m", "kache", "daemon", "run", "--service"])
    (bin_dir / "systemctl").write_text(
        f'#!/bin/sh\necho "$@" >> {calls}\nkill -TERM $(cat {store_env}/daemon.pid)\n'
        f'INVOCATION_ID=4567 {start} </dev/null >>{tmp_path}/service.out 2>&1 &\n')
    (bin_dir / "systemctl").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    try:
        assert main(["daemon", "restart"]) == 0
        new = _answering_pid(store_env)
        assert new != old
        assert capsys.readouterr().out == (f"kache daemon restarted (pid {old} → {new}) with "
                                           "`systemctl --user restart kache.service`\n")
        assert calls.read_text() == "--user restart kache.service\n"
    finally:
        main(["daemon", "stop"])


def test_the_manager_and_its_restart_command(tmp_path: Path) -> None:
    cgroup = tmp_path / "cgroup"
    cgroup.write_text("0::/user.slice/user-1000.slice/user@1000.service/app.slice/kache.service\n")
    assert manager_of_self({"INVOCATION_ID": "x"}, str(cgroup)) == {"kind": "systemd", "name": "kache.service"}
    cgroup.write_text("0::/user.slice/user-1000.slice/user@1000.service/app.slice/my-kache.service\n")
    assert manager_of_self({"INVOCATION_ID": "x"}, str(cgroup)) == {"kind": "systemd", "name": "my-kache.service"}
    assert manager_of_self({"XPC_SERVICE_NAME": "org.nixos.kache"}) == {"kind": "launchd", "name": "org.nixos.kache"}
    assert manager_of_self({"XPC_SERVICE_NAME": "0"}) is None and manager_of_self({}) is None
    assert restart_argv({"kind": "systemd", "name": "my-kache.service"}) == [
        "systemctl", "--user", "restart", "my-kache.service"]
    assert restart_argv({"kind": "launchd", "name": "org.nixos.kache"}, uid=501) == [
        "launchctl", "kickstart", "-k", "gui/501/org.nixos.kache"]


def test_restart_of_a_service_no_manager_runs_says_so(store_env: Path, kache_process: Callable[..., object],
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    kache_process("--service")  # by hand in a terminal: no systemd, no launchd
    wait_for(lambda: client.request(store_env, {"op": "status"}, timeout=0.5) is not None, timeout=20)
    pid = _answering_pid(store_env)
    assert main(["daemon", "restart"]) == 1
    assert capsys.readouterr().err == (
        f"kache: error: cannot restart the daemon: pid {pid} runs with --service, but not under systemd or "
        "launchd: restart it where it was started (`kache daemon stop` stops it)\n")
    assert _answering_pid(store_env) == pid
