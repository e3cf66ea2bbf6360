"""The daemon in this process, with a fake remote: protocol, uploads, fetches, lifecycle."""

from __future__ import annotations

import json
import os
import re
import socket
import stat
import time
from pathlib import Path

import pytest

from kache import __version__
from kache.daemon import client, wire
from kache.daemon.lifecycle import AlreadyRunning
from kache.daemon.logs import log_level
from kache.daemon.options import DaemonOptions, stand_in
from kache.daemon.server import Daemon
from kache.remote.spec import RemoteSpec
from tests.support.daemon import FAKE, FAKE_DOC, FakeRemote, intents
from tests.support.entries import add_seeded_entry, hexkey
from tests.support.hostile import accepted, tried
from tests.support.launch import one_file_lib
from tests.support.waiting import wait_for


def raw(root: Path | str, data: bytes, *, read: bool = True) -> bytes:
    """Send bytes as they are; return what the daemon answered before closing."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(3)
    s.connect(client.socket_path(root))
    try:
        s.sendall(data)
    except OSError:
        pass
    out = b""
    if read:
        try:
            while not out.endswith(b"\n"):
                chunk = s.recv(65536)
                if not chunk:
                    break
                out += chunk
        except OSError:
            pass
    s.close()
    return out


def test_status_over_the_socket(start_daemon, store_root: Path) -> None:
    d = start_daemon()
    before = time.time()
    st = d.status()
    assert st["pid"] == os.getpid()
    assert st["version"] == __version__ and st["protocol"] == 1
    assert st["started"] <= before and 0 <= st["uptime_s"] < 10
    assert (st["queue"], st["uploads_done"], st["uploads_failed"], st["downloads"], st["prefetches"]) == (0, 0, 0, 0, 0)
    assert st["last_error"] is None
    assert st["socket"] == str(store_root / "daemon.sock")
    assert st["log"] == str(store_root / "daemon.log")
    assert st["remote"] is None and st["remotes"] == []  # no build asked for one yet
    assert (store_root / "daemon.pid").read_text() == f"{os.getpid()}\n"


def test_socket_and_files_are_owner_only(start_daemon, store_root: Path) -> None:
    start_daemon()
    sock = os.stat(store_root / "daemon.sock")
    assert stat.S_ISSOCK(sock.st_mode)
    assert stat.S_IMODE(sock.st_mode) == 0o600
    assert stat.S_IMODE(os.stat(store_root / "daemon.pid").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(store_root / "daemon.log").st_mode) == 0o600


@pytest.mark.parametrize(("data", "error"), [
    (b"hello\n", "invalid request: not JSON"),
    (b"\xff\xfe\x00garbage\n", "invalid request: the line is not UTF-8"),
    (b"[1, 2]\n", "invalid request: expected a JSON object, got list"),
    (b"[" * 60000 + b"\n", "invalid request: not JSON: nested too deeply"),
    (b'{"v": 1, "op": "status"\n', "invalid request: not JSON"),
    (b"x" * (1 << 20) + b"\n", f"invalid request: the line is longer than {wire.MAX_LINE} bytes"),
], ids=["text", "not-utf8", "array", "deep-nesting", "truncated-json", "1MiB-line"])
@pytest.mark.hostile
def test_bad_lines_get_an_error_and_the_daemon_lives_on(start_daemon, data: bytes, error: str) -> None:
    d = start_daemon()
    tried()
    reply = raw(d.root, data)
    if reply:  # a 1 MiB sender may see its connection reset before reading the reply
        parsed = json.loads(reply)
        if parsed.get("ok") is not False:
            accepted(f"the daemon served a bad line: {data[:60]!r}")
        assert parsed["ok"] is False and parsed["error"].startswith(error), parsed
    else:
        assert len(data) > wire.MAX_LINE
    assert d.status()["ok"] is True


@pytest.mark.hostile
def test_unknown_op_and_version_are_refused_but_the_connection_stays(start_daemon) -> None:
    d = start_daemon()
    tried(4)
    lines = (b'{"v": 1, "op": "dance"}\n{"v": 2, "op": "status"}\n{"op": "status"}\n'
             b'{"v": 1, "op": "upload", "key": "../../etc", "crate": "x"}\n{"v": 1, "op": "status"}\n')
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(3)
    s.connect(client.socket_path(d.root))
    s.sendall(lines)
    buf = b""
    while buf.count(b"\n") < 5:
        chunk = s.recv(65536)
        assert chunk
        buf += chunk
    s.close()
    replies = [json.loads(x) for x in buf.splitlines()]
    assert replies[0] == {"ok": False, "error": 'unknown op: "dance": this daemon knows status, upload, fetch, '
                                                "prefetch, hit, used, stop"}
    assert replies[1]["error"] == "unsupported protocol version: got 2, this daemon speaks 1"
    assert replies[2]["error"] == "unsupported protocol version: got null, this daemon speaks 1"
    assert replies[3]["error"] == ('invalid request: key = "../../etc": expected 16 to 128 lowercase hex digits')
    assert replies[4]["ok"] is True and replies[4]["pid"] == os.getpid()


def test_abrupt_disconnects_do_not_kill_the_daemon(start_daemon) -> None:
    d = start_daemon()
    raw(d.root, b"", read=False)  # connect and leave
    raw(d.root, b'{"v": 1, "op": "sta', read=False)  # half a request, then gone
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(client.socket_path(d.root))
    s.sendall(b'{"v": 1, "op": "status"}\n')
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    s.close()  # reset before the reply is read
    assert d.status()["ok"] is True
    wait_for(lambda: d.daemon._conns == 0, what="connections to close")


def test_uploads_reach_the_remote_and_their_intents_go(start_daemon, fake_remote: FakeRemote,
                                                       store_root: Path) -> None:
    d = start_daemon()
    keys = [add_seeded_entry(store_root, "serde", f"s{i}") for i in range(3)]
    for key in keys:
        assert client.write_intent(store_root, key, "serde", FAKE)
        reply = d.request({"op": "upload", "remote": FAKE_DOC, "key": key, "crate": "serde"})
        # queued, or already uploaded: the first request (a new access) makes the daemon
        # scan the intents, and that scan may have taken this one up a moment before
        assert reply is not None and reply["ok"] is True
        assert reply["queued"] >= 1 or key in fake_remote.uploaded, reply
    again = d.request({"op": "upload", "remote": FAKE_DOC, "key": keys[0], "crate": "serde"})  # deduplicated by key
    assert again is not None and again["ok"] is True
    wait_for(lambda: sorted(fake_remote.uploaded) == sorted(keys) and d.status()["queue"] == 0, what="uploads")
    assert len(fake_remote.uploaded) == 3
    assert intents(store_root) == []
    assert d.status()["uploads_done"] == 3
    assert d.status()["remote"] == "s3://fake/artifacts"


def test_an_upload_of_an_entry_no_longer_stored_is_dropped(start_daemon, fake_remote: FakeRemote,
                                                          store_root: Path) -> None:
    d = start_daemon()
    key = hexkey("gone")
    assert d.request({"op": "upload", "remote": FAKE_DOC, "key": key, "crate": "gone"})["ok"] is True  # type: ignore[index]
    wait_for(lambda: not intents(store_root), what="the intent to go")
    assert fake_remote.uploaded == [] and d.status()["uploads_failed"] == 0


def test_failed_uploads_keep_their_intent_retry_and_give_up(start_daemon, fake_remote: FakeRemote,
                                                            store_root: Path) -> None:
    fake_remote.fail_uploads = True
    d = start_daemon(retry_delay=0.05, max_tries=3)
    key = add_seeded_entry(store_root, "tokio", "t1")
    client.write_intent(store_root, key, "tokio", FAKE)
    d.request({"op": "upload", "remote": FAKE_DOC, "key": key, "crate": "tokio"})
    st = wait_for(lambda: (s := d.status())["uploads_failed"] == 3 and s["queue"] == 0 and s, what="3 failures")
    assert st["last_error"] == f"upload failed: tokio {key[:16]}: remote upload failed: bucket fake: 503 Slow Down"
    assert intents(store_root) == [f"{key}.tokio"]
    time.sleep(0.2)
    assert d.status()["uploads_failed"] == 3  # given up: no more tries from this daemon
    log = (store_root / "daemon.log").read_text()
    assert "giving up after 3 tries" in log
    fake_remote.fail_uploads = False  # an explicit request tries again
    d.request({"op": "upload", "remote": FAKE_DOC, "key": key, "crate": "tokio"})
    wait_for(lambda: fake_remote.uploaded == [key], what="the upload")
    wait_for(lambda: not intents(store_root), what="the intent to go")


def test_intents_left_while_no_daemon_ran_are_uploaded_at_start(start_daemon, fake_remote: FakeRemote,
                                                                store_root: Path) -> None:
    keys = [add_seeded_entry(store_root, "rand", f"r{i}") for i in range(4)]
    for key in keys:
        client.write_intent(store_root, key, "rand", FAKE)
    (store_root / "uploads" / FAKE.queue_id / "not-an-intent.txt").write_text("")
    d = start_daemon()
    wait_for(lambda: sorted(fake_remote.uploaded) == sorted(keys), what="uploads from intents")
    wait_for(lambda: intents(store_root) == ["not-an-intent.txt"], what="intents to go")
    assert d.status()["uploads_done"] == 4


def test_intents_are_rescanned_periodically(start_daemon, fake_remote: FakeRemote, store_root: Path) -> None:
    start_daemon(scan_interval=0.1)
    key = add_seeded_entry(store_root, "log", "l1")
    client.write_intent(store_root, key, "log", FAKE)  # no notification: the scan finds it
    wait_for(lambda: fake_remote.uploaded == [key], what="the scan to upload it")


def test_without_a_remote_uploads_are_refused_and_intents_stay(start_daemon, store_root: Path) -> None:
    key = add_seeded_entry(store_root, "syn", "y1")
    client.write_intent(store_root, key, "syn", FAKE)
    d = start_daemon(remote=None)
    st = d.status()
    assert st["remote"] is None and st["queue"] == 0
    reply = d.request({"op": "upload", "remote": FAKE_DOC, "key": key, "crate": "syn"})
    assert reply is not None and reply["ok"] is False and "no remote" in reply["error"]
    no_remote = {"ok": True, "imported": [], "remote": None}
    assert d.request({"op": "fetch", "remote": FAKE_DOC, "crate": "syn", "mkey": hexkey("m")}) == no_remote
    assert intents(store_root) == [f"{key}.syn"]


def test_fetch_imports_what_the_remote_has(start_daemon, fake_remote: FakeRemote, store_root: Path) -> None:
    mkey = hexkey("mkey anyhow")
    fake_remote.entries[mkey] = [("anyhow", "a1"), ("anyhow", "a2")]
    d = start_daemon()
    reply = d.request({"op": "fetch", "remote": FAKE_DOC, "crate": "anyhow", "mkey": mkey, "budget_ms": 2000}, timeout=3)
    assert reply == {"ok": True, "imported": [hexkey("key a1"), hexkey("key a2")]}
    assert d.status()["downloads"] == 2
    empty = d.request({"op": "fetch", "remote": FAKE_DOC, "crate": "anyhow", "mkey": hexkey("nothing")})
    assert empty == {"ok": True, "imported": []}


def test_fetch_answers_within_its_budget_with_what_it_has(start_daemon, fake_remote: FakeRemote,
                                                          store_root: Path) -> None:
    mkey = hexkey("mkey slow")
    fake_remote.entries[mkey] = [("slow", "s1"), ("slow", "s2")]
    fake_remote.fetch_delay = 0.25  # first import at 0.25 s, second at 0.5 s
    d = start_daemon()
    began = time.monotonic()
    reply = d.request({"op": "fetch", "remote": FAKE_DOC, "crate": "slow", "mkey": mkey, "budget_ms": 400}, timeout=3)
    took = time.monotonic() - began
    assert reply == {"ok": True, "imported": [hexkey("key s1")], "timed_out": True}
    assert 0.38 <= took < 0.8, took
    crate, asked, deadline = fake_remote.fetch_calls[0]
    assert (crate, asked) == ("slow", mkey) and 0.39 <= deadline - began <= 0.45
    capped = time.monotonic()
    fake_remote.entries[hexkey("m2")] = [("slow", "s3")] * 3
    fake_remote.fetch_delay = 5
    reply = d.request({"op": "fetch", "remote": FAKE_DOC, "crate": "slow", "mkey": hexkey("m2"), "budget_ms": 60000}, timeout=5)
    assert reply == {"ok": True, "imported": [], "timed_out": True}
    assert time.monotonic() - capped < 3.3  # the hard maximum is 3000 ms


def test_each_request_is_served_by_the_remote_it_names(start_daemon, store_root: Path) -> None:
    """Two builds with two remotes over one store: each one's uploads and fetches go to its
    own; a request naming no remote uses none; status shows both, never a credential."""
    made: dict[str, FakeRemote] = {}

    def factory(spec: RemoteSpec, for_fetch: bool) -> FakeRemote:
        return made.setdefault(spec.bucket, FakeRemote())

    secret = "secret-of-build-b-0123456789"
    one = RemoteSpec("bucket-one", endpoint="http://127.0.0.1:1")
    two = RemoteSpec("bucket-two", prefix="team", credentials={"access_key": "AKIDB", "secret_key": secret})
    d = start_daemon(remote_factory=factory)
    k1, k2 = add_seeded_entry(store_root, "serde", "s1"), add_seeded_entry(store_root, "serde", "s2")
    assert d.request({"op": "upload", "key": k1, "crate": "serde", "remote": one.to_json()})["ok"] is True
    assert d.request({"op": "upload", "key": k2, "crate": "serde", "remote": two.to_json()})["ok"] is True
    wait_for(lambda: set(made) == {"bucket-one", "bucket-two"} and made["bucket-one"].uploaded == [k1]
             and made["bucket-two"].uploaded == [k2], what="each upload in its own bucket")
    mkey = hexkey("mkey anyhow")
    made["bucket-two"].entries[mkey] = [("anyhow", "a1")]
    assert d.request({"op": "fetch", "crate": "anyhow", "mkey": mkey, "remote": one.to_json()}) == \
        {"ok": True, "imported": []}
    assert d.request({"op": "fetch", "crate": "anyhow", "mkey": mkey, "remote": two.to_json()}, timeout=3) == \
        {"ok": True, "imported": [hexkey("key a1")]}
    assert d.request({"op": "fetch", "crate": "anyhow", "mkey": mkey}) == {"ok": True, "imported": [],
                                                                        "remote": None}
    refused = d.request({"op": "upload", "key": k1, "crate": "serde"})
    assert refused is not None and refused["ok"] is False and "names no remote" in refused["error"]
    old = d.request({"op": "fetch", "crate": "x", "mkey": mkey, "remote": "s3://bucket-one/artifacts"})
    assert old == {"ok": False, "error": 'invalid request: remote = "s3://bucket-one/artifacts": expected an '
                                         "object with a bucket"}
    st = d.status()
    assert [(r["url"], r["endpoint"], r["credentials"]) for r in st["remotes"]] == [
        ("s3://bucket-one/artifacts", "http://127.0.0.1:1", "default chain"),
        ("s3://bucket-two/team", None, "environment")]
    assert st["remote"] == "s3://bucket-two/team"  # the one asked for last
    assert secret not in json.dumps(st)
    for spec in (one, two):
        kept = json.loads((store_root / "uploads" / spec.queue_id / "remote.json").read_text())
        assert kept["bucket"] == spec.bucket and "credentials" not in kept
    assert secret not in (store_root / "uploads" / two.queue_id / "remote.json").read_text()


def test_each_upload_goes_out_with_the_credentials_of_the_build_that_asked(start_daemon, store_root: Path) -> None:
    """Two builds, one bucket, two access keys: each one's uploads use its own client;
    an intent a build with keys left on disk waits for a build with the same key, and
    is never sent with another build's."""
    clients: dict[str, FakeRemote] = {}

    def factory(spec: RemoteSpec, for_fetch: bool) -> FakeRemote:
        return clients.setdefault(spec.credentials.get("access_key", "none"), FakeRemote())

    good = RemoteSpec("team", credentials={"access_key": "AKGOOD", "secret_key": "good-secret-0123"})
    bad = RemoteSpec("team", credentials={"access_key": "AKBAD", "secret_key": "bad-secret-0123"})
    assert good.id == bad.id and good.queue_id != bad.queue_id
    left = add_seeded_entry(store_root, "ol", "left by a dead daemon")
    assert client.write_intent(store_root, left, "ol", bad)
    d = start_daemon(remote_factory=factory, scan_interval=3600)  # only a new access triggers a scan
    k_good, k_bad = add_seeded_entry(store_root, "serde", "g"), add_seeded_entry(store_root, "serde", "b")
    assert d.request({"op": "upload", "key": k_good, "crate": "serde", "remote": good.to_json()})["ok"] is True
    wait_for(lambda: clients["AKGOOD"].uploaded == [k_good], what="the good build's upload")
    time.sleep(0.3)  # a scan ran (AKGOOD is a new access): AKBAD's intent is not sent with AKGOOD
    assert clients["AKGOOD"].uploaded == [k_good] and intents(store_root, bad) == [f"{left}.ol"]
    assert d.request({"op": "upload", "key": k_bad, "crate": "serde", "remote": bad.to_json()})["ok"] is True
    wait_for(lambda: sorted(clients["AKBAD"].uploaded) == sorted([k_bad, left]), what="AKBAD's uploads")
    assert clients["AKGOOD"].uploaded == [k_good]


