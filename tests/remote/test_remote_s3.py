"""The S3 remote against moto: names, transfers, _mkeys manifests, errors, credentials."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kache import settings as settings_mod
from kache.remote.archive import ArchiveError, pack_entry
from kache.remote.s3 import Remote, RemoteError
from kache.remote.spec import normalize_prefix
from kache.store.store import Store
from tests.support.entries import add_wrapper_entry, hexkey
from tests.support.s3 import ACCESS_KEY, SECRET_KEY, failing_server


def make_remote(**kwargs: object) -> Remote:
    r = Remote.from_settings(settings_mod.load(), **kwargs)
    assert r is not None
    return r


# --------------------------------------------------------------------------- settings


def test_no_bucket_means_no_remote() -> None:
    assert Remote.from_settings(settings_mod.load()) is None


def test_import_is_cheap() -> None:
    code = "import sys, kache.remote.s3, kache.remote.archive, kache.remote.sync; " \
           "print(sorted(m for m in ('boto3', 'botocore', 'zstandard') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(("prefix", "name"), [
    ("artifacts", "artifacts/serde/{key}.tar.zst"),
    ("/team//cache/", "team/cache/serde/{key}.tar.zst"),
    ("", "serde/{key}.tar.zst"),
    ("/", "serde/{key}.tar.zst"),
])
def test_object_names(prefix: str, name: str) -> None:
    key = hexkey("k")
    r = Remote("b", prefix=prefix)
    assert r.archive_name("serde", key) == name.format(key=key)
    assert r.mkeys_name("serde", key) == name.format(key=key).replace(f"{key}.tar.zst", f"_mkeys/{key}.json")
    assert normalize_prefix(prefix) == r.prefix


@pytest.mark.parametrize(("crate", "key"), [("../x", hexkey("k")), ("a/b", hexkey("k")), ("", hexkey("k")),
                                            ("serde", "ABC"), ("serde", hexkey("k").upper())])
def test_bad_names_are_refused(crate: str, key: str) -> None:
    with pytest.raises(RemoteError, match="remote object name failed"):
        Remote("b").archive_name(crate, key)


def test_settings_and_credential_order(s3_env: dict[str, str], monkeypatch: pytest.MonkeyPatch,
                                       clean_env: Path) -> None:
    r = make_remote()
    assert r.bucket == s3_env["KACHE_S3_BUCKET"] and r.endpoint == s3_env["KACHE_S3_ENDPOINT"]
    assert r.prefix == "artifacts" and r.credential_source == "env" and r.warnings == []
    client = r.client()
    assert client.meta.config.s3["addressing_style"] == "path"
    assert client.meta.config.max_pool_connections >= r.concurrency
    assert SECRET_KEY not in repr(r)

    # A profile is used when the explicit pair is not (complete).
    aws = clean_env / ".aws"
    aws.mkdir()
    (aws / "credentials").write_text(f"[ceph]\naws_access_key_id = {ACCESS_KEY}\n"
                                     f"aws_secret_access_key = {SECRET_KEY}\n")
    monkeypatch.delenv("KACHE_S3_SECRET_KEY")
    monkeypatch.setenv("KACHE_S3_PROFILE", "ceph")
    r = make_remote()
    assert r.credential_source == "profile ceph"
    assert r.warnings == ["remote credentials: KACHE_S3_ACCESS_KEY is set but KACHE_S3_SECRET_KEY is not: "
                          "ignoring it; using the profile or the AWS default credentials instead"]
    r.put("artifacts/probe", b"x")  # the profile's credentials work
    assert r.get("artifacts/probe") == b"x"

    monkeypatch.setenv("KACHE_S3_PROFILE", "nope")
    with pytest.raises(RemoteError, match="remote setup failed: profile 'nope': not found"):
        make_remote().client()

    # Neither: AWS's variables, taken explicitly (so a daemon gets a build's own keys).
    monkeypatch.delenv("KACHE_S3_PROFILE")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    r = make_remote()
    assert r.credential_source == "env"
    assert r.get("artifacts/probe") == b"x"
    # None of these: the AWS default chain (the daemon's own environment, ~/.aws, roles).
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    assert make_remote().credential_source == "default chain"


# --------------------------------------------------------------------------- objects


def test_put_get_exists_list(remote: Remote) -> None:
    assert remote.get("artifacts/missing") is None  # a 404 is a miss, not an error
    assert remote.exists("artifacts/missing") is False
    for i in range(5):
        remote.put(f"artifacts/c/{i}", bytes([i]) * (i + 1))
    remote.put("elsewhere/x", b"x")
    assert remote.get("artifacts/c/3") == b"\x03" * 4
    assert remote.exists("artifacts/c/3")
    listed = list(remote.list("artifacts/", page_size=2))  # three pages
    assert listed == [(f"artifacts/c/{i}", i + 1) for i in range(5)]
    with pytest.raises(RemoteError, match="more than the 3-byte limit"):
        remote.get("artifacts/c/4", max_bytes=3)


def test_listing_skips_and_reports_bad_names(remote: Remote) -> None:
    key = hexkey("k")
    good = f"artifacts/serde/{key}.tar.zst"
    for name in (good, f"artifacts/serde/_mkeys/{key}.json", f"artifacts/bad..crate/{key}.tar.zst",
                 "artifacts/serde/notakey.tar.zst", "artifacts/serde/README.txt", f"artifacts/{key}.tar.zst"):
        remote.put(name, b"x")
    archives, bad = remote.list_archives()
    assert [(a.crate, a.key, a.name, a.size) for a in archives] == [("serde", key, good, 1)]
    assert sorted(b.name for b in bad) == sorted([
        f"artifacts/bad..crate/{key}.tar.zst", "artifacts/serde/notakey.tar.zst",
        "artifacts/serde/README.txt", f"artifacts/{key}.tar.zst"])
    assert any("not a valid crate name" in b.why for b in bad)
    assert any("not a 64-hex-digit key" in b.why for b in bad)
    assert [a.key for a in remote.list_archives("serde")[0]] == [key]
    assert remote.list_crates() == ["serde"]  # bad..crate is left out


# --------------------------------------------------------------------------- entries


def test_upload_entry_puts_the_archive_then_announces_it(remote: Remote, store_a: Store,
                                                         store_b: Store) -> None:
    e = add_wrapper_entry(store_a, "proc_macro2")
    assert remote.upload_entry(store_a, e.key) is True
    name = f"artifacts/proc_macro2/{e.key}.tar.zst"
    assert remote.exists(name)
    mkeys = json.loads(remote.get(f"artifacts/proc_macro2/_mkeys/{e.mkey}.json") or b"")
    assert mkeys == [{"key": e.key, "created": e.created}]
    assert remote.upload_entry(store_a, e.key) is False  # already there: HEAD, nothing sent

    got = remote.fetch_entry(store_b, "proc_macro2", e.key)
    assert got is not None and got.meta["origin"] == "remote"
    assert store_b.check(verify_hashes=True) == []
    assert remote.fetch_entry(store_b, "proc_macro2", hexkey("absent")) is None


def test_an_upload_cut_short_before_its_announcement_is_completed_by_a_retry(
        remote: Remote, store_a: Store) -> None:
    e = add_wrapper_entry(store_a, "serde")
    remote.put(f"artifacts/serde/{e.key}.tar.zst", pack_entry(store_a, e.key))  # then "crashed"
    assert remote.mkey_candidates("serde", e.mkey) == []
    assert remote.upload_entry(store_a, e.key) is False  # nothing re-sent ...
    assert remote.mkey_candidates("serde", e.mkey) == [e.key]  # ... but now announced


def test_mkeys_keep_the_eight_newest(remote: Remote, store_a: Store) -> None:
    mkey = hexkey("shared cheap key")
    now = time.time()
    entries = [add_wrapper_entry(store_a, "serde", seed=f"s{i}", mkey=mkey, created=now - 100 + i) for i in range(10)]
    order = [3, 0, 9, 5, 1, 8, 2, 7, 4, 6]
    for i in order:
        remote.upload_entry(store_a, entries[i].key)
    assert remote.mkey_candidates("serde", mkey) == [e.key for e in reversed(entries)][:8]


def test_fetch_by_mkey(remote: Remote, store_a: Store, store_b: Store) -> None:
    mkey = hexkey("cheap")
    now = time.time()
    es = [add_wrapper_entry(store_a, "kc_core", seed=f"c{i}", mkey=mkey, created=now - 10 + i) for i in range(5)]
    for e in es:
        remote.upload_entry(store_a, e.key)
    newest_first = [e.key for e in reversed(es)]
    assert remote.fetch_by_mkey(store_b, "kc_core", hexkey("unknown")) == []
    assert remote.fetch_by_mkey(store_b, "kc_core", mkey, deadline=time.monotonic() - 1) == []
    assert remote.fetch_by_mkey(store_b, "kc_core", mkey, limit=2) == newest_first[:2]
    # Keys already local are not fetched again; the next newest are.
    assert remote.fetch_by_mkey(store_b, "kc_core", mkey, limit=2, origin="prefetch") == newest_first[2:4]
    assert store_b.get(newest_first[2]).meta["origin"] == "prefetch"  # type: ignore[union-attr]
    assert store_b.manifest(mkey)  # the direct-mode lines came along


def test_fetch_by_mkey_skips_a_bad_archive(remote: Remote, store_a: Store, store_b: Store) -> None:
    mkey = hexkey("cheap")
    now = time.time()
    old, new = (add_wrapper_entry(store_a, "kc_core", seed=f"c{i}", mkey=mkey, created=now - 10 + i)
                for i in range(2))
    remote.upload_entry(store_a, old.key)
    remote.upload_entry(store_a, new.key)
    remote.put(f"artifacts/kc_core/{new.key}.tar.zst", b"corrupted")
    assert remote.fetch_by_mkey(store_b, "kc_core", mkey) == [old.key]
    assert store_b.get(new.key) is None

    store_b.remove([old.key])
    remote.put(f"artifacts/kc_core/{old.key}.tar.zst", b"corrupted too")
    with pytest.raises(ArchiveError, match=f"^bad archive: artifacts/kc_core/{new.key}.tar.zst: not a valid"):
        remote.fetch_by_mkey(store_b, "kc_core", mkey)
    assert store_b.entries() == []


def test_an_archive_under_another_key_is_refused(remote: Remote, store_a: Store, store_b: Store) -> None:
    a, b = add_wrapper_entry(store_a, "serde"), add_wrapper_entry(store_a, "serde")
    remote.upload_entry(store_a, a.key)
    data = remote.get(f"artifacts/serde/{a.key}.tar.zst")
    assert data is not None
    remote.put(f"artifacts/serde/{b.key}.tar.zst", data)  # a replay under another name
    with pytest.raises(ArchiveError, match=f"holds key {a.key}, expected {b.key}"):
        remote.fetch_entry(store_b, "serde", b.key)


# --------------------------------------------------------------------------- errors


def _assert_no_secret(text: str) -> None:
    assert ACCESS_KEY not in text and SECRET_KEY not in text


def test_a_server_error_is_an_error_not_a_miss(s3_env: dict[str, str], monkeypatch: pytest.MonkeyPatch,
                                              store_a: Store) -> None:
    e = add_wrapper_entry(store_a, "serde")
    with failing_server() as url:
        monkeypatch.setenv("KACHE_S3_ENDPOINT", url)
        r = make_remote(max_attempts=1)
        calls = [lambda: r.get("artifacts/x"), lambda: r.put("artifacts/x", b"1"),
                 lambda: r.exists("artifacts/x"), lambda: list(r.list("artifacts/")),
                 lambda: r.upload_entry(store_a, e.key),
                 lambda: r.fetch_by_mkey(store_a, "serde", e.mkey)]
        for call in calls:
            with pytest.raises(RemoteError) as err:
                call()
            text = str(err.value)
            assert text.startswith("remote ") and "failed: s3://" in text and "HTTP 500" in text
            assert "[redacted]" in text or "HEAD" in text  # the echoed Authorization header was scrubbed
            _assert_no_secret(text)
            assert isinstance(err.value.__cause__, Exception)  # chained


def test_an_unreachable_endpoint_fails_fast(s3_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again below: nothing listens there
    monkeypatch.setenv("KACHE_S3_ENDPOINT", f"http://127.0.0.1:{port}")
    r = make_remote(connect_timeout=0.5, read_timeout=0.5, max_attempts=1)
    started = time.monotonic()
    with pytest.raises(RemoteError, match="remote GET failed: s3://.*: cannot reach the endpoint") as err:
        r.get("artifacts/x")
    assert time.monotonic() - started < 5
    _assert_no_secret(str(err.value))


def test_a_missing_bucket_is_named(s3_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KACHE_S3_BUCKET", "kache-no-such-bucket")
    r = make_remote(max_attempts=1)
    with pytest.raises(RemoteError, match="NoSuchBucket: the bucket does not exist"):
        r.get("artifacts/x")
    with pytest.raises(RemoteError, match="NoSuchBucket"):
        list(r.list("artifacts/"))
