"""Remote archives (kache.remote.archive) that an attacker with write access to the bucket,
or a flaky network, could hand to ``import_archive``: hypothesis mutations of a valid
archive's compressed bytes and of its tar stream, and hand-made tar headers that
tests/remote/test_remote_archive.py does not cover yet (links and devices as the
manifest itself, GNU and pax extension headers, base-256 sizes, bad checksums, odd
spellings of the names, a second zstd frame).

What must hold: an archive is refused whole with ``ArchiveError`` (nothing recorded;
blobs already verified may stay as orphans for gc), or it imports, and then

* a mutation of the compressed bytes imports exactly the original entry (the zstd
  content checksum and the blob hashes leave no room for anything else);
* a mutation of the tar stream imports only a consistent entry: every blob hashes to its
  name, every file name is one safe path component, nothing is written outside the store.
"""

from __future__ import annotations

import json
import os
import shutil
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kache.remote.archive import ArchiveError, _valid_file_name, import_archive, pack_entry
from kache.store import blobs
from kache.store.store import Entry, Store
from tests.support.archives import entry_doc, good_members, make_archive, member
from tests.support.entries import add_wrapper_entry, blake
from tests.support.hostile import accepted, refused, tried

pytestmark = pytest.mark.hostile


class Original:
    """A packed entry and what it must import as."""

    def __init__(self, base: Path) -> None:
        store = Store(str(base / "origin"))
        try:
            self.entry = add_wrapper_entry(store, "proc_macro2", seed="hostile")
            self.data = pack_entry(store, self.entry.key, 3)
            self.manifest = store.manifest_line(self.entry.key)
        finally:
            store.close()
        self.tar = zstandard.ZstdDecompressor().decompressobj().decompress(self.data)


@pytest.fixture(scope="module")
def original(tmp_path_factory: pytest.TempPathFactory) -> Original:
    return Original(tmp_path_factory.mktemp("archive-origin"))


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("archive-imports")


def fresh_store(scratch: Path) -> tuple[Path, Store]:
    """A new empty store under a directory of its own (the store is ``<dir>/cache``)."""
    d = Path(tempfile.mkdtemp(dir=scratch))
    store = Store(str(d / "cache"))
    store.open()
    return d, store


def everything_under(d: Path) -> set[str]:
    return {os.path.relpath(os.path.join(r, f), d) for r, _, fs in os.walk(d) for f in fs}


def assert_refused_cleanly(store: Store) -> None:
    """Nothing recorded; any blob left behind is an intact orphan; tmp/ is empty."""
    assert store.entries() == []
    assert store.db.execute("SELECT COUNT(*) FROM manifests").fetchone()[0] == 0
    for path in store.integrity.orphan_blobs():
        assert blobs.hash_file(path)[0] == os.path.basename(path)
    assert os.listdir(os.path.join(store.root, "tmp")) == []


def same_entry(got: Entry, want: Entry) -> bool:
    fields = (
        "key",
        "crate_name",
        "crate_types",
        "target",
        "profile",
        "size",
        "compile_ms",
        "key_version",
        "mkey",
    )
    return (
        all(getattr(got, f) == getattr(want, f) for f in fields)
        and {k: v for k, v in got.meta.items() if k != "origin"} == want.meta
    )


def assert_consistent(store: Store, d: Path, entry: Entry) -> None:
    """An imported entry is sound, whatever it claims: its blobs hash to their names,
    its file names are safe, the store checks clean, nothing lies outside the store."""
    assert store.check(verify_hashes=True) == []
    for f in entry.meta["files"]:
        assert _valid_file_name(f["name"]), f
        assert blobs.hash_file(store.blob_path(f["hash"])) == (f["hash"], f["size"])
    assert all(p.startswith("cache/") for p in everything_under(d)), everything_under(d)


# --------------------------------------------------------------------------- mutations

_EDIT = st.tuples(
    st.sampled_from(["flip", "set", "delete", "insert", "truncate", "duplicate"]),
    st.integers(0, 1 << 20),
    st.integers(0, 255),
)


