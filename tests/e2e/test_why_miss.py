"""`kache why-miss` after real builds: it names the flags that differ."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.support.workspace import kache, make_workspace

pytestmark = pytest.mark.e2e


def test_check_then_build_names_emit(tmp_path: Path, kache_exe: str) -> None:
    """`cargo check`, then `cargo build`: the library's two entries differ in --emit, in
    cargo's unit hash and in the dependency kc_core (itself checked, then built), and
    why-miss says exactly that (it said "compiler flags changed (profile, features,
    RUSTFLAGS, cfg)")."""
    ws = make_workspace(tmp_path, kache_exe)
    ws.env["KACHE_DAEMON_AUTOSTART"] = "0"
    ws.cargo("check")
    ws.build()
    out = kache(ws, "why-miss", "kc_util")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    patterns = [
        r"the last call of kc_util \(\d+s ago\) was a miss; it was compiled and stored",
        r"latest entry  [0-9a-f]{12} \(\d+s ago\)",
        r"nearest entry [0-9a-f]{12} \(\d+s ago\), 2 component\(s\) differ:",
        r"  compiler flags changed  \[args: [0-9a-f]{16} -> [0-9a-f]{16}\]",
        re.escape("    --emit changed: dep-info,metadata → dep-info,metadata,link (cargo check vs cargo build)"),
        r"    -C metadata changed: [0-9a-f]+ → [0-9a-f]+ " + re.escape(
            "(cargo's hash of the unit: profile, features, dependencies, target)"),
        r"    -C extra-filename changed: -[0-9a-f]+ → -[0-9a-f]+ \(follows -C metadata\)",
        r"    --extern changed: kc_core=<TARGET>/debug/deps/libkc_core-[0-9a-f]+\.rmeta → "
        r"kc_core=<TARGET>/debug/deps/libkc_core-[0-9a-f]+\.rmeta",
        r"  dependency changed: kc_core  \[extern:kc_core: [0-9a-f]{16} -> [0-9a-f]{16}\]",
    ]
    assert len(lines) == len(patterns), out.stdout
    for line, pattern in zip(lines, patterns, strict=True):
        assert re.fullmatch(pattern, line), (line, out.stdout)
