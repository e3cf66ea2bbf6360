"""The native thin client (`kache daemon client`) as cargo's RUSTC_WRAPPER, over real
cargo builds of the fixture workspace, with and without a real daemon."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from tests.support.waiting import wait_for
from tests.support.workspace import (
    CACHEABLE_CRATES,
    Workspace,
    clean_rebuild_served_by_the_daemon,
    edit_util_then_miss_then_daemon_hit,
    outcomes,
)


def build_client(ws: Workspace, output: Path) -> dict:
    """``kache daemon client --output`` for the workspace's settings; its ``--json``."""
    out = subprocess.run([ws.kache, "daemon", "client", "--output", str(output), "--json"],
                         env={**os.environ, **ws.env}, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    built = json.loads(out.stdout)
    assert built["path"] == str(output) and os.access(output, os.X_OK)
    assert built["socket"] == str(ws.store / "daemon.sock") and built["kache"] == ws.kache
    return built


def hits_served(ws: Workspace) -> int:
    out = subprocess.run([ws.kache, "daemon", "--json"], env={**os.environ, **ws.env}, capture_output=True,
                         text=True, check=True)
    return int(json.loads(out.stdout)["hits_served"])


def test_the_daemon_serves_a_clean_rebuild_through_the_native_client(daemon_ws: Workspace, tmp_path: Path) -> None:
    ws = daemon_ws
    ws.env["RUSTC_WRAPPER"] = build_client(ws, tmp_path / "kache-client")["path"]
    ws.take_rustc_runs()
    evs, out = clean_rebuild_served_by_the_daemon(ws)
    assert evs["kc_app"]["outcome"] == "passthrough"  # the bin: the daemon declined, kache ran rustc
    assert ws.take_rustc_runs() == ["kc_app"]
    assert "unused variable: `x`" in out.stderr  # kc_util's warning, replayed through the client
    ws.verify_app()
    # A miss: the daemon declines, kache compiles and records; then the daemon serves it.
    edit_util_then_miss_then_daemon_hit(ws)
    # KACHE_DISABLED reaches kache through the daemon's refusal: rustc compiles everything.
    ws.clean()
    ws.take_rustc_runs()
    ws.build(KACHE_DISABLED="1")
    assert ws.take_events() == []
    assert set(ws.take_rustc_runs()) >= {"kc_util", "kc_core", "kc_app"}
    ws.verify_app()


def test_without_a_daemon_the_client_is_kache(workspace: Workspace, tmp_path: Path) -> None:
    ws = workspace
    ws.env["RUSTC_WRAPPER"] = build_client(ws, tmp_path / "kache-client")["path"]
    ws.env["KACHE_DAEMON_AUTOSTART"] = "0"
    ws.build()
    evs = outcomes(ws.take_events())
    assert all(evs[c] == "miss" for c in CACHEABLE_CRATES), evs
    ws.verify_app()
    ws.clean()
    ws.build()
    evs = [e for e in ws.take_events() if e["crate"] in CACHEABLE_CRATES]
    assert len(evs) == len(CACHEABLE_CRATES)
    assert all(e["outcome"] == "local_hit" and "via" not in e for e in evs), evs
    ws.verify_app()


def test_a_build_with_another_store_is_left_to_kache(daemon_ws: Workspace, tmp_path: Path) -> None:
    """The client asks the daemon of the store it was built for; a build whose settings
    name another store gets nothing from that daemon, and kache uses the other store."""
    ws = daemon_ws
    ws.env["RUSTC_WRAPPER"] = build_client(ws, tmp_path / "kache-client")["path"]
    served = hits_served(ws)
    other = tmp_path / "other-store"
    ws.clean()
    ws.take_events()
    ws.build(KACHE_CACHE_DIR=str(other), KACHE_DAEMON_AUTOSTART="0")
    ws.verify_app()
    assert hits_served(ws) == served
    assert ws.take_events() == []  # nothing served from (or recorded in) the daemon's store
    recorded = [json.loads(line) for line in (other / "events.jsonl").read_text().splitlines()]
    assert {e["crate"]: e["outcome"] for e in recorded if e["crate"] in CACHEABLE_CRATES} == \
        dict.fromkeys(CACHEABLE_CRATES, "miss")


def test_with_debug_logging_the_daemon_logs_each_call_the_client_asked(daemon_ws: Workspace, tmp_path: Path) -> None:
    """The Python wrapper writes one line per call to kache.log with KACHE_LOG=kache=debug;
    a native client cannot, so the daemon writes it for the calls it answered."""
    ws = daemon_ws
    ws.env["RUSTC_WRAPPER"] = build_client(ws, tmp_path / "kache-client")["path"]
    log = ws.store / "kache.log"
    log.unlink(missing_ok=True)
    ws.clean()
    ws.build()  # without KACHE_LOG: nothing
    assert not log.exists() or "served by the daemon" not in log.read_text()
    ws.clean()
    ws.build(KACHE_LOG="kache=debug")
    lines = log.read_text().splitlines()
    for crate in CACHEABLE_CRATES:
        [line] = [x for x in lines if "kache.daemon[" in x and f": {crate}: local_hit (served by the daemon) in " in x]
        assert line.split(" ", 2)[1] == "DEBUG", line
    # the bin: the daemon declined, then kache compiled it and said so
    assert any(": kc_app: not served by the daemon (no hit in its store) in " in x for x in lines), lines
    assert any("kache.wrapper[" in x and ": kc_app: passthrough" in x for x in lines), lines


def test_the_daemons_runner_compiles_the_misses_the_native_client_hands_it(workspace: Workspace,
                                                                          tmp_path: Path) -> None:
    """A cold build with a daemon on an empty store: every miss goes from the client to the
    daemon's runner, none to a kache process of its own, and the build is plain cargo's."""
    ws = workspace
    shim = tmp_path / "kache-shim"  # the kache the client falls back to: logs, then is kache
    started = tmp_path / "kache-started.log"
    shim.write_text(f'#!/bin/sh\nprintf "%s\\n" "$*" >> "{started}"\nexec "{ws.kache}" "$@"\n')
    shim.chmod(0o755)
    out = subprocess.run([ws.kache, "daemon", "client", "--output", str(tmp_path / "kache-client"), "--kache",
                          str(shim), "--json"], env={**os.environ, **ws.env}, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    ws.env.update(RUSTC_WRAPPER=str(tmp_path / "kache-client"), KACHE_DAEMON_IDLE_TIMEOUT="120")
    out = subprocess.run([ws.kache, "daemon", "start"], env={**os.environ, **ws.env}, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    try:
        wait_for(lambda: (ws.store / "run.sock").exists(), 20, "the runner's socket")
        status = json.loads(subprocess.run([ws.kache, "daemon", "--json"], env={**os.environ, **ws.env},
                                           capture_output=True, text=True, check=True).stdout)
        assert isinstance(status["runner"], int)
        built = ws.build(KACHE_LOG="kache=debug")
        evs = outcomes(ws.take_events())
        assert all(evs[c] == "miss" for c in CACHEABLE_CRATES), evs  # compiled and recorded
        assert set(ws.take_rustc_runs()) >= CACHEABLE_CRATES | {"kc_app"}
        assert "unused variable: `x`" in built.stderr  # rustc's stderr, through the descriptors handed over
        assert "jobserver" not in built.stderr  # cargo's jobserver pipe reached rustc too
        ws.verify_app()  # what plain cargo's build prints
        compiles = [line for line in (started.read_text().splitlines() if started.exists() else [])
                    if "--crate-name" in line.split()]
        assert compiles == []  # no miss started kache
        lines = (ws.store / "kache.log").read_text().splitlines()
        for crate in CACHEABLE_CRATES | {"kc_app"}:
            assert any(f": {crate}: " in x and x.endswith(", run by the daemon's runner") for x in lines), crate
        # a compile error: cargo sees rustc's status and message once (not a second run by kache)
        util = ws.path / "util" / "src" / "lib.rs"
        util.write_text(util.read_text() + "\npub fn broken() -> u8 { \"no\" }\n")
        failed = ws.cargo("build", check=False)
        assert failed.returncode == 101
        assert failed.stderr.count("error[E0308]: mismatched types") == 1, failed.stderr
        util.write_text(util.read_text().replace("\npub fn broken() -> u8 { \"no\" }\n", ""))
        # and the entries recorded through the runner serve the next build as hits
        clean_rebuild_served_by_the_daemon(ws)
        ws.verify_app()
    finally:
        subprocess.run([ws.kache, "daemon", "stop"], env={**os.environ, **ws.env}, capture_output=True)
