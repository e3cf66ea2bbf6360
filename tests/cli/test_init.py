from __future__ import annotations

import os
from pathlib import Path

import pytest
import tomlkit

from kache import settings as S
from kache.cli import main
from kache.selfexec import kache_executable


@pytest.fixture
def cargo_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "cargo-home"
    home.mkdir()
    monkeypatch.setenv("CARGO_HOME", str(home))
    return home


def test_init_twice_gives_the_same_files(cargo_home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = cargo_home / "config.toml"
    config.write_text('# my settings\n[net]\noffline = true\n\n[build]\njobs = 2  # keep\n')
    assert main(["init", "--yes", "--no-service"]) == 0
    out = capsys.readouterr().out
    assert "changed  cargo wrapper" in out and "changed  user config" in out
    text = config.read_text()
    doc = tomlkit.parse(text)
    assert doc["build"]["rustc-wrapper"] == kache_executable()
    assert doc["build"]["jobs"] == 2 and doc["net"]["offline"] is True
    assert "# my settings" in text and "# keep" in text
    user = S.user_config_path()
    starter = user.read_text()
    assert S.validate_file(user) == []  # every line commented out: valid, no unknown keys
    assert "# compression_level = 3" in starter and "# local_max_size = \"50GB\"" in starter

    assert main(["init", "--yes", "--no-service"]) == 0
    out = capsys.readouterr().out
    assert "0 change(s)" in out and out.count("ok ") >= 2
    assert config.read_text() == text and user.read_text() == starter


def test_init_replaces_sccache_and_dry_run_changes_nothing(cargo_home: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    config = cargo_home / "config.toml"
    config.write_text('[build]\nrustc-wrapper = "/usr/bin/sccache"\n')
    assert main(["init", "--dry-run", "--no-service"]) == 0
    out = capsys.readouterr().out
    assert "would    cargo wrapper" in out and "(it is '/usr/bin/sccache' (sccache) now)" in out
    assert config.read_text() == '[build]\nrustc-wrapper = "/usr/bin/sccache"\n'
    assert not S.user_config_path().exists()
    assert main(["init", "--yes", "--no-service"]) == 0
    assert tomlkit.parse(config.read_text())["build"]["rustc-wrapper"] == kache_executable()


def test_init_reports_a_broken_cargo_config(cargo_home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (cargo_home / "config.toml").write_text("[build\n")
    assert main(["init", "--yes", "--no-service"]) == 1
    assert "cannot be read as TOML" in capsys.readouterr().out


def test_init_installs_the_service_where_a_manager_runs(cargo_home: Path, service_manager: Path, client_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["init", "--yes", "--no-client"]) == 0
    out = capsys.readouterr().out
    unit = Path(os.environ["XDG_CONFIG_HOME"]) / "systemd" / "user" / "kache.service"
    assert "changed  daemon service" in out and unit.exists()
    assert "--user enable --now kache.service" in service_manager.read_text()
    assert main(["init", "--yes", "--no-client"]) == 0
    assert "ok       daemon service" in capsys.readouterr().out


@pytest.fixture
def service_manager(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A stand-in systemctl that records its calls (this machine runs no user systemd)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "systemctl.log"
    fake = bin_dir / "systemctl"
    fake.write_text(f'#!/bin/sh\necho "$@" >> "{log}"\n')
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    return log


@pytest.fixture
def client_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Where init builds the native client: a temporary directory, not beside the kache
    of the environment running the tests."""
    import kache.native

    path = tmp_path / "clients" / kache.native.OUTPUT_NAME
    path.parent.mkdir()
    monkeypatch.setattr(kache.native, "default_output", lambda kache: str(path))
    return path


@pytest.mark.e2e  # builds the native client with rustc
def test_init_with_the_service_makes_the_native_client_cargos_wrapper(
        cargo_home: Path, service_manager: Path, client_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> None:
    """Built with the real rustc, asking this store's daemon and handing the rest to this
    kache; a second init finds the client right and changes nothing."""
    import shutil
    import tempfile

    from kache.native import client_info

    # a store whose socket path fits in a Unix address wherever TMPDIR lies (Nix: /build)
    store = tempfile.mkdtemp(prefix="ks-", dir="/tmp")
    request.addfinalizer(lambda: shutil.rmtree(store, ignore_errors=True))
    monkeypatch.setenv("KACHE_CACHE_DIR", store)

    config = cargo_home / "config.toml"
    assert main(["init", "--dry-run"]) == 0
    assert "would    native client" in capsys.readouterr().out and not client_path.exists()
    assert main(["init", "--yes"]) == 0
    out = capsys.readouterr().out
    assert "changed  cargo wrapper" in out and "changed  native client" in out, out
    assert tomlkit.parse(config.read_text())["build"]["rustc-wrapper"] == str(client_path)
    info = client_info(str(client_path))
    assert info is not None and info["kache"] == os.path.abspath(kache_executable())
    assert info["socket"] == os.path.join(S.load().local_store, "daemon.sock")
    text = config.read_text()
    assert main(["init", "--yes"]) == 0
    out = capsys.readouterr().out
    assert "0 change(s)" in out and "ok       cargo wrapper" in out and "ok       native client" in out, out
    assert config.read_text() == text


def test_init_keeps_kache_as_the_wrapper_without_the_client(
        cargo_home: Path, service_manager: Path, client_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """--no-client, --no-service, daemon hits turned off, no rustc: kache stays cargo's
    wrapper and nothing is built; none of them fails init."""
    config = cargo_home / "config.toml"
    for args in (["--no-client"], ["--no-service"]):
        assert main(["init", "--yes", *args]) == 0
        assert "native client" not in capsys.readouterr().out
    monkeypatch.setenv(S.setting("cache.daemon_hits").env or "", "false")
    assert main(["init", "--yes"]) == 0
    assert "ok       native client: cache.daemon_hits is off" in capsys.readouterr().out
    monkeypatch.delenv(S.setting("cache.daemon_hits").env or "")
    monkeypatch.setenv("RUSTC", "no-such-rustc")
    assert main(["init", "--yes"]) == 0
    assert "no rustc to build it with ('no-such-rustc'" in capsys.readouterr().out
    assert tomlkit.parse(config.read_text())["build"]["rustc-wrapper"] == kache_executable()
    assert not client_path.exists()


def test_init_does_not_put_the_client_over_another_wrapper(
        cargo_home: Path, service_manager: Path, client_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """When the cargo wrapper step is declined, the client step leaves sccache alone."""
    import click

    config = cargo_home / "config.toml"
    config.write_text('[build]\nrustc-wrapper = "/usr/bin/sccache"\n')
    monkeypatch.setattr("sys.stdin.isatty", lambda: True)
    monkeypatch.setattr(click, "confirm", lambda text, default=True: not text.startswith("cargo wrapper"))
    assert main(["init"]) == 1
    out = capsys.readouterr().out
    assert "skipped  cargo wrapper" in out and "not kache: left as it is" in out, out
    assert config.read_text() == '[build]\nrustc-wrapper = "/usr/bin/sccache"\n'


def test_init_without_a_kache_program_is_one_click_style_line(
        cargo_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """The library raises ProgramNotFound; the CLI shows it as click's ``Error: …``, exit 1."""
    monkeypatch.setattr("sys.argv", ["python"])
    monkeypatch.setattr("sys.executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))
    assert main(["init", "--dry-run", "--no-service"]) == 1
    err = capsys.readouterr().err
    assert err == "Error: cannot find the `kache` program on PATH; install kache first\n"
    assert not (cargo_home / "config.toml").exists()


def test_init_after_a_failed_service_step_exits_1_and_keeps_kache_as_the_wrapper(
        cargo_home: Path, client_path: Path, store_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The real systemctl of a machine without a user session (this container) fails the
    service step: init exits 1, says which step failed and what to do, does not build the
    native client (it would only hand every call to kache) and leaves no unit file, so a
    second init does not call the service installed: it fails the same way."""
    import shutil
    import subprocess

    systemctl = shutil.which("systemctl")
    if systemctl is None:
        pytest.skip("no systemctl on this machine")
    probe = subprocess.run([systemctl, "--user", "daemon-reload"], capture_output=True, text=True,
                           env={k: v for k, v in os.environ.items() if k != "XDG_RUNTIME_DIR"})
    if probe.returncode == 0:
        pytest.skip("a user systemd answers here: the service step does not fail")
    said = (probe.stderr or probe.stdout).strip().splitlines()[-1]
    exe = kache_executable()
    config = cargo_home / "config.toml"
    user = S.user_config_path()
    unit = Path(os.environ["XDG_CONFIG_HOME"]) / "systemd" / "user" / "kache.service"
    service_failed = [
        f"fail     daemon service: cannot install the daemon service: `{systemctl} --user daemon-reload` failed: "
        f"exit status 1: {said}",
        "         systemctl --user is not available here: there is no user session bus (XDG_RUNTIME_DIR is not "
        "set): is this a container, or an ssh session of a user without lingering? Try `loginctl enable-linger "
        "$USER` and log in again; or run `kache daemon start` (with a remote, builds also start it when they "
        "need it)",
        f"         {unit} was removed again",
        "skipped  native client: the daemon service step failed, so kache stays cargo's wrapper (the client "
        "without a daemon only hands every call to kache)",
        ""]
    what_to_do = ("  daemon service: kache works without it (with a remote, builds start the daemon when they "
                  "need it; `kache daemon start` starts it by hand); fix the reason above and run `kache init` "
                  "again, or `kache init --no-service` to stop trying")

    assert main(["init", "--yes"]) == 1
    assert capsys.readouterr().out.splitlines() == [
        f"changed  cargo wrapper: {config}: [build] rustc-wrapper was not set, now {exe!r}",
        f"changed  user config: wrote a starter {user} (every setting, commented out)",
        *service_failed,
        "2 change(s); 1 step(s) failed: daemon service",
        what_to_do]
    assert tomlkit.parse(config.read_text())["build"]["rustc-wrapper"] == exe
    assert not client_path.exists() and not unit.exists()

    assert main(["init", "--yes"]) == 1
    assert capsys.readouterr().out.splitlines() == [
        f"ok       cargo wrapper: {config}: [build] rustc-wrapper = {exe!r}",
        f"ok       user config: {user} exists",
        *service_failed,
        "0 change(s); 1 step(s) failed: daemon service",
        what_to_do]


def test_init_is_not_all_set_while_the_environment_names_another_wrapper(
        cargo_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """RUSTC_WRAPPER=sccache wins over the file init writes: init says so, with what to do,
    and exits 1 (it used to say "all set" and exit 0)."""
    monkeypatch.chdir(tmp_path)
    exe = kache_executable()
    config = cargo_home / "config.toml"
    monkeypatch.setenv("RUSTC_WRAPPER", "sccache")
    assert main(["init", "--yes", "--no-service"]) == 1
    out = capsys.readouterr().out
    assert "all set" not in out and "changed  cargo wrapper" in out
    assert (f"fail     wrapper in effect: environment variable RUSTC_WRAPPER sets 'sccache', which wins over "
            f"{config}: cargo still runs sccache, not kache. To fix: unset RUSTC_WRAPPER (set in your environment: "
            f"check your shell profile) or set it to {exe}") in out
    assert "1 step(s) failed: wrapper in effect" in out

    monkeypatch.setenv("RUSTC_WRAPPER", exe)  # kache itself: fine
    assert main(["init", "--yes", "--no-service"]) == 0
    out = capsys.readouterr().out
    assert (f"ok       wrapper in effect: environment variable RUSTC_WRAPPER sets {exe!r}, which wins over {config}: "
            "cargo runs kache") in out and "all set" in out


def test_init_names_a_project_config_that_names_another_wrapper(
        cargo_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    project = tmp_path / "ws" / ".cargo" / "config.toml"
    project.parent.mkdir(parents=True)
    project.write_text('[build]\nrustc-wrapper = "/usr/bin/sccache"\n')
    monkeypatch.chdir(tmp_path / "ws")
    assert main(["init", "--yes", "--no-service"]) == 1
    out = capsys.readouterr().out
    assert (f"fail     wrapper in effect: {project} sets '/usr/bin/sccache', which wins over {cargo_home}/config.toml: "
            f'cargo still runs /usr/bin/sccache, not kache. To fix: edit {project}: [build] rustc-wrapper = '
            f'"/usr/bin/sccache": set it to "{kache_executable()}", or remove it so that {cargo_home}/config.toml '
            "applies\n") in out
    assert "all set" not in out and project.read_text() == '[build]\nrustc-wrapper = "/usr/bin/sccache"\n'
