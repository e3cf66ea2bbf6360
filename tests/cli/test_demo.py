from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e


def test_demo_on_a_fresh_home_hits_every_cacheable_unit(tmp_path: Path, kache_exe: str) -> None:
    target = tmp_path / "demo"
    out = subprocess.run([kache_exe, "demo", str(target)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    # greeting lib, its build script, the proc-macro: 3 cacheable units, all restored
    assert "3 of 3 cacheable units restored from the cache" in out.stdout
    assert "hello, kache: cached, hardlinked, restored, fresh" in out.stdout
    assert "export RUSTC_WRAPPER=" in out.stdout
    # running it again in the same directory works (the directory is the demo's own)
    again = subprocess.run([kache_exe, "demo", str(target)], capture_output=True, text=True)
    assert again.returncode == 0, again.stderr


def test_demo_refuses_a_non_empty_foreign_directory(tmp_path: Path, kache_exe: str) -> None:
    (tmp_path / "mine.txt").write_text("keep me")
    out = subprocess.run([kache_exe, "demo", str(tmp_path)], capture_output=True, text=True)
    assert out.returncode == 1
    assert "the directory is not empty" in out.stderr
    assert (tmp_path / "mine.txt").read_text() == "keep me"
