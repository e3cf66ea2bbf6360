"""Archives: a packed entry imports identically elsewhere; a bad one is refused whole."""

from __future__ import annotations

import json
import os
import tarfile
from pathlib import Path

import pytest
import zstandard

from kache.remote.archive import ArchiveError, import_archive, pack_entry
from kache.store import blobs
from kache.store.store import Store
from tests.support.archives import entry_doc, good_members, make_archive, member
from tests.support.entries import add_wrapper_entry, blake, hexkey
from tests.support.hostile import refused


def assert_nothing_recorded(store: Store) -> None:
    assert store.entries() == []
    assert store.db.execute("SELECT COUNT(*) FROM manifests").fetchone()[0] == 0
    assert os.listdir(os.path.join(store.root, "tmp")) == []


# --------------------------------------------------------------------------- round trip


def test_pack_then_import_gives_the_same_entry_and_files(store_a: Store, store_b: Store) -> None:
    e = add_wrapper_entry(store_a, "proc_macro2")
    data = pack_entry(store_a, e.key, 3)
    # The format as documented: zstd, kache-entry.json first, then the blobs by hash.
    raw = zstandard.ZstdDecompressor().decompressobj().decompress(data)
    import io

    with tarfile.open(fileobj=io.BytesIO(raw)) as tf:
        names = tf.getnames()
        doc = json.loads(tf.extractfile("kache-entry.json").read())  # type: ignore[union-attr]
    assert names == ["kache-entry.json", *sorted(f"blobs/{f['hash']}" for f in e.meta["files"])]
    assert doc["format"] == 1 and doc["key"] == e.key and doc["mkey"] == e.mkey
    assert doc["inputs"] == store_a.manifest_line(e.key)[1]  # type: ignore[index]

    got = import_archive(store_b, data, expected_key=e.key, expected_crate="proc_macro2", origin="prefetch")
    stored = store_b.get(e.key)
    assert stored == got
    for field in ("key", "crate_name", "crate_types", "target", "profile", "size", "compile_ms",
                  "key_version", "mkey"):
        assert getattr(got, field) == getattr(e, field), field
    assert {k: v for k, v in got.meta.items() if k != "origin"} == e.meta
    assert got.meta["origin"] == "prefetch" and got.hits == 0 and got.created >= e.created
    # The direct-mode manifest line came along: a lookup by cheap key finds it.
    assert store_b.manifest(e.mkey) == store_a.manifest(e.mkey)
    # Every file is restorable: each blob exists and hashes to its name.
    for f in got.meta["files"]:
        path = store_b.blob_path(f["hash"])
        assert blobs.hash_file(path) == (f["hash"], f["size"])
        assert os.stat(path).st_mode & 0o777 == 0o644
    assert store_b.check(verify_hashes=True) == []
    assert os.listdir(os.path.join(store_b.root, "tmp")) == []


def test_import_of_a_key_already_stored_changes_nothing(store_a: Store) -> None:
    e = add_wrapper_entry(store_a, "serde")
    data = pack_entry(store_a, e.key)
    assert import_archive(store_a, data) == store_a.get(e.key)
    assert store_a.get(e.key).hits == 4  # type: ignore[union-attr]


def test_import_shares_blobs_the_store_already_has(store_a: Store, store_b: Store) -> None:
    e = add_wrapper_entry(store_a, "serde", blobs=[b"shared rlib", b"serde rmeta", b"serde.d: x"])
    add_wrapper_entry(store_b, "other", blobs=[b"shared rlib", b"other rmeta", b"other.d: y"])
    import_archive(store_b, pack_entry(store_a, e.key))
    assert store_b.check(verify_hashes=True) == []
    assert {x.crate_name for x in store_b.entries()} == {"serde", "other"}


def test_pack_refuses_an_entry_without_a_manifest_line(store_a: Store) -> None:
    e = add_wrapper_entry(store_a, "serde")
    store_a.db.execute("DELETE FROM manifests")
    with pytest.raises(ArchiveError, match=r"^packing entry failed: serde [0-9a-f]{16}: no direct-mode"):
        pack_entry(store_a, e.key)


def test_pack_refuses_a_damaged_blob(store_a: Store) -> None:
    e = add_wrapper_entry(store_a, "serde")
    path = store_a.blob_path(e.meta["files"][1]["hash"])
    os.chmod(path, 0o644)
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(bytes([data[0] ^ 1]) + data[1:])
    with pytest.raises(ArchiveError, match="does not match its hash"):
        pack_entry(store_a, e.key)


def test_pack_of_an_unknown_key(store_a: Store) -> None:
    with pytest.raises(ArchiveError, match="not in the local store"):
        pack_entry(store_a, hexkey("nope"))


# --------------------------------------------------------------------------- refused archives