def test_a_remote_that_does_not_answer_is_left_alone_for_a_while(start_daemon, fake_remote: FakeRemote,
                                                                 store_root: Path) -> None:
    """Three fetches in a row that run out of budget: the next ones answer at once with
    nothing, for a minute, instead of costing each miss its whole budget."""
    for i in range(4):
        fake_remote.entries[hexkey(f"m{i}")] = [("slow", f"s{i}")]
    fake_remote.fetch_delay = 5  # never within a budget
    d = start_daemon()
    for i in range(3):
        reply = d.request({"op": "fetch", "remote": FAKE_DOC, "crate": "slow", "mkey": hexkey(f"m{i}"),
                           "budget_ms": 100}, timeout=3)
        assert reply is not None and reply["imported"] == [] and reply.get("timed_out") is True, reply
    began = time.monotonic()
    reply = d.request({"op": "fetch", "remote": FAKE_DOC, "crate": "slow", "mkey": hexkey("m3"), "budget_ms": 2000},
                      timeout=3)
    assert reply == {"ok": True, "imported": [], "down": True} and time.monotonic() - began < 0.5
    st = d.status()
    assert st["remotes"][0]["down"] is True and "remote unavailable: s3://fake/artifacts" in st["last_error"]


def test_a_read_only_build_uploads_nothing_and_records_no_use(start_daemon, fake_remote: FakeRemote,
                                                              store_root: Path) -> None:
    ro = RemoteSpec("fake", read_only=True).to_json()
    d = start_daemon()
    key = add_seeded_entry(store_root, "serde", "s1")
    reply = d.request({"op": "upload", "key": key, "crate": "serde", "remote": ro})
    assert reply is not None and reply["ok"] is False and "read-only" in reply["error"]
    assert d.request({"op": "used", "key": key, "crate": "serde", "remote": ro}) == {"ok": True, "queued": False}
    assert intents(store_root) == [] and fake_remote.uploaded == [] and fake_remote.used == []