def mutate(data: bytes, edits: list[tuple[str, int, int]]) -> bytes:
    b = bytearray(data)
    for kind, pos, value in edits:
        if not b:
            break
        i = pos % len(b)
        if kind == "flip":
            b[i] ^= 1 << (value % 8)
        elif kind == "set":
            b[i] = value
        elif kind == "delete":
            del b[i]
        elif kind == "insert":
            b.insert(i, value)
        elif kind == "truncate":
            del b[i:]
        else:
            b[i:i] = b[i : i + 1 + value]
    return bytes(b)


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(edits=st.lists(_EDIT, min_size=1, max_size=3))
def test_a_mutated_archive_is_refused_or_imports_exactly_the_original_entry(
    original: Original, scratch: Path, edits: list[tuple[str, int, int]]
) -> None:
    data = mutate(original.data, edits)
    d, store = fresh_store(scratch)
    tried()
    try:
        try:
            got = import_archive(store, data, expected_key=original.entry.key, expected_crate="proc_macro2")
        except ArchiveError:
            assert_refused_cleanly(store)
            return
        if not same_entry(got, original.entry) or store.manifest_line(got.key) != original.manifest:
            accepted(f"a mutated archive imported another entry: {edits}")
        assert_consistent(store, d, got)
    finally:
        store.close()
        shutil.rmtree(d)


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(edits=st.lists(_EDIT, min_size=1, max_size=3), checksum=st.booleans())
def test_a_mutated_tar_stream_is_refused_or_imports_a_consistent_entry(
    original: Original, scratch: Path, edits: list[tuple[str, int, int]], checksum: bool
) -> None:
    """The tar inside is changed, then compressed again (a well-formed zstd stream, as an
    attacker would send): the importer's own checks are all that stands."""
    data = zstandard.ZstdCompressor(level=1, write_checksum=checksum).compress(mutate(original.tar, edits))
    d, store = fresh_store(scratch)
    tried()
    try:
        try:
            got = import_archive(store, data)
        except ArchiveError:
            assert_refused_cleanly(store)
            return
        try:
            assert_consistent(store, d, got)
        except AssertionError:
            accepted(f"a mutated tar stream imported an inconsistent entry: {edits}")
    finally:
        store.close()
        shutil.rmtree(d)


def test_every_single_byte_flip_of_the_compressed_archive_is_refused_or_harmless(
    original: Original, scratch: Path
) -> None:
    """Exhaustively, one bit per byte (the property test samples; this walks them all)."""
    d, store = fresh_store(scratch)
    try:
        for i in range(len(original.data)):
            data = bytearray(original.data)
            data[i] ^= 0x10
            tried()
            try:
                got = import_archive(store, bytes(data), expected_key=original.entry.key)
            except ArchiveError:
                assert store.entries() == []
                continue
            if not same_entry(got, original.entry):
                accepted(f"flipping byte {i} imported another entry")
            store.remove([got.key])
    finally:
        store.close()
        shutil.rmtree(d)


# --------------------------------------------------------------------------- hand-made headers


def _header(
    name: str,
    *,
    type: bytes = tarfile.REGTYPE,
    size_field: bytes | None = None,
    size: int = 0,
    linkname: str = "",
    bad_checksum: bool = False,
    raw_name: bytes | None = None,
) -> bytes:
    """One 512-byte ustar header, fields patched as asked, checksum recomputed (or not)."""
    ti = tarfile.TarInfo(name)
    ti.type, ti.size, ti.linkname, ti.mode = type, size, linkname, 0o444
    buf = bytearray(ti.tobuf(format=tarfile.USTAR_FORMAT))
    if raw_name is not None:
        buf[0:100] = raw_name.ljust(100, b"\0")[:100]
    if size_field is not None:
        buf[124:136] = size_field
    buf[148:156] = b"        "
    chksum = sum(buf) + (1 if bad_checksum else 0)
    buf[148:156] = b"%06o\0 " % chksum
    return bytes(buf)


def _pad(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 512)


