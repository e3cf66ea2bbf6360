"""Remote archives: one cache entry as a zstd-compressed tar, packed and checked.

Format version 1 — the object ``{prefix}/{crate}/{key}.tar.zst`` on the remote::

    one zstd frame (level ``cache.compression_level``, with a content checksum)
    └── a tar stream of plain ustar headers (no pax or GNU extensions), in this order:
        kache-entry.json      the entry, a UTF-8 JSON object of at most 1 MiB; always first
        blobs/<blake3 hex>    one regular file per distinct blob the entry's files use,
        …                     sorted by hash (mode 0444, mtime 0, owner 0:0)

``kache-entry.json`` (keys in this order)::

    {
      "format": 1,
      "key": "<64 hex>",            the full cache key; equals the object's name
      "mkey": "<64 hex>",           the cheap key the manifest line is recorded under
      "crate_name": "proc_macro2",  rustc's crate name
      "crate_types": "lib",         comma-separated, as in the local index
      "target": "", "profile": "dev", "compile_ms": 1234, "key_version": 1,
      "meta": {                     the entry's meta (kache.store.store), minus "origin" and "incremental"
        "files": [{"name": "libproc_macro2-….rlib", "hash": "<blake3>", "size": 123,
                   "kind": "link" | "exec" | "depinfo"}, …],
        "stdout": "…", "stderr": "…", "emit": […], "components": {…}, "target_dir": true
      },
      "inputs": {                   the direct-mode manifest line recorded with the entry
        "files": [["<normalised path>", "<blake3>"], …],
        "env": [["NAME", "value" | null, <normalised: bool>], …],
        "local": [["<CWD>", ["/abs/path", …]], …]   only when the outputs hold a path
                                    of the machine that recorded it: served only where
                                    each placeholder stands for the same paths
      }
    }

Everything in an archive is untrusted. :func:`import_archive` reads it as a stream and
rejects it (:class:`ArchiveError`, nothing recorded) unless:

- the zstd stream decompresses to at most ``max_bytes`` (a decompression bomb stops at
  the cap, it is never held in memory), holds at most ``max_members`` members, each at
  most ``max_member_bytes``, and nothing but zero padding follows the end of the tar;
- every member is a regular file named exactly ``kache-entry.json`` (first, at most
  1 MiB) or ``blobs/<64 lowercase hex>``; links, devices, FIFOs, directories, pax and
  GNU extension headers, absolute names, ``..`` and duplicates are refused;
- every blob's blake3, computed while extracting, equals its name, and every blob is
  one the entry's files use, with the size they say; every file's blob is present;
- the key is 64 lowercase hex digits (and the expected one), the crate name matches
  ``[A-Za-z0-9_.-]{1,128}`` without ``..`` (and is the expected one), file names are
  single path components, and every field has the type the local index uses.

Blobs are written to ``<store>/tmp`` while being hashed and renamed into place once
verified; a failure after some blobs were put leaves orphans that gc removes. The entry
is recorded last, with :meth:`Store.add`, together with its manifest line.
"""

from __future__ import annotations

import io
import json
import os
import re
import time
from typing import TYPE_CHECKING

from kache.errors import KacheError
from kache.paths import REMAP_TARGETS
from kache.store import blobs, layout
from kache.store.store import Entry

if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, BinaryIO

    from kache.store.store import Store

__all__ = ["ArchiveError", "FORMAT_VERSION", "MANIFEST_NAME", "pack_entry", "import_archive",
           "valid_crate_name", "valid_key", "FILE_KINDS"]

FORMAT_VERSION = 1
MANIFEST_NAME = "kache-entry.json"
BLOB_DIR = "blobs/"
MAX_MANIFEST_BYTES = 1 << 20
MAX_MEMBERS = 4096
DEFAULT_MAX_BYTES = 4 << 30
FILE_KINDS = frozenset({"link", "exec", "depinfo"})
"""Kinds of stored files the wrapper knows how to restore (kache.engine.restore)."""

_BLOCK = 512
_CHUNK = 1 << 20
_ZERO_BLOCK = bytes(_BLOCK)
_CRATE_RE = re.compile(r"[A-Za-z0-9_.-]{1,128}")
_CRATE_TYPES_RE = re.compile(r"[a-z0-9_,-]{0,256}")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
_TYPE_WORDS = {
    b"1": "a hard link", b"2": "a symbolic link", b"3": "a character device", b"4": "a block device",
    b"5": "a directory", b"6": "a FIFO", b"7": "a contiguous file", b"x": "a pax extended header",
    b"g": "a pax global header", b"X": "a pax extended header", b"L": "a GNU long-name header",
    b"K": "a GNU long-link header", b"S": "a GNU sparse file", b"V": "a volume label",
}