def test_uses_are_recorded_once_a_day(start_daemon, fake_remote: FakeRemote, store_root: Path) -> None:
    mkey = hexkey("mkey anyhow")
    fake_remote.entries[mkey] = [("anyhow", "a1")]
    d = start_daemon()
    assert d.request({"op": "fetch", "remote": FAKE_DOC, "crate": "anyhow", "mkey": mkey}, timeout=3)["imported"]
    wait_for(lambda: fake_remote.used == [("anyhow", hexkey("key a1"))], what="the fetch's use record")
    key = hexkey("key p1")
    assert d.request({"op": "used", "remote": FAKE_DOC, "key": key, "crate": "tokio"}) == {"ok": True, "queued": True}
    assert d.request({"op": "used", "remote": FAKE_DOC, "key": key, "crate": "tokio"}) == {"ok": True,
                                                                                          "queued": False}
    wait_for(lambda: len(fake_remote.used) == 2, what="the use record")


def test_intents_of_an_older_kache_go_to_the_daemons_own_remote(start_daemon, fake_remote: FakeRemote,
                                                                store_root: Path) -> None:
    key = add_seeded_entry(store_root, "rand", "r1")
    (store_root / "uploads").mkdir()
    (store_root / "uploads" / f"{key}.rand").write_text("")  # no remote named: an older kache's
    own = RemoteSpec("team-cache")
    d = start_daemon({"KACHE_S3_BUCKET": "team-cache"})
    wait_for(lambda: fake_remote.uploaded == [key], what="the adopted intent's upload")
    wait_for(lambda: intents(store_root, own) == [], what="the intent to go")
    assert [r.spec.url for r in d.daemon.remotes.all()] == ["s3://team-cache/artifacts"]