BLOB = b"hello blob"
DIGEST = blake(BLOB)
DOC = json.dumps(
    entry_doc(files=[{"name": "libfoo.rlib", "hash": DIGEST, "size": len(BLOB), "kind": "link"}])
).encode()


def _tar(*parts: bytes, end: bool = True) -> bytes:
    return b"".join(parts) + (b"\0" * 1024 if end else b"")


def _manifest() -> bytes:
    return _header("kache-entry.json", size=len(DOC)) + _pad(DOC)


def _blob(name: str = f"blobs/{DIGEST}", **kw: object) -> bytes:
    return _header(name, size=len(BLOB), **kw) + _pad(BLOB)  # type: ignore[arg-type]


def _zst(tar: bytes) -> bytes:
    return zstandard.ZstdCompressor().compress(tar)


def _base256(n: int) -> bytes:
    """A tar size field in GNU base-256 (the high bit of the first byte set; negative
    numbers in two's complement with 0xff first)."""
    if n < 0:
        return b"\xff" + (n % (1 << 88)).to_bytes(11, "big")
    return b"\x80" + n.to_bytes(11, "big")


HEADER_CASES: dict[str, tuple[bytes, str]] = {
    "manifest-as-symlink": (
        _zst(_tar(_header("kache-entry.json", type=tarfile.SYMTYPE, linkname="/etc/passwd"))),
        "is a symbolic link",
    ),
    "manifest-as-hardlink": (
        _zst(_tar(_header("kache-entry.json", type=tarfile.LNKTYPE, linkname="/etc/shadow"))),
        "is a hard link",
    ),
    "manifest-as-fifo": (_zst(_tar(_header("kache-entry.json", type=tarfile.FIFOTYPE))), "is a FIFO"),
    "manifest-as-device": (
        _zst(_tar(_header("kache-entry.json", type=tarfile.CHRTYPE))),
        "is a character device",
    ),
    "gnu-longname": (
        _zst(
            _tar(
                _header("././@LongLink", type=tarfile.GNUTYPE_LONGNAME, size=3) + _pad(b"x\0\0"), _manifest()
            )
        ),
        "is a GNU long-name header",
    ),
    "gnu-longlink": (
        _zst(_tar(_manifest(), _header("././@LongLink", type=tarfile.GNUTYPE_LONGLINK))),
        "is a GNU long-link header",
    ),
    "gnu-sparse": (_zst(_tar(_manifest(), _blob(type=tarfile.GNUTYPE_SPARSE))), "is a GNU sparse file"),
    "pax-global": (
        _zst(_tar(_header("pax_global_header", type=tarfile.XGLTYPE), _manifest())),
        "is a pax global header",
    ),
    "contiguous": (_zst(_tar(_manifest(), _blob(type=tarfile.CONTTYPE))), "is a contiguous file"),
    "volume-label": (_zst(_tar(_header("vol", type=b"V"), _manifest())), "is a volume label"),
    "unknown-type": (_zst(_tar(_manifest(), _blob(type=b"Z"))), "of tar type"),
    "dot-slash-manifest": (
        _zst(_tar(_header("./kache-entry.json", size=len(DOC)) + _pad(DOC))),
        "unexpected name",
    ),
    "double-slash-blob": (_zst(_tar(_manifest(), _blob(f"blobs//{DIGEST}"))), "unexpected name"),
    "trailing-slash-blob": (_zst(_tar(_manifest(), _blob(f"blobs/{DIGEST}/"))), "unexpected name"),
    "dot-in-blob-path": (_zst(_tar(_manifest(), _blob(f"blobs/./{DIGEST}"))), "unexpected name"),
    "backslash-name": (_zst(_tar(_manifest(), _blob(f"blobs\\..\\{DIGEST}"))), "unsafe name"),
    "dotdot-after-blobs": (_zst(_tar(_manifest(), _blob(f"blobs/../{DIGEST}"))), "unsafe name"),
    "nul-in-name": (
        _zst(_tar(_manifest(), _blob(raw_name=b"blobs/" + DIGEST.encode()[:10] + b"\0/../../x"))),
        "unexpected name",
    ),
    "non-utf8-name": (_zst(_tar(_manifest(), _blob(raw_name=b"blobs/\xff\xfe"))), "unexpected name"),
    "negative-size": (
        _zst(_tar(_manifest(), _header(f"blobs/{DIGEST}", size_field=_base256(-512)))),
        "negative size",
    ),
    "huge-size": (
        _zst(_tar(_manifest(), _header(f"blobs/{DIGEST}", size_field=_base256(1 << 80)))),
        "would make it decompress to more than",
    ),
    "manifest-huge-size": (
        _zst(_tar(_header("kache-entry.json", size_field=_base256(1 << 40)))),
        "would make it decompress to more than",
    ),
    "bad-header-checksum": (_zst(_tar(_manifest(), _blob(bad_checksum=True))), "invalid tar header"),
    "garbage-header": (_zst(_tar(_manifest(), b"\x01" * 512)), "invalid tar header"),
    "no-end-of-archive": (_zst(_tar(_manifest(), _blob(), end=False)), "truncated"),
    "member-cut-short": (
        _zst(_manifest() + _header(f"blobs/{DIGEST}", size=len(BLOB)) + BLOB[:4]),
        "truncated",
    ),
    "second-frame-of-garbage": (
        _zst(_tar(_manifest(), _blob())) + _zst(b"\x01" * 100),
        "data after the end of the tar stream",
    ),
    "second-frame-of-a-tar": (
        _zst(_tar(_manifest(), _blob())) + _zst(_tar(_blob())),
        "data after the end of the tar stream",
    ),
    "manifest-not-utf8": (
        _zst(_tar(_header("kache-entry.json", size=4) + _pad(b'{"\xff'))),
        "not valid JSON",
    ),
    "manifest-deeply-nested": (
        _zst(_tar(_header("kache-entry.json", size=200_000) + _pad(b"[" * 200_000))),
        "kache-entry.json: not valid JSON (nested too deeply)",
    ),
}


