"""Incremental snapshots (cache.incremental = "auto"): a workspace crate's incremental
session is stored with its entry and restored by a hit after `cargo clean`, so the first
edit after a warm rebuild compiles incrementally, reusing that state, as plain cargo's
would. Real cargo and rustc throughout."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from kache.remote.archive import import_archive, pack_entry
from kache.store.store import Store
from tests.support.workspace import Workspace, outcomes

WORKSPACE_LIBS = ("kc_core", "kc_util")


def sessions(ws: Workspace, crate: str) -> list[Path]:
    """The crate's finalised session directories in the target dir, oldest first."""
    base = ws.target / "debug" / "incremental"
    found = [s for d in base.glob(f"{crate}-*") for s in d.glob("s-*") if s.is_dir() and not s.name.endswith("-working")]
    return sorted(found, key=lambda s: s.name)


def inodes(session: Path) -> set[int]:
    return {p.stat().st_ino for p in session.iterdir()}


def entry_of(ws: Workspace, crate: str) -> dict:
    store = Store(str(ws.store))
    try:
        [entry] = [e for e in store.entries(crate) if e.meta.get("incremental")]
        return entry.meta
    finally:
        store.close()


def edit_core(ws: Workspace, n: int) -> None:
    shapes = ws.path / "core" / "src" / "shapes.rs"
    shapes.write_text(shapes.read_text() + f"\npub fn edit_{n}() -> u32 {{ {n} }}\n")


def test_a_warm_rebuild_restores_the_state_and_the_next_edit_reuses_it(workspace: Workspace) -> None:
    ws = workspace
    ws.build()
    for crate in WORKSPACE_LIBS:
        snap = entry_of(ws, crate)["incremental"]
        assert snap["root"] == str(ws.path) and snap["files"], snap
        [session] = sessions(ws, crate)
        assert snap["session"] == session.name
        assert {f["name"] for f in snap["files"]} == {p.name for p in session.iterdir()}
    ws.clean()
    ws.take_events()
    ws.build()
    hits = {e["crate"]: e for e in ws.take_events() if e["crate"] in WORKSPACE_LIBS}
    restored = {}
    for crate in WORKSPACE_LIBS:
        assert hits[crate]["outcome"] == "local_hit" and hits[crate]["incremental"] == "restored", hits[crate]
        [session] = sessions(ws, crate)
        assert all(p.stat().st_mode & 0o200 for p in session.iterdir())  # rustc must be able to write outputs
        restored[crate] = inodes(session)
        # the restored copies are in the snapshot memo: the edit's snapshot will not hash
        # what rustc hardlinks from them
        store = Store(str(ws.store))
        try:
            memo = store.incremental_files(str(session.parent))
        finally:
            store.close()
        assert {ino for _, ino in memo} == restored[crate]
    ws.verify_app()

    edit_core(ws, 1)
    ws.take_rustc_runs()
    ws.build()
    assert {"kc_core", "kc_util"} <= set(ws.take_rustc_runs())
    for crate in WORKSPACE_LIBS:
        newest = sessions(ws, crate)[-1]
        # rustc links the work products it reuses from the old session into the new one:
        # shared inodes prove the restored state was used, not rebuilt from scratch.
        assert inodes(newest) & restored[crate], f"{crate}: the edit did not reuse the restored session"
    ws.verify_app()
    # The edit's compile is cached with its own session, and serves the next clean build.
    ws.clean()
    ws.take_events()
    ws.build()
    evs = outcomes(ws.take_events())
    assert all(evs[c] == "local_hit" for c in WORKSPACE_LIBS), evs
    ws.verify_app()


def test_state_of_its_own_is_left_alone(workspace: Workspace) -> None:
    """A hit in a crate that already has incremental state restores only the outputs."""
    ws = workspace
    ws.build()
    [before] = sessions(ws, "kc_core")
    for p in (ws.target / "debug" / "deps").glob("libkc_core-*"):
        p.unlink()  # cargo re-runs the unit; kache serves it
    ws.take_events()
    ws.build()
    [hit] = [e for e in ws.take_events() if e["crate"] == "kc_core"]
    assert hit["outcome"] == "local_hit" and "incremental" not in hit
    assert sessions(ws, "kc_core") == [before]
    ws.verify_app()


def test_another_checkout_gets_outputs_but_no_state(workspace: Workspace, tmp_path: Path) -> None:
    """A snapshot is restored only in the checkout that recorded it; elsewhere a hit is
    outputs only (rustc's state records where it was made)."""
    ws = workspace
    ws.build()
    other_path = tmp_path / "checkout-b" / "ws"
    shutil.copytree(ws.path, other_path, ignore=shutil.ignore_patterns("target"))
    other = Workspace(other_path, ws.store, ws.kache, ws.rustc_log, dict(ws.env))
    other.take_events()
    other.build()
    evs = [e for e in other.take_events() if e["crate"] in WORKSPACE_LIBS]
    assert [e["outcome"] for e in evs] == ["local_hit"] * len(WORKSPACE_LIBS)
    assert not any("incremental" in e for e in evs)
    assert not any(sessions(other, c) for c in WORKSPACE_LIBS)
    other.verify_app()


def test_a_damaged_session_blob_costs_only_the_snapshot(workspace: Workspace) -> None:
    ws = workspace
    ws.build()
    snap = entry_of(ws, "kc_core")["incremental"]
    blob = ws.store / "store" / snap["files"][0]["hash"][:2] / snap["files"][0]["hash"]
    os.chmod(blob, 0o644)
    data = bytearray(blob.read_bytes())
    data[0] ^= 0xFF
    blob.write_bytes(bytes(data))
    ws.clean()
    ws.take_events()
    ws.build()
    [hit] = [e for e in ws.take_events() if e["crate"] == "kc_core"]
    assert hit["outcome"] == "local_hit" and "incremental" not in hit
    assert not sessions(ws, "kc_core")
    ws.verify_app()
    edit_core(ws, 1)
    ws.build()  # incremental from scratch: slower, never wrong
    ws.verify_app()


def test_drop_mode_keeps_no_state(workspace: Workspace) -> None:
    ws = workspace
    ws.build(KACHE_INCREMENTAL="drop")
    assert not any(sessions(ws, c) for c in WORKSPACE_LIBS)
    store = Store(str(ws.store))
    try:
        assert not any(e.meta.get("incremental") for e in store.entries())
    finally:
        store.close()


def test_snapshots_stay_local(workspace: Workspace, tmp_path: Path) -> None:
    """An archive for the remote carries the outputs only (a session is only ever restored
    in the checkout that made it)."""
    ws = workspace
    ws.build()
    store = Store(str(ws.store))
    try:
        [entry] = [e for e in store.entries("kc_core") if e.meta.get("incremental")]
        data = pack_entry(store, entry.key)
    finally:
        store.close()
    empty = Store(str(tmp_path / "empty"), create=True)
    try:
        import_archive(empty, data, expected_key=entry.key)
        [imported] = empty.entries("kc_core")
        assert "incremental" not in imported.meta
        assert imported.meta["files"] == entry.meta["files"]
    finally:
        empty.close()