def _blob_member_cases() -> dict[str, tuple[bytes, str]]:
    blob = b"hello blob"
    digest = blake(blob)
    doc = entry_doc(files=[{"name": "libfoo.rlib", "hash": digest, "size": len(blob), "kind": "link"}])
    head = member("kache-entry.json", json.dumps(doc).encode())
    ok_blob = member(f"blobs/{digest}", blob)
    other = b"other blob content"
    cases = {
        "dotdot": ([head, member("../x", b"evil")], "member '../x': unsafe name"),
        "dotdot-inside": ([head, member("blobs/../../x", b"evil")], "unsafe name"),
        "absolute": ([head, member("/etc/x", b"evil")], "member '/etc/x': unsafe name"),
        "symlink": ([head, member(f"blobs/{digest}", type=tarfile.SYMTYPE, linkname="/etc/passwd")],
                    "is a symbolic link; only regular files are allowed"),
        "hardlink": ([head, member(f"blobs/{digest}", type=tarfile.LNKTYPE, linkname="kache-entry.json")],
                     "is a hard link"),
        "chardev": ([head, member(f"blobs/{digest}", type=tarfile.CHRTYPE)], "is a character device"),
        "blockdev": ([head, member(f"blobs/{digest}", type=tarfile.BLKTYPE)], "is a block device"),
        "fifo": ([head, member(f"blobs/{digest}", type=tarfile.FIFOTYPE)], "is a FIFO"),
        "dir": ([head, member("blobs", type=tarfile.DIRTYPE)], "is a directory"),
        "unexpected": ([head, member("evil.sh", b"#!/bin/sh")], "member 'evil.sh': unexpected name"),
        "upper-hex": ([head, member(f"blobs/{digest.upper()}", blob)], "unexpected name"),
        "duplicate": ([head, ok_blob, ok_blob], "appears twice"),
        "manifest-second": ([ok_blob, head], "kache-entry.json is not the first member"),
        "content-differs": ([head, member(f"blobs/{digest}", b"hellO blob")],
                            "content does not match its name"),
        "unused-blob": ([head, ok_blob, member(f"blobs/{blake(other)}", other)], "no file of the entry uses"),
        "size-differs": ([head, member(f"blobs/{digest}", blob + b"!")], "but the entry's file has 10"),
        "missing-blob": ([head], "file 'libfoo.rlib': its blob"),
        "empty": ([], "no kache-entry.json"),
    }
    return {name: (make_archive(members), msg) for name, (members, msg) in cases.items()}


_CASES = _blob_member_cases()


@pytest.mark.hostile
@pytest.mark.parametrize("case", sorted(_CASES))
def test_malicious_archives_are_refused(case: str, store_b: Store) -> None:
    data, message = _CASES[case]
    with refused(ArchiveError) as err:
        import_archive(store_b, data, name="artifacts/foo/x.tar.zst")
    assert str(err.value).startswith("bad archive: artifacts/foo/x.tar.zst: ")
    assert message in str(err.value)
    assert_nothing_recorded(store_b)


def _pax_archive() -> bytes:
    members, _ = good_members()
    members[0][0].pax_headers = {"comment": "extended headers can carry any name or size"}
    return make_archive(members, fmt=tarfile.PAX_FORMAT)


def _doc_case(**overrides: object) -> bytes:
    members, _ = good_members(**overrides)  # type: ignore[arg-type]
    return make_archive(members)


def _with_file(**file: object) -> bytes:
    blob = b"hello blob"
    f = {"name": "libfoo.rlib", "hash": blake(blob), "size": len(blob), "kind": "link", **file}
    doc = entry_doc(files=[f])
    return make_archive([member("kache-entry.json", json.dumps(doc).encode()),
                         member(f"blobs/{blake(blob)}", blob)])


@pytest.mark.parametrize(("data", "message"), [
    (_doc_case(key="xyz"), "key 'xyz' is not 64 lowercase hex digits"),
    (_doc_case(key=hexkey("k").upper()), "is not 64 lowercase hex digits"),
    (_doc_case(crate="../../evil"), "crate name '../../evil' is not valid"),
    (_doc_case(crate="a..b"), "crate name 'a..b' is not valid"),
    (_doc_case(crate="x" * 129), "is not valid"),
    (_doc_case(crate="a/b"), "is not valid"),
    (_doc_case(format=2), "format 2 is not supported"),
    (_doc_case(mkey="short"), "mkey 'short'"),
    (_doc_case(compile_ms=-1), "compile_ms"),
    (_doc_case(inputs={"files": [], "env": []}), "would match any build"),
    (_doc_case(inputs={"files": [["p", "nothex"]], "env": []}), "inputs.files[0]"),
    (_with_file(name="../../.bashrc"), "name '../../.bashrc' is not a single safe path component"),
    (_with_file(name="a/b"), "not a single safe path component"),
    (_with_file(name=".."), "not a single safe path component"),
    (_with_file(name="x\ny"), "not a single safe path component"),
    (_with_file(kind="setuid"), "kind 'setuid' is not one of"),
    (_with_file(size=-3), "size is not a non-negative integer"),
    (make_archive([member("kache-entry.json", b"{not json")]), "kache-entry.json: not valid JSON"),
    (make_archive([member("kache-entry.json", b"[1, 2]")]), "not a JSON object"),
    (b"definitely not zstd", "not a valid zstd stream"),
    (zstandard.ZstdCompressor().compress(b"x" * 100), "truncated"),
    (make_archive(good_members()[0], trailing=b"garbage"), "data after the end of the tar stream"),
    (_pax_archive(), "is a pax extended header"),
])
@pytest.mark.hostile
def test_bad_documents_are_refused(data: bytes, message: str, store_b: Store) -> None:
    with refused(ArchiveError) as err:
        import_archive(store_b, data)
    assert message in str(err.value)
    assert_nothing_recorded(store_b)


