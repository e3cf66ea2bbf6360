"""Store entries and event-log lines made by hand (no rustc involved).

One :func:`add_entry` records an entry; the two builders below it name the shapes the
daemon and remote tests need:

``add_entry(store, crate, …)``            any entry, every field a keyword (store and CLI tests)
``add_seeded_entry(root, crate, seed)``   a minimal one-blob entry whose key follows from
                                          ``seed``; returns the key (daemon tests)
``add_wrapper_entry(store, crate, …)``    shaped like the wrapper's: an .rlib, an .rmeta and
                                          a .d, a manifest line naming one source (remote tests)
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

from blake3 import blake3

from kache.store import events
from kache.store.store import Entry, Store


def hexkey(seed: str) -> str:
    """A key-shaped hex digest that follows from ``seed``."""
    return hashlib.sha256(seed.encode()).hexdigest()


def blake(data: bytes) -> str:
    """The blob digest of ``data``."""
    return blake3(data).hexdigest()


def add_entry(store: Store, crate: str, *, blobs: list[bytes] | None = None, key: str | None = None,
              created: float | None = None, last_used: float | None = None, hits: int = 0,
              crate_types: str = "lib", profile: str = "dev", compile_ms: int = 1000, target: str = "",
              components: dict[str, str] | None = None, mkey: str | None = None,
              files: list[tuple[str, str]] | None = None, stderr: str = "",
              emit: list[str] | None = None, inputs: dict[str, Any] | None = None,
              package: str | None = None, args: list[str] | None = None) -> Entry:
    """Put real blob files for ``blobs`` (default: one small unique blob) and record an entry.

    ``files`` gives each blob its (name, kind) (default ``lib<crate>-<i>.rlib``, link);
    ``mkey`` defaults to the key reversed; ``inputs`` is the manifest (default: none);
    ``package`` the cargo package recorded in meta (as a build script's is shown); ``args``
    the arguments as the key holds them (default: not recorded, as before)."""
    now = time.time()
    created = now - 3600 if created is None else created
    last_used = created if last_used is None else last_used
    if key is None:
        key = hashlib.sha256(f"{crate}-{created}-{time.perf_counter_ns()}".encode()).hexdigest()
    if blobs is None:
        blobs = [f"rlib of {crate} {key}".encode()]
    recorded = []
    for i, data in enumerate(blobs):
        digest, _ = store.put_blob_bytes(data)
        name, kind = files[i] if files else (f"lib{crate}-{i}.rlib", "link")
        recorded.append({"name": name, "hash": digest, "size": len(data), "kind": kind})
    meta: dict[str, Any] = {"files": recorded, "stdout": "", "stderr": stderr,
                            "emit": emit or ["dep-info", "link", "metadata"],
                            "components": components or {}, "target_dir": True}
    if package is not None:
        meta["package"] = package
    if args is not None:
        meta["args"] = args
    entry = Entry(key=key, crate_name=crate, crate_types=crate_types, target=target, profile=profile,
                  size=sum(len(b) for b in blobs), created=created, last_used=last_used, hits=hits,
                  compile_ms=compile_ms, key_version=1, mkey=mkey or key[::-1], meta=meta)
    store.add(entry, inputs or {"files": [], "env": []})
    return entry


def add_seeded_entry(root: str | Path, crate: str, seed: str, mkey: str | None = None) -> str:
    """A minimal local entry (one blob) in the store at ``root``; returns its key."""
    store = Store(str(root))
    try:
        now = time.time()
        return add_entry(store, crate, blobs=[f"rlib of {crate} {seed}".encode()], key=hexkey("key " + seed),
                         mkey=mkey or hexkey("mkey " + seed), created=now, last_used=now, compile_ms=5,
                         files=[(f"lib{crate}.rlib", "link")], emit=["link"],
                         inputs={"files": [["${WS}/src/lib.rs", "a" * 64]], "env": []}).key
    finally:
        store.close()


def add_wrapper_entry(store: Store, crate: str, *, seed: str | None = None, mkey: str | None = None,
                      blobs: list[bytes] | None = None, created: float | None = None,
                      package: str | None = None) -> Entry:
    """A local entry shaped like the wrapper's: an .rlib, an .rmeta and a .d, with a
    manifest line naming one source file; ``package`` the cargo package recorded."""
    seed = seed or f"{crate}-{time.perf_counter_ns()}"
    if blobs is None:
        blobs = [f"rlib of {crate} {seed}".encode() * 50, f"rmeta of {crate} {seed}".encode(),
                 f"/deps/lib{crate}.rlib: ${{WS}}/src/lib.rs\n".encode()]
    shapes = [(f"lib{crate}-0123.rlib", "link"), (f"lib{crate}-0123.rmeta", "link"), (f"{crate}-0123.d", "depinfo")]
    files = [shapes[i] if i < 3 else (f"extra{i}", shapes[i % 3][1]) for i in range(len(blobs))]
    now = time.time() if created is None else created
    return add_entry(store, crate, blobs=blobs, key=hexkey("key " + seed), mkey=mkey or hexkey("mkey " + seed),
                     created=now, last_used=now, hits=4, compile_ms=321, files=files,
                     stderr=f"warning from {crate}\n",
                     components={"version": "1" * 16, "source:${WS}/src/lib.rs": "2" * 16},
                     inputs={"files": [["${WS}/src/lib.rs", blake(f"source of {crate} {seed}".encode())]],
                             "env": [["KC_GREETING", None, False]]},
                     package=package)


def event(store_root: str, outcome: str, crate: str = "foo", *, t: float | None = None, **fields: Any) -> None:
    """Append one event (``outcome`` for ``crate``, 5 ms) to the store's event log."""
    ev: dict[str, Any] = {"t": time.time() if t is None else t, "crate": crate, "outcome": outcome, "ms": 5.0}
    ev.update(fields)
    events.append(store_root, ev)