class ArchiveError(KacheError):
    """An archive is malformed or unsafe, or an entry cannot be packed; nothing was recorded."""


# --------------------------------------------------------------------------- names


def valid_key(key: object) -> bool:
    """A cache key (full or cheap) as kache writes it: 64 lowercase hex digits."""
    return isinstance(key, str) and blobs.is_hash(key)


def valid_crate_name(name: object) -> bool:
    """A crate name safe as an object-name component: ``[A-Za-z0-9_.-]{1,128}``, no ``..``."""
    return isinstance(name, str) and _CRATE_RE.fullmatch(name) is not None and ".." not in name


def _valid_file_name(name: object) -> bool:
    return (isinstance(name, str) and 0 < len(name.encode("utf-8", "surrogatepass")) <= 255
            and name not in (".", "..") and "/" not in name and "\\" not in name
            and _CONTROL_RE.search(name) is None)


# --------------------------------------------------------------------------- pack


class _HashingReader:
    """A file wrapper that hashes what tarfile reads from it."""

    def __init__(self, f: BinaryIO) -> None:
        from blake3 import blake3

        self._f = f
        self.hasher = blake3()

    def read(self, n: int = -1) -> bytes:
        data = self._f.read(n)
        self.hasher.update(data)
        return data


def pack_entry(store: Store, key: str, level: int = 3) -> bytes:
    """The archive (format version 1) of one local entry, its blobs verified while read.

    Raises :class:`ArchiveError` when the entry, its manifest line or a blob is missing,
    or a blob no longer matches its hash (a corrupt local store must not be shared).
    """
    import tarfile

    import zstandard

    entry = store.get(key)
    if entry is None:
        raise ArchiveError(f"packing entry failed: {key}: not in the local store")
    what = f"packing entry failed: {entry.crate_name} {key[:16]}"
    line = store.manifest_line(key)
    if line is None:
        raise ArchiveError(f"{what}: no direct-mode manifest line is recorded for it "
                           "(it could never be found by its inputs on another machine)")
    mkey, inputs = line
    # (an incremental snapshot stays local: it is only restored in the checkout that made it)
    meta = {k: v for k, v in entry.meta.items() if k not in ("origin", "incremental")}
    doc = {
        "format": FORMAT_VERSION, "key": entry.key, "mkey": mkey, "crate_name": entry.crate_name,
        "crate_types": entry.crate_types, "target": entry.target, "profile": entry.profile,
        "compile_ms": entry.compile_ms, "key_version": entry.key_version, "meta": meta, "inputs": inputs,
    }
    manifest = json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    wanted: dict[str, int] = {}
    for f in meta.get("files", []):
        wanted[f["hash"]] = f["size"]

    def info(name: str, size: int) -> tarfile.TarInfo:
        ti = tarfile.TarInfo(name)
        ti.size, ti.mode, ti.mtime, ti.uid, ti.gid, ti.uname, ti.gname = size, 0o444, 0, 0, 0, "", ""
        return ti

    buf = io.BytesIO()
    cctx = zstandard.ZstdCompressor(level=level, write_checksum=True)
    with cctx.stream_writer(buf, closefd=False) as zw:
        tar = tarfile.open(fileobj=zw, mode="w|", format=tarfile.USTAR_FORMAT)
        with tar as tf:
            tf.addfile(info(MANIFEST_NAME, len(manifest)), io.BytesIO(manifest))
            for digest in sorted(wanted):
                path = store.blob_path(digest)
                try:
                    f = open(path, "rb")
                except FileNotFoundError:
                    raise ArchiveError(f"{what}: blob {digest[:16]} is missing from the local store"
                                       ) from None
                with f:
                    size = os.fstat(f.fileno()).st_size
                    if size != wanted[digest]:
                        raise ArchiveError(f"{what}: blob {digest[:16]} has {size} bytes, "
                                           f"the entry says {wanted[digest]}")
                    reader = _HashingReader(f)
                    tf.addfile(info(BLOB_DIR + digest, size), reader)
                    if reader.hasher.hexdigest() != digest:
                        raise ArchiveError(f"{what}: blob {digest[:16]} does not match its hash "
                                           "(the local store is damaged: `kache gc` or `kache purge`)")
    return buf.getvalue()


# --------------------------------------------------------------------------- import