def test_prefetch_runs_once_per_root_in_the_background(start_daemon, tmp_path: Path) -> None:
    calls: list[dict] = []

    def sync(store, remote, **kw):  # noqa: ANN001, ANN003, ANN202
        calls.append({"store": store.root, **kw})
        time.sleep(0.2)
        return {"pulled": ["a", "b"]}

    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "Cargo.lock").write_text("version = 3\n")
    d = start_daemon(sync=sync)
    began = time.monotonic()
    assert d.request({"op": "prefetch", "remote": FAKE_DOC, "root": str(ws)}) == {"ok": True, "started": True}
    assert time.monotonic() - began < 0.15  # replied before the pull finished
    again = d.request({"op": "prefetch", "remote": FAKE_DOC, "root": str(ws) + "/"})
    assert again is not None and again["started"] is False and "started 0s ago" in again["reason"]
    other = d.request({"op": "prefetch", "remote": FAKE_DOC, "root": str(tmp_path)})
    assert other == {"ok": True, "started": False, "reason": f"no Cargo.lock in {tmp_path}"}
    bad = d.request({"op": "prefetch", "remote": FAKE_DOC, "root": "relative/path"})
    assert bad == {"ok": False, "error": 'invalid request: root = "relative/path": expected an absolute path'}
    wait_for(lambda: d.status()["downloads"] == 2, what="the prefetch to finish")
    assert d.status()["prefetches"] == 1
    assert calls == [{"store": d.root, "pull": True, "push": False, "all_crates": False, "workspace": ws,
                      "dry_run": False, "concurrency": 8}]


