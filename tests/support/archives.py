"""Remote archives made by hand (valid or malicious): entry documents, tar members, zstd."""

from __future__ import annotations

import io
import json
import tarfile
from typing import Any

import zstandard

from tests.support.entries import blake, hexkey


def entry_doc(key: str | None = None, crate: str = "foo", files: list[dict[str, Any]] | None = None,
              **overrides: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "format": 1, "key": key or hexkey("doc"), "mkey": hexkey("doc mkey"), "crate_name": crate,
        "crate_types": "lib", "target": "", "profile": "dev", "compile_ms": 10, "key_version": 1,
        "meta": {"files": files or [], "stdout": "", "stderr": "", "emit": ["link"], "components": {},
                 "target_dir": True},
        "inputs": {"files": [["${WS}/src/lib.rs", "a" * 64]], "env": []},
    }
    doc.update(overrides)
    return doc


def member(name: str, data: bytes = b"", type: bytes = tarfile.REGTYPE, linkname: str = "",
           size: int | None = None) -> tuple[tarfile.TarInfo, bytes | None]:
    ti = tarfile.TarInfo(name)
    ti.type = type
    ti.linkname = linkname
    ti.size = len(data) if size is None else size
    ti.mode = 0o444
    return ti, (data if ti.isreg() else None)


def make_archive(members: list[tuple[tarfile.TarInfo, bytes | None]], *, fmt: int = tarfile.GNU_FORMAT,
                 trailing: bytes = b"") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tf:
        for ti, data in members:
            if not ti.isreg():
                ti.size = 0
            tf.addfile(ti, io.BytesIO(data) if data is not None else None)
    return zstandard.ZstdCompressor().compress(buf.getvalue() + trailing)


def good_members(blob_data: bytes = b"hello blob", key: str | None = None, crate: str = "foo",
                 **doc_overrides: Any) -> tuple[list[tuple[tarfile.TarInfo, bytes | None]], dict[str, Any]]:
    """A valid archive's members (one file, one blob) and its document."""
    digest = blake(blob_data)
    file = {"name": "libfoo.rlib", "hash": digest, "size": len(blob_data), "kind": "link"}
    doc = entry_doc(key, crate, [file], **doc_overrides)
    return [member("kache-entry.json", json.dumps(doc).encode()), member(f"blobs/{digest}", blob_data)], doc
