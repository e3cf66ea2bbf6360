"""The modes of what kache puts in target/ are the modes rustc gives its own files under
the build's umask: compiled (a miss) and restored (a hit), differentially against the
same build without kache. Real cargo and rustc."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.support.workspace import Workspace, outcomes

pytestmark = pytest.mark.e2e


def modes(ws: Workspace) -> dict[str, int]:
    """Each file of target/debug/deps (and build-script executables) by name: its mode."""
    found = {}
    for p in [*ws.target.glob("debug/deps/*"), *ws.target.glob("debug/build/*/build-script-build*")]:
        if p.is_file():
            found[str(p.relative_to(ws.target))] = p.stat().st_mode & 0o777
    return found


@pytest.fixture
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    """The umask of this test's process, hence of cargo, rustc and kache."""
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


@pytest.mark.parametrize("umask", [0o077, 0o022], indirect=True, ids=["077", "022"])
def test_outputs_have_the_modes_rustc_gives_them_under_the_builds_umask(workspace: Workspace, umask: int) -> None:
    """Was: under umask 077 every cached output was 0644 (0755 for executables), compiled
    or restored: a recorded output was hardlinked into the store and took the blob's mode,
    a restored one was the blob. Now, where the umask gives others less than a blob does,
    the store keeps a copy and a hit restores a copy, as rustc would have written it."""
    ws = workspace
    ws.build(RUSTC_WRAPPER="")  # cargo without a wrapper: the reference
    plain = modes(ws)
    assert plain and set(plain.values()) <= {0o666 & ~umask, 0o777 & ~umask}
    ws.clean()
    ws.take_events()
    ws.build()
    assert outcomes(ws.take_events())["kc_core"] == "miss"
    assert modes(ws) == plain
    ws.clean()
    ws.build()
    assert outcomes(ws.take_events())["kc_core"] == "local_hit"
    assert modes(ws) == plain
    ws.verify_app()
    [rlib] = ws.target.glob("debug/deps/libkc_core-*.rlib")
    blobs = {p.stat().st_ino for p in (ws.store / "store").rglob("*") if p.is_file()}
    # Under 022 the output is the blob itself, as before (no copy); under 077 a copy.
    assert (rlib.stat().st_ino in blobs) is (umask == 0o022)