def test_idle_daemon_exits_and_cleans_up(start_daemon, store_root: Path) -> None:
    d = start_daemon({"KACHE_DAEMON_IDLE_TIMEOUT": "1"})
    assert d.status()["idle_timeout_s"] == 1
    d.thread.join(4)
    assert not d.thread.is_alive() and d.result == {"code": 0}
    assert not (store_root / "daemon.sock").exists()
    assert not (store_root / "daemon.pid").exists()
    assert "stopped (idle for 1s)" in (store_root / "daemon.log").read_text()
    assert client.request(store_root, {"op": "status"}, timeout=0.5) is None


def test_a_second_daemon_refuses_to_start(start_daemon, make_settings, store_root: Path) -> None:
    d = start_daemon()
    with pytest.raises(AlreadyRunning) as e:
        Daemon(make_settings(), DaemonOptions(remote_factory=stand_in(None), handle_signals=False)).serve()
    assert e.value.pid == os.getpid()
    assert str(e.value) == f"kache daemon is already running (pid {os.getpid()})"
    assert d.status()["ok"] is True  # the first one is untouched
    assert (store_root / "daemon.sock").exists()


def test_stop_replies_then_exits_leaving_pending_intents(start_daemon, fake_remote: FakeRemote,
                                                         store_root: Path) -> None:
    fake_remote.fail_uploads = True
    d = start_daemon(retry_delay=60)
    key = add_seeded_entry(store_root, "pending", "p1")
    client.write_intent(store_root, key, "pending", FAKE)
    d.request({"op": "upload", "remote": FAKE_DOC, "key": key, "crate": "pending"})
    wait_for(lambda: d.status()["uploads_failed"] == 1, what="a failed upload")
    assert d.request({"op": "stop"}) == {"ok": True, "stopping": True, "pid": os.getpid()}
    d.thread.join(5)
    assert not d.thread.is_alive() and d.result == {"code": 0}
    assert not (store_root / "daemon.sock").exists() and not (store_root / "daemon.pid").exists()
    assert intents(store_root) == [f"{key}.pending"]
    assert "1 upload(s) left as intents" in (store_root / "daemon.log").read_text()


