from __future__ import annotations

from pathlib import Path

import pytest
import tomlkit

from kache import settings as S
from kache.cli import main
from kache.cli.setup import kache_executable


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
    assert "would    cargo wrapper" in out and "(now '/usr/bin/sccache' (sccache))" in out
    assert config.read_text() == '[build]\nrustc-wrapper = "/usr/bin/sccache"\n'
    assert not S.user_config_path().exists()
    assert main(["init", "--yes", "--no-service"]) == 0
    assert tomlkit.parse(config.read_text())["build"]["rustc-wrapper"] == kache_executable()


def test_init_reports_a_broken_cargo_config(cargo_home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (cargo_home / "config.toml").write_text("[build\n")
    assert main(["init", "--yes", "--no-service"]) == 1
    assert "cannot be read as TOML" in capsys.readouterr().out


def test_init_installs_the_service_where_a_manager_runs(cargo_home: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    # A stand-in systemctl that records its calls (this machine runs no user systemd).
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "systemctl.log"
    fake = bin_dir / "systemctl"
    fake.write_text(f'#!/bin/sh\necho "$@" >> "{log}"\n')
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{__import__('os').environ['PATH']}")
    assert main(["init", "--yes"]) == 0
    out = capsys.readouterr().out
    unit = Path(__import__("os").environ["XDG_CONFIG_HOME"]) / "systemd" / "user" / "kache.service"
    assert "changed  daemon service" in out and unit.exists()
    assert "--user enable --now kache.service" in log.read_text()
    assert main(["init", "--yes"]) == 0
    assert "ok       daemon service" in capsys.readouterr().out
