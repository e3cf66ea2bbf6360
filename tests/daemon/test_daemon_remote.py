"""The daemon with the real remote (kache.remote.s3 and .sync) on a moto S3 server.

Two machines are two stores, each with its own daemon: A uploads what it built,
B fetches by cheap key, C prefetches from its Cargo.lock.
"""

from __future__ import annotations

from pathlib import Path

from kache import settings as settings_mod
from kache.daemon import client
from kache.remote import spec as spec_mod
from kache.store.store import Store
from tests.support.daemon import REAL_REMOTES, intents
from tests.support.entries import add_seeded_entry, hexkey
from tests.support.s3 import SECRET_KEY
from tests.support.waiting import wait_for


def test_upload_fetch_and_prefetch_through_the_real_remote(start_daemon, store_root: Path, tmp_path: Path,
                                                           s3_env: dict[str, str]) -> None:
    mkey = hexkey("mkey shared")
    key = add_seeded_entry(store_root, "shared_dep", "sd1", mkey=mkey)
    other = add_seeded_entry(store_root, "other_dep", "od1")
    a = start_daemon(remote=REAL_REMOTES)
    spec = spec_mod.from_settings(settings_mod.load())
    assert spec is not None and spec.credentials["secret_key"] == SECRET_KEY
    for k, crate in ((key, "shared_dep"), (other, "other_dep")):
        client.write_intent(store_root, k, crate, spec)
        assert client.notify(store_root, {"op": "upload", "key": k, "crate": crate, "remote": spec.to_json()})
    wait_for(lambda: a.status()["uploads_done"] == 2, timeout=15, what="two uploads")
    assert a.status()["remote"] == f"s3://{s3_env['KACHE_S3_BUCKET']}/artifacts"
    assert intents(store_root, spec) == []
    a.stop()

    b_root = tmp_path / "machine-b"
    b = start_daemon({"KACHE_CACHE_DIR": str(b_root)}, remote=REAL_REMOTES)
    assert client.fetch(b_root, "shared_dep", hexkey("mkey nobody"), remote=spec.to_json()) == []
    assert client.fetch(b_root, "shared_dep", mkey, budget_ms=2500, remote=spec.to_json()) == [key]
    store = Store(str(b_root))
    assert store.get(key) is not None and store.get(other) is None
    store.close()
    assert b.status()["downloads"] == 1
    b.stop()

    c_root = tmp_path / "machine-c"
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "Cargo.lock").write_text('version = 3\n\n[[package]]\nname = "other-dep"\nversion = "1.0.0"\n')
    c = start_daemon({"KACHE_CACHE_DIR": str(c_root)}, remote=REAL_REMOTES)
    assert c.request({"op": "prefetch", "root": str(ws), "remote": spec.to_json()}) == {"ok": True, "started": True}
    wait_for(lambda: c.status()["downloads"] == 1, timeout=15, what="the prefetch")
    store = Store(str(c_root))
    assert store.get(other) is not None and store.get(key) is None  # only what Cargo.lock names
    store.close()
    assert c.status()["last_error"] is None
    c.stop()
    for root in (store_root, b_root, c_root):
        assert SECRET_KEY not in (root / "daemon.log").read_text()
