"""Synthetic stores and event logs for the store and CLI tests (no rustc involved)."""

from __future__ import annotations

import hashlib
import time
from typing import Any

from kache.store import events
from kache.store.store import Entry, Store


def add_entry(store: Store, crate: str, *, blobs: list[bytes] | None = None, key: str | None = None,
              created: float | None = None, last_used: float | None = None, hits: int = 0,
              crate_types: str = "lib", profile: str = "dev", compile_ms: int = 1000, target: str = "",
              components: dict[str, str] | None = None) -> Entry:
    """Put real blob files for ``blobs`` (default: one small unique blob) and record an entry."""
    now = time.time()
    created = now - 3600 if created is None else created
    last_used = created if last_used is None else last_used
    if key is None:
        key = hashlib.sha256(f"{crate}-{created}-{time.perf_counter_ns()}".encode()).hexdigest()
    if blobs is None:
        blobs = [f"rlib of {crate} {key}".encode()]
    files = []
    for i, data in enumerate(blobs):
        digest, _ = store.put_blob_bytes(data)
        files.append({"name": f"lib{crate}-{i}.rlib", "hash": digest, "size": len(data), "kind": "link"})
    meta: dict[str, Any] = {"files": files, "stdout": "", "stderr": "", "emit": ["dep-info", "link", "metadata"],
                            "components": components or {}, "target_dir": True}
    entry = Entry(key=key, crate_name=crate, crate_types=crate_types, target=target, profile=profile,
                  size=sum(len(b) for b in blobs), created=created, last_used=last_used, hits=hits,
                  compile_ms=compile_ms, key_version=1, mkey=key[::-1], meta=meta)
    store.add(entry, {"files": [], "env": []})
    return entry


def event(store_root: str, outcome: str, crate: str = "foo", *, t: float | None = None, **fields: Any) -> None:
    ev: dict[str, Any] = {"t": time.time() if t is None else t, "crate": crate, "outcome": outcome, "ms": 5.0}
    ev.update(fields)
    events.append(store_root, ev)
