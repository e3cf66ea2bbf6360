"""Use records and `kache remote gc` against moto over HTTP.

Objects are aged in the moto server's memory (it runs in this process): their
LastModified is set back, and everything else (listing, HEAD, copy, delete) goes
through S3's HTTP API as in production.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from kache import settings as settings_mod
from kache.cli import main
from kache.remote.gc import GRACE_SECS, collect
from kache.remote.s3 import USE_RESOLUTION_SECS, Remote, RemoteError
from kache.remote.sync import sync
from kache.store.store import Entry, Store
from tests.support.entries import add_wrapper_entry, hexkey
from tests.support.s3 import ACCESS_KEY, SECRET_KEY, failing_server

DAY = 86400


def make_remote(**kwargs: Any) -> Remote:
    r = Remote.from_settings(settings_mod.load(), **kwargs)
    assert r is not None
    return r


def set_age(bucket: str, name: str, seconds: float) -> None:
    """Make an object's LastModified ``seconds`` ago, in the moto server's memory."""
    from moto.s3.models import s3_backends

    partition, account = s3_backends.bucket_accounts[bucket]
    key = s3_backends[account][partition].buckets[bucket].keys[name]
    key.last_modified = datetime.now(UTC).replace(tzinfo=None) - timedelta(seconds=seconds)


def uploaded(remote: Remote, store: Store, crate: str, *, age: float = 0, mkey: str | None = None) -> Entry:
    """A new local entry, uploaded (archive, then its _mkeys object), both ``age`` old."""
    e = add_wrapper_entry(store, crate, mkey=mkey)
    assert remote.upload_entry(store, e.key)
    if age:
        set_age(remote.bucket, remote.archive_name(crate, e.key), age)
        set_age(remote.bucket, remote.mkeys_name(crate, e.mkey), age)
    return e


def names(remote: Remote) -> set[str]:
    return {name for name, _ in remote.list("")}


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def count_calls(remote: Remote, operation: str) -> list[dict[str, Any]]:
    """The requests of one S3 operation this remote's client sends from now on."""
    seen: list[dict[str, Any]] = []
    remote.client().meta.events.register(f"before-send.s3.{operation}",
                                         lambda request, **_: seen.append(dict(request.headers)))
    return seen


