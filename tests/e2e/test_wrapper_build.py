"""cargo builds through kache succeed, whatever state kache's configuration is in."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.env import FIXTURES, kache_log

pytestmark = pytest.mark.e2e


def cargo_build(project: Path, kache_exe: str, **env: str) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "RUSTC_WRAPPER": kache_exe, "CARGO_TARGET_DIR": str(project / "target"), **env}
    return subprocess.run(["cargo", "build", "--offline"], cwd=project, env=full_env, capture_output=True, text=True)


@pytest.fixture
def hello(tmp_path: Path) -> Path:
    dst = tmp_path / "hello"
    shutil.copytree(FIXTURES / "hello", dst)
    return dst


def run_hello(project: Path) -> str:
    return subprocess.run([project / "target" / "debug" / "hello"], capture_output=True, text=True,
                          check=True).stdout


def test_cargo_build_through_kache(hello: Path, kache_exe: str) -> None:
    out = cargo_build(hello, kache_exe)
    assert out.returncode == 0, out.stderr
    assert "kache:" not in out.stderr
    assert run_hello(hello) == "hello from hello\n"


def test_broken_config_warns_once_and_builds(hello: Path, kache_exe: str, user_config: Path) -> None:
    user_config.write_text("[cache\ncompression_level = 99\n")
    out = cargo_build(hello, kache_exe)
    assert out.returncode == 0, out.stderr
    assert "kache:" not in out.stderr
    # was "invalid configuration": now the file that does not parse turns caching off, said once
    assert kache_log().count("kache: warning: caching is off: cannot read config file:") == 1
    assert "every rustc call runs directly until it is fixed" in kache_log()
    assert run_hello(hello) == "hello from hello\n"


def test_invalid_value_warns_and_builds(hello: Path, kache_exe: str, user_config: Path) -> None:
    user_config.write_text("[cache]\ncompression_level = 99\n")
    out = cargo_build(hello, kache_exe)
    assert out.returncode == 0, out.stderr
    assert "cache.compression_level = 99: must be between 1 and 22" in kache_log()


def test_disabled_is_a_pure_pass_through(hello: Path, kache_exe: str, user_config: Path) -> None:
    user_config.write_text("[cache\n")
    out = cargo_build(hello, kache_exe, KACHE_DISABLED="1")
    assert out.returncode == 0, out.stderr
    assert "kache:" not in out.stderr
