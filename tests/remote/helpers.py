"""Builders for the remote tests: realistic entries, hand-made (malicious) archives,
and a local HTTP server that answers every request with a 500."""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import tarfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import zstandard
from blake3 import blake3

from kache.store.store import Entry, Store

# An access key and secret that must never appear in an error message.
ACCESS_KEY = "AKIAKACHETESTKEY0001"
SECRET_KEY = "kache/test+SECRET/value0123456789abcdef"


def hexkey(seed: str) -> str:
    return hashlib.sha256(seed.encode()).hexdigest()


def blake(data: bytes) -> str:
    return blake3(data).hexdigest()


def add_entry(store: Store, crate: str, *, seed: str | None = None, mkey: str | None = None,
              blobs: list[bytes] | None = None, created: float | None = None) -> Entry:
    """A local entry shaped like the wrapper's: an .rlib, an .rmeta and a .d, with a
    manifest line naming one source file."""
    seed = seed or f"{crate}-{time.perf_counter_ns()}"
    key = hexkey("key " + seed)
    mkey = mkey or hexkey("mkey " + seed)
    if blobs is None:
        blobs = [f"rlib of {crate} {seed}".encode() * 50, f"rmeta of {crate} {seed}".encode(),
                 f"/deps/lib{crate}.rlib: ${{WS}}/src/lib.rs\n".encode()]
    names = [f"lib{crate}-0123.rlib", f"lib{crate}-0123.rmeta", f"{crate}-0123.d"]
    kinds = ["link", "link", "depinfo"]
    files = []
    for i, data in enumerate(blobs):
        digest, _ = store.put_blob_bytes(data)
        files.append({"name": names[i % 3] if i < 3 else f"extra{i}", "hash": digest, "size": len(data),
                      "kind": kinds[i % 3]})
    now = time.time() if created is None else created
    meta = {"files": files, "stdout": "", "stderr": f"warning from {crate}\n",
            "emit": ["dep-info", "link", "metadata"],
            "components": {"version": "1" * 16, "source:${WS}/src/lib.rs": "2" * 16}, "target_dir": True}
    entry = Entry(key=key, crate_name=crate, crate_types="lib", target="", profile="dev",
                  size=sum(len(b) for b in blobs), created=now, last_used=now, hits=4, compile_ms=321,
                  key_version=1, mkey=mkey, meta=meta)
    inputs = {"files": [["${WS}/src/lib.rs", blake(f"source of {crate} {seed}".encode())]],
              "env": [["KC_GREETING", None, False]]}
    store.add(entry, inputs)
    return entry


# --------------------------------------------------------------------------- archives by hand


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


# --------------------------------------------------------------------------- a failing server


class _FailingHandler(http.server.BaseHTTPRequestHandler):
    """Answers 500 with an S3 error whose message echoes the request's Authorization
    header (as a careless server might): the client must not pass that on."""

    protocol_version = "HTTP/1.1"  # answers ``Expect: 100-continue`` at once

    def _fail(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        elif self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            while True:  # read the chunked body, so the client is not left sending it
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                self.rfile.read(size + 2)
                if size == 0:
                    break
        auth = self.headers.get("Authorization", "")
        body = (f"<?xml version='1.0'?><Error><Code>InternalError</Code><Message>boom for {auth} "
                f"and {self.headers.get('X-Amz-Security-Token', '')}</Message></Error>").encode()
        self.send_response(500)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body) if self.command != "HEAD" else 0))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _fail

    def log_message(self, *args: Any) -> None:
        pass


@contextmanager
def failing_server() -> Iterator[str]:
    """A local endpoint that fails every request with HTTP 500."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _FailingHandler)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        host, port = server.server_address[:2]
        yield f"http://{host}:{port}"
    finally:
        server.shutdown()
        server.server_close()