class Recorder:
    """A gc progress that remembers what it was told."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, int]] = []

    def start(self, phase: str, objects: int, nbytes: int) -> None:
        self.events.append(("start", phase, objects))

    def advance(self, phase: str, nbytes: int, objects: int = 1) -> None:
        self.events.append(("advance", phase, objects))

    def finish(self, phase: str) -> None:
        self.events.append(("finish", phase, 0))


# --------------------------------------------------------------------------- use records


def test_record_use_refreshes_an_old_archive_at_most_once_a_day(remote: Remote, store_a: Store,
                                                                store_b: Store) -> None:
    e = uploaded(remote, store_a, "serde")
    name = remote.archive_name("serde", e.key)
    copies = count_calls(remote, "CopyObject")

    assert remote.record_use("serde", e.key) is False  # just uploaded: nothing to write
    set_age(remote.bucket, name, USE_RESOLUTION_SECS - 60)
    assert remote.record_use("serde", e.key) is False  # not a day old yet
    assert copies == []

    set_age(remote.bucket, name, 3 * DAY)
    before = remote.stat(name)
    assert before is not None and before.age >= 3 * DAY - 5
    assert remote.record_use("serde", e.key) is True
    after = remote.stat(name)
    assert after is not None and after.modified > before.modified + 3 * DAY - 10 and after.age < 60
    assert len(copies) == 1
    head = remote.client().head_object(Bucket=remote.bucket, Key=name)
    assert set(head["Metadata"]) == {"kache-used"} and head["Metadata"]["kache-used"].endswith("Z")

    assert remote.record_use("serde", e.key) is False  # used again the same day: no second write
    assert len(copies) == 1
    assert after.etag == before.etag and after.size == before.size  # the same bytes
    fetched = remote.fetch_entry(store_b, "serde", e.key)
    assert fetched is not None and store_b.check(verify_hashes=True) == []


def test_record_use_of_a_missing_archive_is_false(remote: Remote) -> None:
    assert remote.record_use("serde", hexkey("never uploaded")) is False


def test_a_read_only_remote_records_no_use_and_refuses_every_write(remote: Remote, store_a: Store) -> None:
    e = uploaded(remote, store_a, "serde", age=3 * DAY)
    name = remote.archive_name("serde", e.key)
    before = remote.stat(name)
    ro = make_remote(read_only=True)
    copies = count_calls(ro, "CopyObject")
    assert ro.record_use("serde", e.key) is False and copies == []
    where = f"s3://{remote.bucket}/{name}"
    for op, call in [("PUT", lambda: ro.put(name, b"x")), ("DELETE", lambda: ro.delete([name])),
                     ("COPY", lambda: ro._touch(name))]:
        with pytest.raises(RemoteError) as err:
            call()
        assert str(err.value) == (f"remote {op} refused: {where}: the remote is read-only "
                                  "(cache.remote.read_only)")
    after = remote.stat(name)
    assert after is not None and before is not None and after.modified == before.modified


def test_delete_is_batched_sends_content_md5_and_ignores_missing_objects(remote: Remote) -> None:
    made = [f"artifacts/x/{i:04}" for i in range(1005)]
    for n in made[:7]:
        remote.put(n, b"data " + n.encode())
    requests = count_calls(remote, "DeleteObjects")
    assert remote.delete(made) == {}  # 1005 names, 998 of them missing: two requests, no refusal
    assert len(requests) == 2
    assert all("Content-MD5" in h for h in requests)  # old MinIO and Ceph refuse DeleteObjects without it
    assert names(remote) == set()


def test_content_md5_is_the_body_digest(remote: Remote) -> None:
    remote.put("artifacts/x/1", b"1")
    bodies: list[tuple[bytes, str]] = []
    remote.client().meta.events.register(
        "before-send.s3.DeleteObjects",
        lambda request, **_: bodies.append((request.body, request.headers["Content-MD5"])))
    remote.delete(["artifacts/x/1"])
    body, md5 = bodies[0]
    assert isinstance(body, bytes) and b"artifacts/x/1" in body
    assert base64.b64decode(md5) == hashlib.md5(body).digest()


def test_lifecycle_errors_are_remote_errors_without_credentials(s3_env: dict[str, str],
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    with failing_server() as url:
        monkeypatch.setenv("KACHE_S3_ENDPOINT", url)
        r = make_remote(max_attempts=1)
        for call in (lambda: r.record_use("serde", hexkey("k")),
                     lambda: r.delete(["artifacts/a", "artifacts/b"]),
                     lambda: list(r.list_objects("artifacts/")), lambda: r._touch("artifacts/a")):
            with pytest.raises(RemoteError) as err:
                call()
            text = str(err.value)
            assert text.startswith("remote ") and "failed: s3://" in text and "HTTP 500" in text
            assert ACCESS_KEY not in text and SECRET_KEY not in text


def test_a_fetch_of_a_deleted_archive_is_a_miss(remote: Remote, store_a: Store, store_b: Store) -> None:
    e = uploaded(remote, store_a, "serde")
    remote.delete([remote.archive_name("serde", e.key)])  # its _mkeys object still names it
    assert remote.fetch_entry(store_b, "serde", e.key) is None
    assert remote.fetch_by_mkey(store_b, "serde", e.mkey) == []
    assert store_b.entries() == []


# --------------------------------------------------------------------------- gc rules


def test_gc_by_age_deletes_exactly_the_archives_unused_too_long(remote: Remote, store_a: Store,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    old = [uploaded(remote, store_a, c, age=40 * DAY) for c in ("serde", "serde", "tokio")]
    recent = [uploaded(remote, store_a, "serde", age=10 * DAY), uploaded(remote, store_a, "syn")]
    used = uploaded(remote, store_a, "tokio", age=40 * DAY)
    set_age(remote.bucket, remote.archive_name("tokio", used.key), 29 * DAY)  # used since its upload

    code, out, err = run(capsys, "remote", "gc", "--unused-for", "30d")
    assert code == 0 and err == ""
    gone = {remote.archive_name(e.crate_name, e.key) for e in old} | \
           {remote.mkeys_name(e.crate_name, e.mkey) for e in old}
    kept = {remote.archive_name(e.crate_name, e.key) for e in [*recent, used]} | \
           {remote.mkeys_name(e.crate_name, e.mkey) for e in [*recent, used]}
    assert names(remote) == kept
    lines = out.splitlines()
    assert lines[0].startswith("deleted 3 objects (") and lines[0].endswith("): archives unused for 30d")
    assert lines[1].startswith("deleted 3 objects (") and lines[1].endswith("): _mkeys objects naming only "
                                                                             "deleted archives")
    assert lines[2].startswith(f"remote s3://{remote.bucket}/artifacts: ")
    assert " in 12 objects -> " in lines[2]
    assert lines[2].endswith(" in 6 objects") and len(lines) == 3
    assert not gone & names(remote)


def test_gc_with_no_option_means_unused_for_30_days(remote: Remote, store_a: Store,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    uploaded(remote, store_a, "serde", age=31 * DAY)
    keep = uploaded(remote, store_a, "serde", age=29 * DAY)
    code, out, _ = run(capsys, "remote", "gc", "--json")
    doc = json.loads(out)
    assert code == 0 and doc["policy"] == {"unused_for": 30 * DAY, "max_size": None, "grace": GRACE_SECS}
    assert doc["deleted"]["unused"]["objects"] == 1 and doc["deleted"]["mkeys"]["objects"] == 1
    assert names(remote) == {remote.archive_name("serde", keep.key), remote.mkeys_name("serde", keep.mkey)}


def test_gc_by_size_deletes_least_recently_used_first_until_under(remote: Remote, store_a: Store,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    ages = [50, 10, 40, 20, 45]  # days
    entries = [uploaded(remote, store_a, "serde", age=d * DAY) for d in ages]
    sizes = dict(remote.list(""))
    total = sum(sizes.values())
    archive = {d: remote.archive_name("serde", e.key) for d, e in zip(ages, entries, strict=True)}
    limit = total - sizes[archive[50]] - 1  # the oldest alone is not enough: the two oldest go

    code, out, _ = run(capsys, "remote", "gc", "--max-size", str(limit), "--json")
    doc = json.loads(out)
    assert code == 0 and doc["ok"]
    by_size = [o["name"] for o in doc["objects"] if o["rule"] == "size"]
    assert by_size == [archive[50], archive[45]]  # oldest first; --max-size alone: no age rule
    assert doc["deleted"]["unused"] == {"objects": 0, "bytes": 0}
    assert doc["deleted"]["size"] == {"objects": 2, "bytes": sizes[archive[50]] + sizes[archive[45]]}
    assert doc["deleted"]["mkeys"]["objects"] == 2  # their _mkeys objects, announcing nothing left
    assert doc["remaining"]["bytes"] == sum(sizes[n] for n in names(remote)) <= limit
    assert doc["over_max_size"] is False and doc["kept_recent"] == {"objects": 0, "bytes": 0}
    assert names(remote) == {archive[d] for d in (10, 20, 40)} | \
           {remote.mkeys_name("serde", e.mkey) for d, e in zip(ages, entries, strict=True) if d in (10, 20, 40)}

    code, out, _ = run(capsys, "remote", "gc", "--max-size", "1KB")
    assert code == 0
    assert "deleted 3 objects" in out and "over --max-size, least recently used first" in out
    assert "-> 0 B in 0 objects (max 1000 B)" in out


def test_the_grace_period_keeps_new_objects_even_over_the_size(remote: Remote, store_a: Store,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    old = uploaded(remote, store_a, "serde", age=2 * 3600)
    new = [uploaded(remote, store_a, "serde", age=60), uploaded(remote, store_a, "tokio")]
    code, out, err = run(capsys, "remote", "gc", "--unused-for", "1s", "--max-size", "0", "--json")
    doc = json.loads(out)
    assert code == 0
    assert [o["name"] for o in doc["objects"]] == [remote.archive_name("serde", old.key),
                                                   remote.mkeys_name("serde", old.mkey)]
    assert doc["objects"][0]["rule"] == "unused"  # 2 h old: past the grace and the 1 s
    assert doc["kept_recent"]["objects"] == 2 and doc["over_max_size"] is True
    assert names(remote) == {remote.archive_name(e.crate_name, e.key) for e in new} | \
           {remote.mkeys_name(e.crate_name, e.mkey) for e in new}

    code, out, err = run(capsys, "remote", "gc", "--max-size", "0")
    assert code == 0 and "deleted 0 objects" in out
    assert err.startswith("kache: warning: the remote is still ") and "over --max-size: 2 archives" in err
    assert "written in the last 1h were kept (an upload may be running); run gc again later" in err


def test_mkeys_objects_go_only_when_all_their_archives_are_gone_and_unchanged(
        remote: Remote, store_a: Store, bucket: str) -> None:
    shared = hexkey("shared mkey")
    dead_old = uploaded(remote, store_a, "serde", age=40 * DAY, mkey=shared)
    live = uploaded(remote, store_a, "serde", age=2 * 3600, mkey=shared)  # one live key: kept
    set_age(bucket, remote.mkeys_name("serde", shared), 2 * 3600)
    lone = uploaded(remote, store_a, "tokio", age=40 * DAY)  # its only key dies: goes
    fresh = uploaded(remote, store_a, "syn", age=40 * DAY)
    set_age(bucket, remote.mkeys_name("syn", fresh.mkey), 60)  # written a minute ago: kept by the grace
    racing = uploaded(remote, store_a, "rand", age=40 * DAY)  # an upload announces a key meanwhile: kept
    junk = remote.mkeys_name("log", hexkey("junk"))
    remote.put(junk, b"not json")
    set_age(bucket, junk, 2 * 3600)
    stray = "artifacts/README.txt"  # not kache's: left alone
    remote.put(stray, b"hello")
    set_age(bucket, stray, 400 * DAY)

    class AnnounceDuringGc(Recorder):
        def start(self, phase: str, objects: int, nbytes: int) -> None:
            super().start(phase, objects, nbytes)
            if phase == "mkeys":  # after the listing and the reads, before the checks and the deletes
                uploaded(remote, store_a, "rand", mkey=racing.mkey)

    progress = AnnounceDuringGc()
    report = collect(make_remote(), unused_for=30 * DAY, progress=progress)
    assert report.ok, report.failures
    deleted = {i.obj.name for i in report.deleted}
    assert {remote.archive_name(e.crate_name, e.key) for e in (dead_old, lone, fresh, racing)} <= deleted
    by_mkeys = {i.obj.name for i in report.deleted if i.rule == "mkeys"}
    assert by_mkeys == {remote.mkeys_name("tokio", lone.mkey), junk}
    assert report.mkeys_changed == 1
    assert (report.ignored_objects, report.ignored_bytes) == (1, 5)
    left = names(remote)
    assert {remote.mkeys_name("serde", shared), remote.mkeys_name("syn", fresh.mkey),
            remote.mkeys_name("rand", racing.mkey), stray, remote.archive_name("serde", live.key)} <= left
    assert remote.mkey_candidates("serde", shared) == [live.key, dead_old.key]
    phases = [(kind, phase) for kind, phase, _ in progress.events if kind != "advance"]
    assert phases == [("start", "archives"), ("finish", "archives"), ("start", "check"), ("finish", "check"),
                      ("start", "mkeys"), ("finish", "mkeys")]


def test_a_dry_run_deletes_nothing_and_lists_what_would_go(remote: Remote, store_a: Store,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    old = uploaded(remote, store_a, "serde", age=40 * DAY)
    uploaded(remote, store_a, "tokio", age=DAY)
    before = names(remote)
    code, out, err = run(capsys, "remote", "gc", "--unused-for", "30d", "--dry-run")
    assert code == 0 and err == "" and names(remote) == before
    lines = out.splitlines()
    assert lines[0].startswith(f"  would delete serde {old.key[:16]}  ")
    assert lines[0].endswith("  (unused; written 5w ago)")
    assert lines[1].startswith(f"  would delete serde _mkeys/{old.mkey[:16]}  ") and "(mkeys;" in lines[1]
    assert lines[2].startswith("would delete 1 object (") and lines[3].startswith("would delete 1 object (")
    code, out, _ = run(capsys, "remote", "gc", "--unused-for", "30d", "--dry-run", "--json")
    doc = json.loads(out)
    assert doc["dry_run"] is True and doc["deleted"]["total"]["objects"] == 2 and names(remote) == before


def test_the_json_report_shape(remote: Remote, store_a: Store, capsys: pytest.CaptureFixture[str]) -> None:
    e = uploaded(remote, store_a, "serde", age=40 * DAY)
    code, out, _ = run(capsys, "remote", "gc", "--unused-for", "30d", "--max-size", "500GB", "--json")
    doc = json.loads(out)
    assert code == 0
    assert list(doc) == ["dry_run", "remote", "policy", "before", "deleted", "remaining", "over_max_size",
                         "kept_recent", "mkeys_changed", "ignored", "objects", "failures", "ok"]
    assert doc["remote"] == f"s3://{remote.bucket}/artifacts"
    assert doc["policy"] == {"unused_for": 30 * DAY, "max_size": 500 * 1000**3, "grace": GRACE_SECS}
    assert list(doc["deleted"]) == ["unused", "size", "mkeys", "total"]
    assert doc["before"]["objects"] == 2 and doc["remaining"] == {"objects": 0, "bytes": 0}
    first = doc["objects"][0]
    assert set(first) == {"name", "kind", "crate", "key", "size", "last_modified", "age", "rule"}
    assert first["kind"] == "archive" and first["key"] == e.key and first["age"] >= 40 * DAY - 5
    assert first["last_modified"].endswith("Z") and doc["failures"] == [] and doc["ok"] is True


def test_a_read_only_remote_refuses_gc(remote: Remote, store_a: Store, monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    uploaded(remote, store_a, "serde", age=40 * DAY)
    before = names(remote)
    monkeypatch.setenv("KACHE_REMOTE_READ_ONLY", "1")
    code, out, err = run(capsys, "remote", "gc", "--unused-for", "30d")
    assert code == 1 and out == "" and names(remote) == before
    assert err == (f"kache: error: remote gc refused: s3://{remote.bucket}/artifacts: the remote is "
                   "read-only (cache.remote.read_only, KACHE_REMOTE_READ_ONLY); run gc where the remote is "
                   "writable (a scheduled CI job with write access), or pass --dry-run to see what it would "
                   "delete\n")
    code, out, _ = run(capsys, "remote", "gc", "--unused-for", "30d", "--dry-run")
    assert code == 0 and "would delete 1 object" in out and names(remote) == before


def test_without_a_remote_gc_says_what_sync_says(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "remote", "gc")
    assert code == 1 and err.startswith("kache: error: no remote configured: set cache.remote.bucket")
    assert run(capsys, "sync", "--push")[2] == err


@pytest.mark.parametrize(("args", "message"), [
    (["--max-size", "lots"], "Invalid value for --max-size: expected a size such as 50GB"),
    (["--unused-for", "soon"], "Invalid value for --unused-for: expected a duration such as 7d"),
])
def test_bad_option_values_are_named(args: list[str], message: str,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "remote", "gc", *args)
    assert code == 2 and message in err


def test_remote_is_a_lazy_command() -> None:
    from kache.command_names import LAZY_COMMANDS

    assert LAZY_COMMANDS["remote"] == "remote"


# --------------------------------------------------------------------------- builds meanwhile


@pytest.mark.concurrency
def test_gc_while_another_machine_uploads_and_another_pulls(s3_env: dict[str, str], bucket: str,
                                                            tmp_path: Path) -> None:
    a, b = Store(str(tmp_path / "a")), Store(str(tmp_path / "b"))
    setup = make_remote()
    crates = ["serde", "tokio", "syn", "rand"]
    old = [uploaded(setup, a, crates[i % 4], age=40 * DAY) for i in range(30)]
    kept = [uploaded(setup, a, crates[i % 4], age=2 * DAY) for i in range(8)]
    fresh = [add_wrapper_entry(a, crates[i % 4]) for i in range(16)]  # uploaded while gc runs
    a.close()
    start = threading.Barrier(3)
    gc_done, uploads_done = threading.Event(), threading.Event()
    errors: list[BaseException] = []
    pulls: list[Any] = []

    def guarded(work: Any) -> Any:
        def run_it() -> None:
            try:
                start.wait(timeout=30)
                work()
            except BaseException as e:  # noqa: BLE001 - reported by the test
                errors.append(e)
        return run_it

    def gc() -> None:
        try:
            report = collect(make_remote(), unused_for=30 * DAY, batch=1)  # slow: pulls land between deletes
            assert report.ok, report.failures
        finally:
            gc_done.set()

    def upload() -> None:
        store, r = Store(str(tmp_path / "a")), make_remote()
        try:
            for e in fresh:
                assert r.upload_entry(store, e.key)
        finally:
            store.close()
            uploads_done.set()

    def pull() -> None:
        r = make_remote()
        while True:
            done = gc_done.is_set() and uploads_done.is_set()
            pulls.append(sync(b, r, pull=True, push=False, all_crates=True, concurrency=4))
            for e in old[:6]:  # a build's fetch by cheap key, racing the deletes: imports or misses
                r.fetch_by_mkey(b, e.crate_name, e.mkey)
            if done:
                break

    threads = [threading.Thread(target=guarded(w)) for w in (gc, upload, pull)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads) and errors == []

    assert all(p.ok for p in pulls) and all(s.reason == "gone" for p in pulls for s in p.skipped)
    a = Store(str(tmp_path / "a"))
    try:
        assert b.check(verify_hashes=True) == []
        for e in b.entries():  # everything pulled is intact and is what was uploaded
            mine = a.get(e.key)
            assert mine is not None and mine.meta["files"] == e.meta["files"]
        left = names(setup)
        assert not {setup.archive_name(e.crate_name, e.key) for e in old} & left
        for e in [*kept, *fresh]:  # no upload, running or done, lost its archive or its announcement
            assert setup.archive_name(e.crate_name, e.key) in left
            assert e.key in setup.mkey_candidates(e.crate_name, e.mkey)
        assert {e.key for e in [*kept, *fresh]} <= {e.key for e in b.entries()}  # the last pull got them
    finally:
        a.close()
        b.close()

