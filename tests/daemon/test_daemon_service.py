"""``kache daemon install``/``uninstall``: the systemd unit and the launchd plist."""

from __future__ import annotations

import os
import plistlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from kache.cli import main
from kache.daemon import service


def kache_script() -> str:
    return os.path.join(os.path.dirname(sys.executable), "kache")


# A Nix check phase runs the tests with the build's interpreter: no kache script beside it.
beside_the_interpreter = pytest.mark.skipif(not os.path.isfile(kache_script()),
                                            reason="no kache script beside this interpreter")


@beside_the_interpreter
def test_install_writes_a_systemd_unit_that_verifies(clean_env: Path, store_env: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["daemon", "install", "--no-activate", "--platform", "linux"]) == 0
    unit = clean_env / ".config" / "systemd" / "user" / "kache.service"
    out = capsys.readouterr().out
    assert out.splitlines() == [
        "wrote ~/.config/systemd/user/kache.service",
        "not activated; to start it: systemctl --user daemon-reload && systemctl --user enable --now kache.service"]
    text = unit.read_text()
    for line in (f"ExecStart={kache_script()} daemon run --service", "Restart=on-failure", "StartLimitBurst=5", "RestartSec=5s", "UMask=0077", "KillMode=process",
                 "Environment=KACHE_LOG=kache=info", f"Environment=KACHE_CACHE_DIR={store_env}",
                 "WantedBy=default.target", "Type=simple", "Description=kache build cache daemon"):
        assert line in text.splitlines(), line
    # the runner compiles with the builds' rights: a sandboxed unit would have it refuse them all
    assert not [line for line in text.splitlines() if line.startswith(("NoNewPrivileges", "Restrict", "Lock"))]
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        if os.environ.get("CI") == "true":
            raise AssertionError("CI must have systemd-analyze (Debian's systemd)")
        pytest.skip("systemd-analyze is not installed")
    verify = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True)
    assert verify.returncode == 0, verify.stdout + verify.stderr + text

    assert main(["daemon", "install", "--no-activate", "--platform", "linux"]) == 0
    assert capsys.readouterr().out.startswith("unchanged: ~/.config/systemd/user/kache.service\n")

    assert main(["daemon", "uninstall", "--no-activate", "--platform", "linux"]) == 0
    assert capsys.readouterr().out == "removed ~/.config/systemd/user/kache.service\n"
    assert not unit.exists()
    assert main(["daemon", "uninstall", "--no-activate", "--platform", "linux"]) == 0
    assert capsys.readouterr().out == "nothing to remove: ~/.config/systemd/user/kache.service does not exist\n"