@pytest.mark.hostile
def test_a_wrong_expected_key_or_crate_is_refused(store_b: Store) -> None:
    members, doc = good_members(crate="serde")
    data = make_archive(members)
    other = hexkey("another key")
    with refused(ArchiveError, match=f"holds key {doc['key']}, expected {other}"):
        import_archive(store_b, data, expected_key=other)
    with refused(ArchiveError, match="holds crate 'serde', expected 'tokio'"):
        import_archive(store_b, data, expected_crate="tokio")
    with refused(ArchiveError, match="expected key 'ABC' is not 64 lowercase hex"):
        import_archive(store_b, data, expected_key="ABC")
    assert_nothing_recorded(store_b)
    assert import_archive(store_b, data, expected_key=doc["key"], expected_crate="serde").key == doc["key"]


@pytest.mark.hostile
def test_an_oversized_member_is_refused(store_b: Store) -> None:
    members, _ = good_members(b"y" * 2000)
    with refused(ArchiveError, match=r"2000 bytes, more than the 1000-byte limit per member"):
        import_archive(store_b, make_archive(members), max_member_bytes=1000)
    assert_nothing_recorded(store_b)


@pytest.mark.hostile
def test_an_oversized_manifest_is_refused(store_b: Store) -> None:
    members, _ = good_members(stderr_padding="x" * (1 << 20))
    with refused(ArchiveError, match="kache-entry.json: .* more than the 1048576-byte limit"):
        import_archive(store_b, make_archive(members))


@pytest.mark.hostile
def test_too_many_members_are_refused(store_b: Store) -> None:
    members, _ = good_members()
    with refused(ArchiveError, match="more than 1 members"):
        import_archive(store_b, make_archive(members), max_members=1)


def _zeros_zst(n: int) -> bytes:
    c = zstandard.ZstdCompressor(level=1).compressobj()
    chunk = bytes(1 << 20)
    out = [c.compress(chunk) for _ in range(n >> 20)]
    out.append(c.flush())
    return b"".join(out)


@pytest.mark.hostile
def test_a_decompression_bomb_stops_at_the_cap(store_b: Store) -> None:
    # 100 MiB of zeros compress to a few KiB; read as a tar they are an end-of-archive
    # block followed by "padding" that the importer must not read past the cap.
    bomb = _zeros_zst(100 << 20)
    assert len(bomb) < 64 << 10
    with refused(ArchiveError, match=r"decompresses to more than 8388608 bytes \(a decompression bomb"):
        import_archive(store_b, bomb, max_bytes=8 << 20)
    assert_nothing_recorded(store_b)


@pytest.mark.hostile
def test_a_member_declaring_more_than_the_cap_is_refused_before_reading(store_b: Store) -> None:
    data = b"\0" * (20 << 20)
    digest = blake(data)
    doc = entry_doc(files=[{"name": "libfoo.rlib", "hash": digest, "size": len(data), "kind": "link"}])
    archive = make_archive([member("kache-entry.json", json.dumps(doc).encode()),
                            member(f"blobs/{digest}", data)])
    assert len(archive) < 64 << 10
    with refused(ArchiveError, match="would make it decompress to more than 1048576 bytes"):
        import_archive(store_b, archive, max_bytes=1 << 20)
    assert_nothing_recorded(store_b)
    # With room enough, the same archive imports.
    assert import_archive(store_b, archive, max_bytes=32 << 20).size == len(data)


@pytest.mark.hostile
def test_a_failure_after_some_blobs_leaves_only_orphans(store_b: Store, tmp_path: Path) -> None:
    good, bad = b"first blob", b"second blob"
    files = [{"name": "a.rlib", "hash": blake(good), "size": len(good), "kind": "link"},
             {"name": "b.rmeta", "hash": blake(bad), "size": len(bad), "kind": "link"}]
    doc = entry_doc(files=files)
    archive = make_archive([member("kache-entry.json", json.dumps(doc).encode()),
                            member(f"blobs/{blake(good)}", good),
                            member(f"blobs/{blake(bad)}", b"tampered!!!")])
    with refused(ArchiveError, match="content does not match its name"):
        import_archive(store_b, archive)
    assert_nothing_recorded(store_b)
    assert [os.path.basename(p) for p in store_b.integrity.orphan_blobs()] == [blake(good)]