def test_a_stale_socket_and_pid_file_are_taken_over(start_daemon, store_root: Path) -> None:
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(store_root / "daemon.sock"))
    dead.close()
    (store_root / "daemon.pid").write_text("999999\n")
    d = start_daemon()
    assert d.status()["pid"] == os.getpid()


def test_a_code_change_stops_the_daemon_and_re_executes_it(start_daemon, store_root: Path, tmp_path: Path) -> None:
    code = tmp_path / "pkg"
    code.mkdir()
    (code / "mod.py").write_text("x = 1\n")
    execs: list[list[str]] = []
    d = start_daemon(reexec=True, exec_hook=execs.append, watch_interval=0.05, watch_dir=str(code))
    time.sleep(0.15)
    assert d.thread.is_alive()
    st = os.stat(code / "mod.py")
    os.utime(code / "mod.py", ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    d.thread.join(3)
    assert not d.thread.is_alive()
    assert execs and execs[0][3:] == ["daemon", "run"]
    assert d.daemon.restart_reason == "kache's code changed"
    assert not (store_root / "daemon.pid").exists()


def test_a_service_never_idles_out_and_re_executes_as_a_service(start_daemon, store_root: Path, tmp_path: Path
                                                                 ) -> None:
    code = tmp_path / "code"
    code.mkdir()
    (code / "mod.py").write_text("x = 1\n")
    execs: list[list[str]] = []
    d = start_daemon(reexec=True, exec_hook=execs.append, watch_interval=0.05, watch_dir=str(code), service=True,
                     env={"KACHE_DAEMON_IDLE_TIMEOUT": "1"})
    assert d.daemon.idle_timeout == 0
    time.sleep(1.5)
    assert d.thread.is_alive()  # past the setting's idle timeout
    st = os.stat(code / "mod.py")
    os.utime(code / "mod.py", ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    d.thread.join(3)
    assert execs and execs[0][3:] == ["daemon", "run", "--service"]
    assert d.daemon.restart_reason == "kache's code changed"
    assert not (store_root / "daemon.pid").exists()


def test_credentials_never_reach_the_log(start_daemon, fake_remote: FakeRemote, store_root: Path) -> None:
    secret = "kache/test+SECRET/value0123456789"

    def leaky(store, key):  # noqa: ANN001, ANN202
        raise RuntimeError(f"signature mismatch for {secret}")

    fake_remote.upload_entry = leaky  # type: ignore[method-assign]
    d = start_daemon({"KACHE_S3_SECRET_KEY": secret}, max_tries=1)
    key = add_seeded_entry(store_root, "leak", "k1")
    d.request({"op": "upload", "remote": FAKE_DOC, "key": key, "crate": "leak"})
    wait_for(lambda: d.status()["uploads_failed"] == 1, what="the failure")
    d.stop()
    log = (store_root / "daemon.log").read_text()
    assert "signature mismatch for [redacted]" in log and secret not in log


@pytest.mark.parametrize(("text", "level"), [(None, 20), ("kache=debug", 10), ("warn", 30),
                                              ("info,kache=error", 40), ("kache=nonsense", 20), ("off", 60)])
def test_log_level_from_kache_log(text: str | None, level: int) -> None:
    assert log_level(text) == level


def test_the_daemon_collects_a_store_over_its_limit(tmp_path, monkeypatch) -> None:
    """The daemon checks the store against local_max_size and runs gc in the background."""
    import json
    import time as _time

    from kache import settings as settings_mod
    from kache.daemon import server
    from kache.store.store import Store
    from tests.support.entries import add_entry

    root = tmp_path / "store"
    monkeypatch.setenv("KACHE_CACHE_DIR", str(root))
    monkeypatch.setenv("KACHE_MAX_SIZE", "100")
    store = Store(str(root))
    add_entry(store, "big", blobs=[b"x" * 5000], last_used=_time.time() - 3600)
    store.close()
    d = server.Daemon(settings_mod.load(), DaemonOptions(remote_factory=stand_in(None), handle_signals=False))
    d.upkeep.start_gc_if_over()
    assert d.upkeep.gc_thread is not None
    d.upkeep.gc_thread.join(10)
    report = json.loads((root / "tmp" / "gc-last.json").read_text())
    assert report["evicted"]["size"] == 1
    assert Store(str(root)).entries() == []


def test_hit_requests_are_checked_and_answer_no_for_what_they_cannot_serve(start_daemon, store_root: Path,
                                                                          tmp_path: Path) -> None:
    """``hit``: malformed fields are refused; another store, a probe, a relative compiler,
    an @argfile or a call with nothing cached is a plain "no hit" (the wrapper goes on)."""
    d = start_daemon()
    base = {"op": "hit", "cwd": str(tmp_path), "env": dict(os.environ), "store": str(store_root),
            "started": time.monotonic()}
    compile_argv = one_file_lib(tmp_path, "nothing_cached")
    rustc = compile_argv[0]
    for bad, why in [({"argv": []}, "argv"), ({"argv": [1]}, "argv"), ({"env": {"A": 1}}, "env"),
                     ({"cwd": "relative"}, "cwd")]:
        reply = d.request({**base, "argv": compile_argv, **bad})
        assert reply is not None and reply["ok"] is False and why in reply["error"], reply
    for argv, extra in [(compile_argv, {"store": str(tmp_path / "other")}), ([rustc, "-vV"], {}),
                        (["rustc", *compile_argv[1:]], {}), ([rustc, "@args"], {}), (compile_argv, {})]:
        reply = d.request({**base, "argv": argv, **extra})
        assert reply is not None and reply == {"ok": True, "hit": False, **(
            {"why": "another store"} if "store" in extra else {})}, reply
    assert not (tmp_path / "out").exists()  # nothing was compiled or restored
    assert d.status()["hits_served"] == 0


def test_a_hit_request_without_a_store_is_answered_for_the_callers_settings(start_daemon, store_root: Path,
                                                                           tmp_path: Path) -> None:
    """``store: null`` (the native client): the daemon reads the settings the request's
    environment gives and answers only for its own store with daemon hits on; for its
    own store, it offers its runner (``run``) for the call it declines."""
    d = start_daemon()
    compile_argv = one_file_lib(tmp_path, "nothing_cached")
    base = {"op": "hit", "cwd": str(tmp_path), "store": None, "argv": compile_argv, "client_ms": 0.5}
    env = dict(os.environ)
    for extra_env, cwd, why in [
        ({}, tmp_path, "another store"),  # the default store of this HOME
        ({"KACHE_CACHE_DIR": str(tmp_path / "other")}, tmp_path, "another store"),
        ({"KACHE_CACHE_DIR": store_root.name}, store_root.parent, "invalid settings"),  # a relative path
        ({"KACHE_CACHE_DIR": str(store_root), "KACHE_DAEMON_HITS": "0"}, tmp_path, "daemon hits are off"),
        ({"KACHE_CACHE_DIR": str(store_root), "KACHE_MAX_SIZE": "lots"}, tmp_path, "invalid settings"),
        ({"KACHE_CACHE_DIR": str(store_root)}, tmp_path, None),  # its own: nothing cached for this call
    ]:
        reply = d.request({**base, "cwd": str(cwd), "env": {**env, **extra_env}})
        own = why in (None, "daemon hits are off")
        assert reply == {"ok": True, "hit": False, **({"why": why} if why else {}), **({"run": True} if own else {})}, \
            (extra_env, reply)
    assert d.status()["hits_served"] == 0


def test_with_debug_logging_a_native_clients_call_is_logged_by_the_daemon(start_daemon, store_root: Path,
                                                                          tmp_path: Path) -> None:
    """A native client writes no kache.log; with KACHE_LOG=kache=debug in the environment
    it sent, the daemon writes the wrapper's line for the call (a hit: the e2e test)."""
    d = start_daemon()
    compile_argv = one_file_lib(tmp_path, "nothing_cached")
    base = {"op": "hit", "cwd": str(tmp_path), "store": None, "argv": compile_argv, "client_ms": 0.5}
    env = {**os.environ, "KACHE_CACHE_DIR": str(store_root)}
    log = store_root / "kache.log"
    assert d.request({**base, "env": env}) == {"ok": True, "hit": False, "run": True}
    assert not log.exists()  # not asked for
    assert d.request({**base, "env": {**env, "KACHE_LOG": "warn,kache=debug"}}) == {"ok": True, "hit": False,
                                                                                    "run": True}
    [line] = log.read_text().splitlines()
    assert re.fullmatch(r"\S+ DEBUG kache\.daemon\[\d+\]: nothing_cached: not served by the daemon "
                        r"\(no hit in its store\) in \d+\.\d ms", line), line


# --------------------------------------------------------------------------- kept index connections


def test_hits_reuse_a_kept_connection_until_the_index_file_is_replaced(store_root: Path) -> None:
    """The stores that serve hits stay open between requests, one per request at a time;
    one whose index file was moved aside since (recovery from damage) is closed, not
    used, and so is one a failed request closed."""
    from kache.daemon.hits import HitStores
    from kache.store.store import Store

    def new_index() -> None:
        s = Store(str(store_root))
        s.open()
        s.close()

    new_index()  # an index in place
    stores = HitStores(str(store_root), keep=2)
    first, inode = stores.take()
    first.open()
    stores.give(first, inode)
    again, inode = stores.take()
    assert again is first and again.is_open  # the same open connection
    second, inode2 = stores.take()
    assert second is not first  # taken while the first is in use: its own
    second.open()
    stores.give(again, inode)
    stores.give(second, inode2)

    index = store_root / "index.db"
    for suffix in ("", "-wal", "-shm"):  # moved aside, as the store does with a damaged one
        if Path(f"{index}{suffix}").exists():
            os.replace(f"{index}{suffix}", f"{index}.corrupt-1{suffix}")
    new_index()  # and a new one started
    fresh, inode = stores.take()
    assert fresh is not first and fresh is not second
    assert not first.is_open and not second.is_open  # both were to the old file: closed
    assert fresh.db.execute("PRAGMA user_version").fetchone()[0] > 0
    fresh.close()  # a request that failed closes it
    stores.give(fresh, inode)
    assert stores.take()[0] is not fresh
    stores.close()


def test_an_idle_daemon_keeps_the_stats_fold_up_to_date(start_daemon, store_root: Path) -> None:
    """`kache stats` folds only the events after the daemon's last fold: the daemon folds
    the log while idle, once it grew by fold_bytes, and not for less."""
    from kache.store import events, layout, stats
    from kache.store.store import Store
    from tests.support.entries import event

    root = str(store_root)
    store = Store(root)
    store.open()
    store.close()

    def covered() -> int | None:
        try:
            doc = json.loads(Path(layout.tmp_path(str(store_root), layout.STATS_FOLD)).read_text())
        except (OSError, ValueError):
            return None
        ino = os.stat(events.path(root)).st_ino
        return next((f["offset"] for f in doc["files"] if f["ino"] == ino), None)

    for i in range(100):
        event(root, ("local_hit", "miss")[i % 2], crate=f"c{i}", root="/ws")
    start_daemon(fold_interval=0.05, fold_bytes=2000)
    wait_for(lambda: covered() == os.path.getsize(events.path(root)), what="the daemon's fold")
    for i in range(40):
        event(root, "passthrough", crate=f"late{i}", reason="executable")
    grown = os.path.getsize(events.path(root))
    wait_for(lambda: covered() == grown, what="the fold of what was appended")
    event(root, "local_hit", crate="one more")  # less than fold_bytes: left to kache stats
    time.sleep(0.4)
    assert covered() == grown
    st = stats.compute(root, None)
    assert (st.hits, st.misses, st.passthrough) == (51, 50, 40)
    assert st.to_json() == stats.compute(root, 0.0).to_json() | {"since": None}


def test_a_hit_the_caller_gave_up_on_is_not_served(start_daemon, store_root: Path, tmp_path: Path) -> None:
    """A wrapper that waited its budget for a stopped or slow daemon compiles by itself
    and hangs up; the daemon, reading the request later, must not restore over the
    outputs just compiled (nor count that compile twice)."""
    import socket as socketmod

    from kache.daemon.hits import peer_gone

    mine, theirs = socketmod.socketpair()
    try:
        assert not peer_gone(mine)  # connected and quiet: waiting for the answer
        theirs.sendall(b"more")
        assert not peer_gone(mine)  # data still to read: not gone
        mine.recv(4)
        theirs.close()
        assert peer_gone(mine)
        d = start_daemon()
        msg = {"op": "hit", "cwd": str(tmp_path), "env": dict(os.environ), "store": str(store_root),
               "argv": one_file_lib(tmp_path, "given_up"), "started": time.monotonic()}
        assert d.daemon.hits.serve(msg, mine) == {"ok": True, "hit": False, "why": "the caller gave up"}
        assert d.status()["hits_served"] == 0
    finally:
        mine.close()
