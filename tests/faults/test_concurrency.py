"""Many builds, the daemon and gc at once over ONE store (real cargo, a real daemon
process uploading to a real S3 server, real ``kache gc`` processes).

Two rounds over one ``KACHE_CACHE_DIR``: four copies of tests/fixtures/ws, each with its
own ``CARGO_TARGET_DIR``, and tests/fixtures/twin (a second workspace whose ``kc-core``
has the same name, cheap key and sources as ws's, only a different data file) build at
the same time, while a daemon uploads every new entry to moto and ``kache gc`` runs in a
loop with ``cache.local_max_size`` far below what the builds store, so it really evicts:
old entries seeded in the store in the cold round, and in the warm round (targets
deleted, every entry aged past gc's two-minute pin) the very entries the builds are
restoring. Every build must succeed and print what a plain cargo build prints; at the end
the store passes a full check (but for one known, reported bug: see
``remote_faults.assert_whole``), the uploads drain and the remote holds only valid archives.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.support import reliability
from tests.support.entries import add_wrapper_entry
from tests.support.env import FIXTURES
from tests.support.remote_faults import (
    ARCHIVE,
    KACHE_EXE,
    DaemonProc,
    FaultProxy,
    assert_whole,
    build,
    intents,
    new_bucket,
    remote_env,
    remote_state,
    store_keys,
)
from tests.support.waiting import wait_for
from tests.support.workspace import Workspace, kache, make_machine, outcomes, plain_cargo_output

pytestmark = [pytest.mark.concurrency, pytest.mark.e2e]

COPIES = 4
MAX_SIZE = "3MB"
"""Far below one round's entries (~10 MB: a build script and a proc macro of ~5 MB each)."""
JUNK = 12
AGE = 3600.0


def twin_reference() -> str:
    """What kc2-app prints when tests/fixtures/twin is built by plain cargo (no wrapper)."""
    return plain_cargo_output("twin", "kc2-app")


def verify_twin(ws: Workspace) -> None:
    got = subprocess.run([ws.target / "debug" / "kc2-app"], capture_output=True, text=True, check=True).stdout
    reliability.count("artifacts checked")
    if got != twin_reference():
        reliability.count("wrong artifacts served")
        raise AssertionError(f"wrong artifact: kc2-app printed {got!r}, expected {twin_reference()!r}")


