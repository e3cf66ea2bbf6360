"""The story on real cargo: machine A builds and pushes; machine B, elsewhere, pulls and
builds without compiling any cacheable crate."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable

import pytest

from tests.support.workspace import CACHEABLE_CRATES, Workspace, outcomes

pytestmark = pytest.mark.e2e

HITS = {"local_hit", "prefetch_hit"}  # a hit: restored, rustc not run


def kache_sync(ws: Workspace, s3: dict[str, str], *args: str) -> dict:
    # The remote is named only to `kache sync`, not to the builds (no daemon involved).
    env = {**os.environ, **ws.env, **s3}
    out = subprocess.run([ws.kache, "sync", "--json", *args], cwd=ws.path / "app", env=env,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_push_on_one_machine_pull_and_hit_on_another(machines: Callable[[str], Workspace],
                                                     s3_vars: dict[str, str]) -> None:
    a = machines("machine-a")
    a.build()
    assert {c: o for c, o in outcomes(a.take_events()).items() if c in CACHEABLE_CRATES} == \
        {c: "miss" for c in CACHEABLE_CRATES}
    expected = a.app()
    pushed = kache_sync(a, s3_vars, "--push")
    assert {e["crate"] for e in pushed["push"]["entries"]} >= CACHEABLE_CRATES
    assert pushed["failures"] == [] and pushed["skipped"] == []

    b = machines("machine-b-with-a-longer-name")
    assert b.path != a.path and b.store != a.store and b.env["HOME"] != a.env["HOME"]
    pulled = kache_sync(b, s3_vars, "--pull")
    assert pulled["ok"] and {e["crate"] for e in pulled["pull"]["entries"]} >= CACHEABLE_CRATES
    b.build()
    evs = outcomes(b.take_events())
    # First uses of entries that sync brought count as prefetch hits (kache.engine.hit).
    assert {c: evs[c] in HITS for c in CACHEABLE_CRATES} == dict.fromkeys(CACHEABLE_CRATES, True), evs
    assert b.take_rustc_runs() == ["kc_app"]  # only the binary (not cached by default) compiled
    assert b.app() == expected
    out = b.cargo("build", "-v")
    assert "Compiling" not in out.stderr  # and cargo considers everything fresh