@beside_the_interpreter
def test_install_writes_a_launchd_plist(clean_env: Path, store_env: Path, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("KACHE_CONFIG", "/etc/kache/config.toml")
    monkeypatch.setenv("KACHE_S3_BUCKET", "only-in-my-shell")
    monkeypatch.setenv("KACHE_S3_SECRET_KEY", "never-written-anywhere")
    (clean_env / "etc-config.toml").write_text("")
    monkeypatch.setenv("KACHE_CONFIG", str(clean_env / "etc-config.toml"))
    assert main(["daemon", "install", "--no-activate", "--platform", "macos"]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith("wrote ~/Library/LaunchAgents/dev.kache.daemon.plist\n")
    assert ("kache: warning: the service does not see KACHE_S3_BUCKET from this shell: put the remote in "
            f"{clean_env}/.config/kache/config.toml ([cache.remote]) so the daemon uses it") in captured.err
    path = clean_env / "Library" / "LaunchAgents" / "dev.kache.daemon.plist"
    assert b"never-written-anywhere" not in path.read_bytes()
    with open(path, "rb") as f:
        doc = plistlib.load(f)
    assert doc == {
        "Label": "dev.kache.daemon",
        "ProgramArguments": [kache_script(), "daemon", "run", "--service"],
        "EnvironmentVariables": {"KACHE_LOG": "kache=info", "KACHE_CONFIG": str(clean_env / "etc-config.toml"),
                                 "KACHE_CACHE_DIR": str(store_env)},
        "RunAtLoad": True,
        "KeepAlive": {"SuccessfulExit": False},
        "ProcessType": "Background",
        "ThrottleInterval": 5,
        "StandardOutPath": str(store_env / "daemon.log"),
        "StandardErrorPath": str(store_env / "daemon.log"),
    }
    assert main(["daemon", "uninstall", "--no-activate", "--platform", "macos"]) == 0
    assert capsys.readouterr().out == "removed ~/Library/LaunchAgents/dev.kache.daemon.plist\n"
    assert not path.exists()


def test_activation_without_systemctl_says_so(clean_env: Path, store_env: Path, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    assert main(["daemon", "install", "--platform", "linux"]) == 1
    unit = clean_env / ".config" / "systemd" / "user" / "kache.service"
    assert capsys.readouterr().err == (
        f"kache: error: cannot activate the daemon service: systemctl not found, so {unit} was not written; run "
        "`systemctl --user daemon-reload && systemctl --user enable --now kache.service` where systemd runs, or "
        "rerun with --no-activate to write the file only\n")
    assert not unit.exists() and not (clean_env / ".config").exists()


def _failing_systemctl() -> tuple[str, str]:
    """This machine's real systemctl and the last line of what ``systemctl --user
    daemon-reload`` says when it fails (no user session bus: a container); skips the
    test where there is none, or where a user manager answers (nothing fails there)."""
    systemctl = shutil.which("systemctl")
    if systemctl is None:
        pytest.skip("no systemctl on this machine")
    probe = subprocess.run([systemctl, "--user", "daemon-reload"], capture_output=True, text=True,
                           env={k: v for k, v in os.environ.items() if k != "XDG_RUNTIME_DIR"})
    if probe.returncode == 0:
        pytest.skip("a user systemd answers here: `systemctl --user` does not fail")
    return systemctl, (probe.stderr or probe.stdout).strip().splitlines()[-1]


def test_a_failed_activation_explains_and_leaves_nothing_behind(clean_env: Path, store_env: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    """The real systemctl of a machine without a user session (this container): the
    error says what failed, why and what to do, exit 1, and the unit file it wrote and
    the directories it made are gone again."""
    systemctl, said = _failing_systemctl()
    unit = clean_env / ".config" / "systemd" / "user" / "kache.service"
    assert main(["daemon", "install", "--platform", "linux"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (
        f"kache: error: cannot install the daemon service: `{systemctl} --user daemon-reload` failed: exit status "
        f"1: {said}\n"
        "kache: error: systemctl --user is not available here: there is no user session bus (XDG_RUNTIME_DIR is "
        "not set): is this a container, or an ssh session of a user without lingering? Try `loginctl "
        "enable-linger $USER` and log in again; or run `kache daemon start` (with a remote, builds also start "
        "it when they need it)\n"
        f"kache: error: {unit} was removed again\n")
    assert not unit.exists() and not (clean_env / ".config").exists()

    unit.parent.mkdir(parents=True)  # an older definition, installed before: put back as it was
    unit.write_text("# the previous kache.service\n")
    assert main(["daemon", "install", "--platform", "linux"]) == 1
    assert capsys.readouterr().err.endswith(f"kache: error: {unit} was put back as it was\n")
    assert unit.read_text() == "# the previous kache.service\n"


def test_activation_runs_systemctl(clean_env: Path, store_env: Path, tmp_path: Path,
                                   monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls"
    fake = bin_dir / "systemctl"
    fake.write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    assert main(["daemon", "install", "--platform", "linux"]) == 0
    assert calls.read_text().splitlines() == ["--user daemon-reload", "--user enable --now kache.service",
                                              "--user restart kache.service"]
    assert main(["daemon", "uninstall", "--platform", "linux"]) == 0
    assert calls.read_text().splitlines()[3:] == ["--user disable --now kache.service", "--user daemon-reload"]
    out = capsys.readouterr().out
    assert f"ran: {fake} --user disable --now kache.service" in out and "removed ~/.config/systemd/user/kache.service" in out


def test_unit_quotes_paths_with_spaces_and_specifiers() -> None:
    text = service.render_unit(["/opt/my tools/kache%1"], {"KACHE_CONFIG": "/etc/a b.toml"})
    assert 'ExecStart="/opt/my tools/kache%%1" daemon run --service' in text.splitlines()
    assert 'Environment="KACHE_CONFIG=/etc/a b.toml"' in text.splitlines()


@beside_the_interpreter
def test_a_launchd_install_makes_the_store_owner_only(clean_env: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """The launchd agent logs into the store, so install makes it; under umask 022 the
    parents it makes were 0755 (makedirs' mode is the last directory's only)."""
    store = tmp_path / "fresh" / "cache" / "kache"
    monkeypatch.setenv("KACHE_CACHE_DIR", str(store))
    old = os.umask(0o022)
    try:
        assert main(["daemon", "install", "--no-activate", "--platform", "macos"]) == 0
    finally:
        os.umask(old)
    capsys.readouterr()
    modes = {p.name: p.stat().st_mode & 0o777 for p in (store, store.parent, store.parent.parent)}
    assert modes == {"kache": 0o700, "cache": 0o700, "fresh": 0o700}