class GcLoop:
    """``kache gc --json`` run again and again in a thread until stopped; what it evicted."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.runs = 0
        self.evicted = 0
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="gc-loop", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            out = subprocess.run([KACHE_EXE, "gc", "--json"], env=self.env, capture_output=True, text=True,
                                 timeout=120)
            if out.returncode != 0:
                self.errors.append(out.stderr)
                continue
            self.runs += 1
            self.evicted += json.loads(out.stdout)["entries_evicted"]

    def stop(self) -> None:
        wait_for(lambda: self.runs > 0 or self.errors, 60, "a gc run to complete")
        self._stop.set()
        self._thread.join(150)


def age_entries(store: Path, seconds: float) -> None:
    """Make every entry look unused for ``seconds`` (older than gc's pin)."""
    db = sqlite3.connect(store / "index.db", timeout=60)
    try:
        with db:
            db.execute("UPDATE entries SET created = created - ?, last_used = last_used - ?", (seconds, seconds))
    finally:
        db.close()


def seed_junk(store: Path, round_: str) -> None:
    """Old entries of crates no build uses (about 1.2 MB), for gc to evict."""
    from kache.store.store import Store

    s = Store(str(store))
    try:
        old = time.time() - 2 * AGE
        for i in range(JUNK):
            add_wrapper_entry(s, f"junk_{round_}_{i}", seed=f"{round_}-{i}", created=old,
                      blobs=[os.urandom(96 << 10), f"rmeta {round_} {i}".encode(), f"d {round_} {i}\n".encode()])
    finally:
        s.close()


def test_builds_the_daemon_and_gc_at_once_over_one_store_stay_correct(
        s3: str, daemons: list[DaemonProc], tmp_path: Path) -> None:
    """Two rounds of 4 copies of one workspace and a look-alike second workspace building
    at once, with the daemon uploading and gc evicting: every build succeeds and is
    correct, the store passes a full check, and every upload lands, valid, on S3."""
    store = tmp_path / "store"  # HOME, XDG dirs and CARGO_HOME: clean_env's, in tmp_path
    bucket = new_bucket(s3)
    env = {"KACHE_CACHE_DIR": str(store), "KACHE_MAX_SIZE": MAX_SIZE, "RUSTC_WRAPPER": KACHE_EXE,
           **remote_env(s3, bucket)}
    builds: list[Workspace] = []
    for i in range(COPIES):
        path = tmp_path / "src" / f"ws-{i}"
        shutil.copytree(FIXTURES / "ws", path)
        builds.append(Workspace(path, store, KACHE_EXE, tmp_path / "rustc.log",
                                {**env, "CARGO_TARGET_DIR": str(tmp_path / "targets" / f"ws-{i}")}))
    twin = Workspace(tmp_path / "src" / "twin", store, KACHE_EXE, tmp_path / "rustc.log",
                     {**env, "CARGO_TARGET_DIR": str(tmp_path / "targets" / "twin")})
    shutil.copytree(FIXTURES / "twin", twin.path)
    builds.append(twin)
    twin_reference()  # before the rounds: its plain cargo build is not part of the contention

    seed_junk(store, "cold")
    daemon = DaemonProc(env, tmp_path / "logs")
    daemon.wait_ready()
    evicted = {}
    for round_ in ("cold", "warm"):
        if round_ == "warm":
            for ws in builds:
                shutil.rmtree(ws.target)
            age_entries(store, AGE)
            seed_junk(store, "warm")
        gc = GcLoop({**os.environ, **env})
        with ThreadPoolExecutor(len(builds)) as pool:
            for done in [pool.submit(build, ws, 300) for ws in builds]:
                done.result()
        gc.stop()
        assert gc.errors == []
        evicted[round_] = gc.evicted
        for ws in builds[:COPIES]:
            ws.verify_app()
        verify_twin(twin)
        # gc really evicted: the seeded junk is gone (the loop's runs, or the ones the
        # wrapper and the daemon start by themselves over the limit).
        assert not [c for c in store_keys(store).values() if c.startswith("junk_")], round_
    assert evicted["warm"] > 0, evicted

    wait_for(lambda: not intents(store), 120, "the daemon to drain the uploads")
    status = daemon.status()
    daemon.stop()
    assert_whole(store)
    state = remote_state(s3, bucket)
    assert state.invalid == [] and state.dangling == []
    assert state.archives, status
    # What is still in the store and was compiled here is on the remote (gc may have
    # evicted an entry before the daemon got to it: its upload is then moot).
    local = store_keys(store)
    uploaded = {k for k, c in local.items() if not c.startswith("junk_")}
    assert uploaded <= set(state.archives), (sorted(uploaded - set(state.archives)), status)


def test_entries_evicted_during_their_upload_are_skipped_and_uploaded_when_built_again(
        s3: str, proxy: FaultProxy, daemons: list[DaemonProc], tmp_path: Path) -> None:
    """The store is purged while the daemon is uploading from it (its HEAD request held
    in the fault proxy): each upload is skipped, not failed and retried later; then a
    build records the same keys again and asks for their upload: they are uploaded, not
    taken for uploads done (they never were)."""
    bucket = new_bucket(s3)
    ws = make_machine(tmp_path / "m", KACHE_EXE)
    ws.env.update(remote_env(proxy.url, bucket))
    build(ws)  # no daemon yet: four upload intents wait in the store
    keys = store_keys(ws.store)
    assert set(keys) == intents(ws.store)
    proxy.add("hold", "HEAD", ARCHIVE, times=1)
    daemon = DaemonProc({**ws.env, "KACHE_S3_CONCURRENCY": "1"}, tmp_path / "logs")
    assert proxy.held.wait(60), daemon.log()
    out = kache(ws, "purge", "--yes")  # what gc does to entries nobody used lately
    assert out.returncode == 0, out.stderr
    reliability.count("faults injected")
    proxy.release.set()
    wait_for(lambda: not intents(ws.store), 60, "the daemon to go through the intents")
    log = daemon.log()
    assert log.count("upload skipped: ") == len(keys) and "upload failed" not in log, log

    ws.clean()
    build(ws)  # the same keys again, each with its upload intent
    evs = outcomes(ws.take_events())
    assert {evs.get(c) for c in keys.values()} == {"miss"}, evs
    assert set(store_keys(ws.store)) == set(keys)
    wait_for(lambda: not intents(ws.store), 60, "the daemon to upload the entries")
    daemon.stop()
    state = remote_state(s3, bucket)
    assert state.invalid == [] and state.dangling == []
    assert {k: state.complete(k) for k in keys} == dict.fromkeys(keys, True), daemon.log()