class _Capped:
    """Reads the decompressed stream, failing once more than ``cap`` bytes came out."""

    def __init__(self, source: Any, cap: int, fail: Callable[[str], ArchiveError]) -> None:
        self._src = source
        self._cap = cap
        self._fail = fail
        self.count = 0

    def read(self, n: int) -> bytes:
        import zstandard

        parts = []
        want = n
        while want > 0:
            try:
                chunk = self._src.read(want)
            except zstandard.ZstdError as e:
                raise self._fail(f"not a valid zstd stream ({e})") from None
            if not chunk:
                break
            self.count += len(chunk)
            if self.count > self._cap:
                raise self._fail(f"decompresses to more than {self._cap} bytes (a decompression bomb?)")
            parts.append(chunk)
            want -= len(chunk)
        return b"".join(parts)

    def exact(self, n: int, what: str) -> bytes:
        data = self.read(n)
        if len(data) != n:
            raise self._fail(f"truncated: the stream ends inside {what}")
        return data


def import_archive(store: Store, data: bytes, *, expected_key: str | None = None,
                   expected_crate: str | None = None, origin: str = "remote",
                   max_bytes: int = DEFAULT_MAX_BYTES, max_member_bytes: int | None = None,
                   max_members: int = MAX_MEMBERS, name: str | None = None) -> Entry:
    """Check an archive (see the module docstring), put its blobs and record its entry.

    ``origin`` goes into the entry's ``meta["origin"]`` (``remote`` for a fetch on a
    miss, ``prefetch`` for sync and prefetch pulls); the entry starts with no hits and
    is created and used now. ``name`` names the archive in errors (the object name).
    If the key is already in the store, that entry is returned and nothing is written.
    Raises :class:`ArchiveError` on any violation, before anything is recorded.
    """
    import tarfile

    import zstandard

    label = name or (f"archive of {expected_key}" if expected_key else "archive")

    def fail(why: str) -> ArchiveError:
        return ArchiveError(f"bad archive: {label}: {why}")

    if expected_key is not None and not valid_key(expected_key):
        raise fail(f"expected key {expected_key!r} is not 64 lowercase hex digits")
    if expected_crate is not None and not valid_crate_name(expected_crate):
        raise fail(f"expected crate name {expected_crate!r} is not a valid crate name")
    member_cap = max_bytes if max_member_bytes is None else max_member_bytes
    store.open()  # the store's layout (tmp/, store/) exists from here on
    tmp_dir = layout.tmp_dir(store.root)
    try:
        stream = zstandard.ZstdDecompressor().stream_reader(data, read_across_frames=True)
    except zstandard.ZstdError as e:
        raise fail(f"not a valid zstd stream ({e})") from None
    src = _Capped(stream, max_bytes, fail)

    doc: dict[str, Any] | None = None
    needed: dict[str, int] = {}
    executables: set[str] = set()
    seen: set[str] = set()
    count = 0
    while True:
        header = src.exact(_BLOCK, "a tar header")
        if header == _ZERO_BLOCK:
            break
        count += 1
        if count > max_members:
            raise fail(f"more than {max_members} members")
        try:
            info = tarfile.TarInfo.frombuf(header, "utf-8", "surrogateescape")
        except tarfile.HeaderError as e:
            raise fail(f"member {count}: invalid tar header ({e})") from None
        mname = info.name
        shown = repr(mname)
        if mname.startswith("/") or ".." in mname.split("/") or "\\" in mname:
            raise fail(f"member {shown}: unsafe name (absolute or containing '..')")
        if info.type not in (tarfile.REGTYPE, tarfile.AREGTYPE):
            what = _TYPE_WORDS.get(info.type, f"of tar type {info.type!r}")
            raise fail(f"member {shown}: is {what}; only regular files are allowed")
        is_blob = mname.startswith(BLOB_DIR) and blobs.is_hash(mname[len(BLOB_DIR):])
        if mname != MANIFEST_NAME and not is_blob:
            raise fail(f"member {shown}: unexpected name (expected {MANIFEST_NAME} or blobs/<blake3 hex>)")
        if mname in seen:
            raise fail(f"member {shown}: appears twice")
        seen.add(mname)
        size = info.size
        if size < 0:
            raise fail(f"member {shown}: negative size")
        if size > max_bytes - src.count:
            raise fail(f"member {shown}: {size} bytes would make it decompress to more than "
                       f"{max_bytes} bytes (a decompression bomb?)")
        padding = -size % _BLOCK
        if mname == MANIFEST_NAME:
            if count != 1:
                raise fail(f"{MANIFEST_NAME} is not the first member")
            if size > MAX_MANIFEST_BYTES:
                raise fail(f"{MANIFEST_NAME}: {size} bytes, more than the {MAX_MANIFEST_BYTES}-byte limit")
            raw = src.exact(size, MANIFEST_NAME)
            src.exact(padding, MANIFEST_NAME)
            doc = _parse_manifest(raw, fail)
            if expected_key is not None and doc["key"] != expected_key:
                raise fail(f"holds key {doc['key']}, expected {expected_key}")
            if expected_crate is not None and doc["crate_name"] != expected_crate:
                raise fail(f"holds crate {doc['crate_name']!r}, expected {expected_crate!r}")
            existing = store.get(doc["key"])
            if existing is not None:
                return existing
            needed = {f["hash"]: f["size"] for f in doc["meta"]["files"]}
            executables = {f["hash"] for f in doc["meta"]["files"] if f.get("kind") == "exec"}
            continue
        if doc is None:
            raise fail(f"{MANIFEST_NAME} is not the first member")
        digest = mname[len(BLOB_DIR):]
        if size > member_cap:
            raise fail(f"member {shown}: {size} bytes, more than the {member_cap}-byte limit per member")
        if digest not in needed:
            raise fail(f"member {shown}: no file of the entry uses this blob")
        if size != needed[digest]:
            raise fail(f"member {shown}: {size} bytes, but the entry's file has {needed[digest]}")
        _extract_blob(store, src, digest, size, tmp_dir, shown, fail, executable=digest in executables)
        src.exact(padding, shown)
    # After the end-of-archive block only zero padding may follow (read, counted, capped).
    while rest := src.read(_CHUNK):
        if rest.count(0) != len(rest):
            raise fail("data after the end of the tar stream")
    if doc is None:
        raise fail(f"no {MANIFEST_NAME} (an empty archive)")
    missing = [f for f in doc["meta"]["files"] if BLOB_DIR + f["hash"] not in seen]
    if missing:
        f = missing[0]
        raise fail(f"file {f['name']!r}: its blob {f['hash'][:16]} is missing from the archive")

    meta = {k: v for k, v in doc["meta"].items() if k != "incremental"}
    meta["origin"] = origin
    now = time.time()
    entry = Entry(key=doc["key"], crate_name=doc["crate_name"], crate_types=doc["crate_types"],
                  target=doc["target"], profile=doc["profile"],
                  size=sum(f["size"] for f in meta["files"]), created=now, last_used=now, hits=0,
                  compile_ms=doc["compile_ms"], key_version=doc["key_version"], mkey=doc["mkey"], meta=meta)
    store.add(entry, doc["inputs"])
    return entry


