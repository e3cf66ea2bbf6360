"""The client the wrapper uses: stdlib only, fast failure, never raises."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from kache.daemon import client, wire
from kache.remote.spec import RemoteSpec
from kache.wrapper import daemon_hit
from tests.support.entries import hexkey


def test_intent_paths_follow_the_protocol() -> None:
    key, crate = hexkey("k"), "proc-macro2"
    assert os.path.basename(client.intent_path("/s", key, crate) or "") == wire.intent_name(key, crate)
    for bad_key, bad_crate in [("../x", "a"), (key.upper(), "a"), (key, "a/b"), (key, "a.b"), (key, ""), ("ab", "a")]:
        assert client.intent_path("/s", bad_key, bad_crate) is None
        assert wire.parse_intent(f"{bad_key}.{bad_crate}") is None


def test_the_client_imports_only_the_standard_library() -> None:
    code = ("import sys; before = set(sys.modules); import kache.daemon.client; "
            "print(sorted(m for m in set(sys.modules) - before if m.startswith('kache')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert eval(out.stdout) == ["kache", "kache.daemon", "kache.daemon.client", "kache.daemon.wire", "kache.quickjson",
                                "kache.store", "kache.store.layout"]  # the store's file names: stdlib only


def test_request_without_a_daemon_is_none_at_once(store_root: Path) -> None:
    began = time.monotonic()
    assert client.request(store_root, {"op": "status"}, timeout=2.0) is None
    assert client.notify(store_root, {"op": "status"}) is False
    assert client.fetch(store_root, "x", hexkey("m")) is None
    assert time.monotonic() - began < 0.2


def test_request_to_a_stale_socket_is_none_at_once(store_root: Path) -> None:
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(client.socket_path(store_root))  # a leftover file: nobody listens
    dead.close()
    assert os.path.exists(client.socket_path(store_root))
    began = time.monotonic()
    assert client.request(store_root, {"op": "status"}, timeout=2.0) is None
    assert client.notify(store_root, {"op": "upload"}) is False
    assert time.monotonic() - began < 0.2


def test_request_to_a_silent_daemon_times_out(store_root: Path) -> None:
    mute = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    mute.bind(client.socket_path(store_root))
    mute.listen(8)  # accepts (in the backlog) but never answers
    try:
        began = time.monotonic()
        assert client.request(store_root, {"op": "status"}, timeout=0.15) is None
        assert 0.1 <= time.monotonic() - began < 0.3
        began = time.monotonic()
        assert client.notify(store_root, {"op": "upload"}) is True  # delivered; the reply is not awaited
        assert time.monotonic() - began < 0.1
    finally:
        mute.close()


def test_a_daemon_that_takes_requests_and_never_answers_is_left_alone_for_a_while(
        store_root: Path, make_settings, monkeypatch) -> None:
    """A stopped or wedged daemon (the kernel still accepts): the first hit request waits
    its timeout, then the calls of the next 30 s do not ask it at all."""
    monkeypatch.setattr(wire, "HIT_TIMEOUT", 0.2)
    mute = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    mute.bind(client.socket_path(store_root))
    mute.listen(8)
    settings = make_settings()
    argv = ["/usr/bin/rustc", "--crate-name", "x", "src/lib.rs"]
    try:
        began = time.monotonic()
        assert daemon_hit.served_by_daemon(argv, settings, began) is False
        assert 0.15 <= time.monotonic() - began < 1.0
        assert daemon_hit.stalled(str(store_root))
        began = time.monotonic()
        for _ in range(5):
            assert daemon_hit.served_by_daemon(argv, settings, began) is False
        assert time.monotonic() - began < 0.1
    finally:
        mute.close()
    stamp = store_root / "tmp" / "daemon-stalled"
    old = time.time() - wire.STALL_SECS - 1
    os.utime(stamp, (old, old))
    assert not daemon_hit.stalled(str(store_root))  # asked again after a while


def _serve_once(path: str, reply: bytes) -> threading.Thread:
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(1)

    def answer() -> None:
        conn, _ = srv.accept()
        conn.recv(65536)
        conn.sendall(reply)
        conn.close()
        srv.close()

    t = threading.Thread(target=answer, daemon=True)
    t.start()
    return t


def test_a_reply_that_is_not_a_json_object_is_none(store_root: Path) -> None:
    for reply in (b"not json\n", b"[1]\n", b'{"ok": true'):
        os.unlink(client.socket_path(store_root)) if os.path.exists(client.socket_path(store_root)) else None
        t = _serve_once(client.socket_path(store_root), reply)
        assert client.request(store_root, {"op": "status"}, timeout=1.0) is None
        t.join(2)


def test_unserialisable_messages_are_refused_quietly(store_root: Path) -> None:
    assert client.request(store_root, {"op": object()}) is None
    assert client.notify(store_root, {"op": object()}) is False


def test_a_socket_path_longer_than_sun_path_still_works(start_daemon, tmp_path: Path, make_settings) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    d = start_daemon({"KACHE_CACHE_DIR": str(deep)})
    assert len(client.socket_path(deep)) > 108
    reply = client.request(deep, {"op": "status"})
    assert reply is not None and reply["socket"] == client.socket_path(deep)
    d.stop()
    assert not os.path.exists(client.socket_path(deep))


def test_write_intent_makes_an_owner_only_empty_file(store_root: Path) -> None:
    key = hexkey("w")
    spec = RemoteSpec("team", endpoint="http://s3.local", credentials={"access_key": "AK", "secret_key": "SK-123456"})
    assert client.write_intent(store_root, key, "serde_json", spec)
    path = store_root / "uploads" / spec.queue_id / f"{key}.serde_json"
    assert path.read_bytes() == b""
    assert (path.stat().st_mode & 0o777) == 0o600 and (path.parent.stat().st_mode & 0o777) == 0o700
    kept = path.parent / "remote.json"
    assert json.loads(kept.read_text()) == {"bucket": "team", "prefix": "artifacts", "endpoint": "http://s3.local",
                                            "region": "us-east-1", "profile": None, "read_only": False}
    assert (kept.stat().st_mode & 0o777) == 0o600
    assert client.write_intent(store_root, key, "serde_json", spec)  # again: fine
    assert not client.write_intent(store_root, "../../etc/passwd", "x", spec)