@pytest.mark.parametrize("case", sorted(HEADER_CASES))
def test_a_hand_made_archive_is_refused(case: str, scratch: Path) -> None:
    data, message = HEADER_CASES[case]
    d, store = fresh_store(scratch)
    try:
        with refused(ArchiveError) as err:
            import_archive(store, data, name="artifacts/foo/x.tar.zst")
        assert str(err.value).startswith("bad archive: artifacts/foo/x.tar.zst: "), err.value
        assert message in str(err.value), err.value
        assert_refused_cleanly(store)
        assert all(p.startswith("cache/") for p in everything_under(d))
    finally:
        store.close()
        shutil.rmtree(d)


def test_the_hand_made_archive_builder_makes_archives_that_import(scratch: Path) -> None:
    """The control: the same builder, without the fault, imports (so each refusal above
    is the fault's doing)."""
    d, store = fresh_store(scratch)
    try:
        entry = import_archive(store, _zst(_tar(_manifest(), _blob())))
        assert entry.meta["files"][0]["hash"] == DIGEST
        assert_consistent(store, d, entry)
    finally:
        store.close()
        shutil.rmtree(d)


@pytest.fixture
def store_c(tmp_path: Path) -> Iterator[Store]:
    s = Store(str(tmp_path / "machine-c" / "cache"))
    s.open()
    yield s
    s.close()


def test_a_manifest_one_byte_over_the_cap_is_refused_and_one_at_it_is_read(store_c: Store) -> None:
    from kache.remote.archive import MAX_MANIFEST_BYTES

    members, doc = good_members()
    text = json.dumps(doc).encode()
    pad = MAX_MANIFEST_BYTES - len(text)
    at_cap = text[:-1] + b" " * pad + b"}"
    assert len(at_cap) == MAX_MANIFEST_BYTES
    blob = members[1]
    with refused(ArchiveError, match=f"more than the {MAX_MANIFEST_BYTES}-byte limit"):
        import_archive(store_c, make_archive([member("kache-entry.json", at_cap + b" "), blob]))
    tried()
    assert import_archive(store_c, make_archive([member("kache-entry.json", at_cap), blob])).key == doc["key"]