def _extract_blob(store: Store, src: _Capped, digest: str, size: int, tmp_dir: str, shown: str,
                  fail: Callable[[str], ArchiveError], *, executable: bool = False) -> None:
    """Read one blob member, hashing it; write it to ``tmp/`` and rename it into place
    when it is new and its hash is its name."""
    from blake3 import blake3

    dst = store.blob_path(digest)
    have = os.path.exists(dst) and store.blob_problem(digest, size) is None  # a damaged one is replaced
    h = blake3()
    tmp = None
    out = None
    try:
        if not have:
            tmp = os.path.join(tmp_dir, f"import-{os.getpid()}-{os.urandom(6).hex()}")
            out = open(tmp, "xb")
        left = size
        while left:
            chunk = src.exact(min(left, _CHUNK), shown)
            h.update(chunk)
            if out is not None:
                out.write(chunk)
            left -= len(chunk)
        actual = h.hexdigest()
        if actual != digest:
            raise fail(f"member {shown}: content does not match its name (its blake3 is {actual})")
        if out is not None and tmp is not None:
            out.close()
            out = None
            os.chmod(tmp, blobs.EXEC_BLOB_MODE if executable else blobs.BLOB_MODE)
            os.makedirs(os.path.dirname(dst), mode=0o700, exist_ok=True)
            os.replace(tmp, dst)
        store.integrity.note_verified(digest)
    finally:
        if out is not None:
            out.close()
        if tmp is not None and os.path.lexists(tmp):
            os.unlink(tmp)


