"""Hits served by a running daemon (cache.daemon_hits): the wrapper is a thin client
that sends the call over the socket; anything the daemon does not serve falls back to
the wrapper's own path. Real cargo, rustc and daemon process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.support.launch import LAUNCH
from tests.support.workspace import (
    CACHEABLE_CRATES,
    Workspace,
    clean_rebuild_served_by_the_daemon,
    edit_util_then_miss_then_daemon_hit,
    kache,
    outcomes,
)


def test_a_clean_rebuild_is_served_by_the_daemon(daemon_ws: Workspace) -> None:
    ws = daemon_ws
    ws.take_rustc_runs()
    clean_rebuild_served_by_the_daemon(ws)
    assert ws.take_rustc_runs() == ["kc_app"]  # the bin is not cached: rustc ran for it alone
    ws.verify_app()
    # What the daemon wrote into target/ has the modes the build's umask gives, not its own.
    umask = os.umask(0o022)
    os.umask(umask)
    [depinfo] = ws.target.glob("debug/deps/kc_util-*.d")
    assert depinfo.stat().st_mode & 0o777 == 0o666 & ~umask
    sessions = [s for s in ws.target.glob("debug/incremental/kc_util-*/s-*") if s.is_dir()]
    assert sessions and all(s.stat().st_mode & 0o777 == (0o777 & ~umask) | 0o700 for s in sessions)
    status = kache(ws, "daemon", "--json")
    assert '"hits_served": ' in status.stdout and '"hits_served": 0' not in status.stdout


def test_the_daemon_replays_rustcs_warnings(daemon_ws: Workspace) -> None:
    """kc_util's warning reaches cargo's output through the daemon, as from rustc."""
    ws = daemon_ws
    ws.clean()
    ws.take_events()
    out = ws.build()
    assert "unused variable: `x`" in out.stderr
    assert outcomes(ws.take_events())["kc_util"] == "local_hit"


def test_daemon_hits_off_and_misses_take_the_wrappers_path(daemon_ws: Workspace) -> None:
    ws = daemon_ws
    ws.clean()
    ws.take_events()
    ws.build(KACHE_DAEMON_HITS="0")
    evs = [e for e in ws.take_events() if e["crate"] in CACHEABLE_CRATES]
    assert evs and all(e["outcome"] == "local_hit" and "via" not in e for e in evs), evs
    # A miss: the daemon answers "no hit", the wrapper compiles and records; the daemon's
    # kept connections see the entry that wrapper recorded meanwhile.
    edit_util_then_miss_then_daemon_hit(ws)


def test_an_index_moved_aside_is_never_served_from_the_daemons_kept_connections(daemon_ws: Workspace) -> None:
    """The daemon keeps its index connections open between hits. When the index is moved
    aside (as after damage) and a new one started, the next clean build is not served
    from the old file through a kept connection: every unit compiles and is recorded
    anew, and the build after that is served by the daemon from the new index."""
    ws = daemon_ws
    ws.clean()
    ws.take_events()
    ws.build()  # the daemon now holds open connections to this index
    evs = [e for e in ws.take_events() if e["crate"] in CACHEABLE_CRATES]
    assert evs and all(e.get("via") == "daemon" for e in evs), evs
    index = ws.store / "index.db"
    for suffix in ("", "-wal", "-shm"):
        if Path(f"{index}{suffix}").exists():
            os.replace(f"{index}{suffix}", f"{index}.corrupt-1{suffix}")
    ws.clean()
    ws.build()
    evs = outcomes(ws.take_events())
    assert all(evs[c] in ("miss", "dup") for c in CACHEABLE_CRATES), evs
    ws.verify_app()
    ws.clean()
    ws.build()
    evs = [e for e in ws.take_events() if e["crate"] in CACHEABLE_CRATES]
    assert evs and all(e["outcome"] == "local_hit" and e.get("via") == "daemon" for e in evs), evs
    ws.verify_app()


def test_a_dead_daemon_costs_nothing_but_the_thin_path(daemon_ws: Workspace) -> None:
    """Killed with its socket left behind: every call falls back and still hits."""
    ws = daemon_ws
    pid = int((ws.store / "daemon.pid").read_text().split()[0])
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.02)
    assert (ws.store / "daemon.sock").exists()  # stale
    ws.clean()
    ws.take_events()
    ws.build()
    evs = [e for e in ws.take_events() if e["crate"] in CACHEABLE_CRATES]
    assert evs and all(e["outcome"] == "local_hit" and "via" not in e for e in evs), evs
    ws.verify_app()


def test_a_hit_through_the_daemon_imports_no_store_code(daemon_ws: Workspace) -> None:
    """The thin client needs neither SQLite nor kache's store, key or restore code."""
    ws = daemon_ws
    ws.clean()
    log = ws.path.parent / "calls"
    # One real call, captured from cargo (argv, directory, environment), replayed under
    # -X importtime.
    logger = ws.path.parent / "log-wrapper"
    logger.write_text(f"#!/bin/sh\nprintf '%s\\0' \"$PWD\" \"$@\" > {log}.$$.args\nenv -0 > {log}.$$.env\n"
                      f"exec {ws.kache} \"$@\"\n")
    logger.chmod(0o755)
    ws.build(RUSTC_WRAPPER=str(logger))
    args_file = next(p for p in ws.path.parent.glob("calls.*.args")
                     if b"\0--crate-name\0kc_util\0" in p.read_bytes())
    cwd, *argv = args_file.read_bytes().split(b"\0")[:-1]
    env_file = args_file.with_name(args_file.name.replace(".args", ".env"))
    env = dict(item.split("=", 1) for item in env_file.read_text().split("\0") if "=" in item)
    for p in ws.target.glob("debug/deps/libkc_util-*"):
        p.unlink()
    out = subprocess.run([sys.executable, "-X", "importtime", "-c", LAUNCH, *[a.decode() for a in argv]],
                         cwd=cwd.decode(), env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    names = {line.rsplit("|", 1)[1].strip() for line in out.stderr.splitlines() if line.startswith("import time:")}
    assert "kache.wrapper.daemon_hit" in names
    assert not names & {"_sqlite3", "sqlite3", "kache.engine.handle", "kache.engine.restore", "kache.store.store"}, \
        sorted(names & {"_sqlite3", "sqlite3", "kache.engine.handle", "kache.engine.restore", "kache.store.store"})
    assert any(p.name.startswith("libkc_util-") for p in ws.target.glob("debug/deps/*"))

