"""KACHE_LOG for commands: a stderr handler on the `kache` logger; unset, nothing."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path


def test_kache_log_debug_prints_debug_lines_to_stderr(kache_exe: str, store_env: Path) -> None:
    out = subprocess.run([kache_exe, "stats"], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "KACHE_LOG": "kache=debug"})
    assert out.returncode == 0, out.stderr
    lines = out.stderr.splitlines()
    assert lines[0].startswith("kache: DEBUG kache.cli: kache ") and lines[0].endswith(": running `kache stats`")
    assert lines[-1].startswith("kache: DEBUG kache.cli: `kache stats` ended with status 0 in ")
    quiet = subprocess.run([kache_exe, "stats"], capture_output=True, text=True, timeout=60, env={**os.environ})
    assert quiet.returncode == 0 and "DEBUG" not in quiet.stderr
    info = subprocess.run([kache_exe, "stats"], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "KACHE_LOG": "kache=info"})
    assert "DEBUG" not in info.stderr