def _parse_manifest(raw: bytes, fail: Callable[[str], ArchiveError]) -> dict[str, Any]:
    """``kache-entry.json`` decoded and checked field by field."""
    where = MANIFEST_NAME
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise fail(f"{where}: not valid JSON ({e})") from None
    except RecursionError:  # "[[[[…" within the 1 MiB cap: json gives up before the end
        raise fail(f"{where}: not valid JSON (nested too deeply)") from None
    if not isinstance(doc, dict):
        raise fail(f"{where}: not a JSON object")
    if doc.get("format") != FORMAT_VERSION:
        raise fail(f"{where}: format {doc.get('format')!r} is not supported "
                   f"(this kache reads {FORMAT_VERSION})")

    def need(cond: bool, why: str) -> None:
        if not cond:
            raise fail(f"{where}: {why}")

    def is_int(v: object) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    def short_text(v: object, limit: int = 512) -> bool:
        return isinstance(v, str) and len(v) <= limit and _CONTROL_RE.search(v) is None

    need(valid_key(doc.get("key")), f"key {doc.get('key')!r} is not 64 lowercase hex digits")
    need(valid_key(doc.get("mkey")), f"mkey {doc.get('mkey')!r} is not 64 lowercase hex digits")
    need(valid_crate_name(doc.get("crate_name")),
         f"crate name {doc.get('crate_name')!r} is not valid (letters, digits, _ . - only, no '..')")
    crate_types = doc.get("crate_types")
    need(isinstance(crate_types, str) and _CRATE_TYPES_RE.fullmatch(crate_types) is not None,
         "crate_types is not a comma-separated list of crate types")
    need(short_text(doc.get("target")), "target is not a short string")
    need(short_text(doc.get("profile"), 64), "profile is not a short string")
    need(is_int(doc.get("compile_ms")) and doc["compile_ms"] >= 0, "compile_ms is not a non-negative integer")
    need(is_int(doc.get("key_version")), "key_version is not an integer")

    meta = doc.get("meta")
    if not isinstance(meta, dict):
        raise fail(f"{where}: meta is not an object")
    files = meta.get("files")
    if not (isinstance(files, list) and 0 < len(files) <= MAX_MEMBERS):
        raise fail(f"{where}: meta.files is not a non-empty list")
    names: set[str] = set()
    sizes: dict[str, int] = {}
    for i, f in enumerate(files):
        need(isinstance(f, dict), f"meta.files[{i}] is not an object")
        fname = f.get("name")
        need(_valid_file_name(fname), f"meta.files[{i}]: name {fname!r} is not a single safe path component")
        need(fname not in names, f"meta.files: {fname!r} is listed twice")
        names.add(fname)
        need(valid_key(f.get("hash")), f"file {fname!r}: hash {f.get('hash')!r} is not a blake3 hex digest")
        need(is_int(f.get("size")) and f["size"] >= 0, f"file {fname!r}: size is not a non-negative integer")
        need(f.get("kind") in FILE_KINDS, f"file {fname!r}: kind {f.get('kind')!r} is not one of "
             + ", ".join(sorted(FILE_KINDS)))
        need(sizes.setdefault(f["hash"], f["size"]) == f["size"],
             f"file {fname!r}: blob {f['hash'][:16]} is listed with two sizes")
    for field in ("stdout", "stderr"):
        need(isinstance(meta.get(field, ""), str), f"meta.{field} is not a string")
    emit = meta.get("emit", [])
    need(isinstance(emit, list) and all(isinstance(x, str) for x in emit),
         "meta.emit is not a list of strings")
    comps = meta.get("components", {})
    need(isinstance(comps, dict) and all(isinstance(v, str) for v in comps.values()),
         "meta.components is not an object of strings")
    need(isinstance(meta.get("target_dir", False), bool), "meta.target_dir is not true or false")

    inputs = doc.get("inputs")
    if not isinstance(inputs, dict):
        raise fail(f"{where}: inputs is not an object")
    ifiles = inputs.get("files")
    if not (isinstance(ifiles, list) and len(ifiles) > 0):
        raise fail(f"{where}: inputs.files is not a non-empty list (an entry without inputs would match any build)")
    for i, item in enumerate(ifiles):
        need(isinstance(item, list) and len(item) == 2 and isinstance(item[0], str) and item[0] != ""
             and valid_key(item[1]), f"inputs.files[{i}] is not a [path, blake3] pair")
    ienv = inputs.get("env", [])
    need(isinstance(ienv, list), "inputs.env is not a list")
    for i, item in enumerate(ienv):
        need(isinstance(item, list) and len(item) == 3 and isinstance(item[0], str)
             and (item[1] is None or isinstance(item[1], str)) and isinstance(item[2], bool),
             f"inputs.env[{i}] is not a [name, value or null, normalised] triple")
    ilocal = inputs.get("local", [])
    need(isinstance(ilocal, list), "inputs.local is not a list")
    for i, item in enumerate(ilocal):
        need(isinstance(item, list) and len(item) == 2 and item[0] in REMAP_TARGETS and isinstance(item[1], list)
             and len(item[1]) > 0 and all(isinstance(p, str) and p.startswith("/") for p in item[1]),
             f"inputs.local[{i}] is not a [placeholder, [absolute paths]] pair")
    inputs.setdefault("env", [])
    return doc
