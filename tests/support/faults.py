"""Helpers of the fault-injection suite over real cargo builds.

* :func:`prepare_store` — a store that already holds every cacheable unit of the fixture,
  built once per session; ``seed_store`` copies it, so a test starts "warm" in
  milliseconds instead of a cold build.
* :class:`Faults` — the environment that makes every kache process of one build patch
  itself with ``tests/faults/inject/sitecustomize.py``, and the log of faults that really
  fired (each one counted as "faults injected").
* ``kache_cli`` / :func:`doctor` / :func:`gc_later` — the real CLI on a workspace's store;
  ``gc_later`` runs ``kache gc`` with its clock moved on (gc spares temp files and orphan
  blobs younger than an hour: they may belong to a build that is still recording).
* :func:`check_served` — every output a build restored from the store has exactly the
  bytes of the blob it came from (an artifact check each).

Fixtures built from these (``prepared_store``, ``fault_ws``, ``faults``, ``tmpfs``):
tests/faults/conftest.py.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from kache.store.blobs import hash_file
from kache.store.store import Entry, Store
from tests.support import reliability
from tests.support.env import ROOT, clean_environ, kache_executable
from tests.support.workspace import Workspace, make_workspace

INJECT = ROOT / "tests" / "faults" / "inject"


def prepare_store(base: Path) -> Path:
    """A store under ``base`` holding every cacheable unit of the fixture (one cold build,
    then ``cargo clean``), its event log removed; built outside any test's environment."""
    home = base / "home"
    (home / ".cargo").mkdir(parents=True)
    with clean_environ(), pytest.MonkeyPatch.context() as mp:
        mp.setenv("HOME", str(home))
        mp.setenv("XDG_CONFIG_HOME", str(home / ".config"))
        mp.setenv("XDG_CACHE_HOME", str(home / ".cache"))
        mp.setenv("CARGO_HOME", str(home / ".cargo"))
        ws = make_workspace(base, kache_executable())
        ws.build()
        ws.verify_app()
        ws.clean()
    (ws.store / "events.jsonl").unlink()
    return ws.store


def seed_store(prepared: Path, store: Path) -> None:
    """Copy the prepared store to ``store`` (which may exist, e.g. a mount point)."""
    shutil.copytree(prepared, store, symlinks=True, dirs_exist_ok=True)


@dataclass
class Faults:
    """Fault injection for the kache processes of one build (see inject/sitecustomize.py)."""

    log: Path
    _seen: int = 0

    def env(self, spec: str, **extra: str) -> dict[str, str]:
        """Environment for ``ws.build(**faults.env("kill:after:kache.store.blobs:put_file"))``."""
        return {"PYTHONPATH": str(INJECT), "KACHE_TEST_FAULTS": spec, "KACHE_TEST_FAULTS_LOG": str(self.log),
                **extra}

    def take_fired(self) -> list[str]:
        """``<pid> <spec>`` of each fault that fired since the last call; each one is
        counted as "faults injected"."""
        lines = self.log.read_text().splitlines() if self.log.exists() else []
        new = lines[self._seen:]
        self._seen = len(lines)
        if new:
            reliability.count("faults injected", len(new))
        return new


def kache_cli(ws: Workspace, *args: str, clock_offset: float = 0.0,
              **extra_env: str) -> subprocess.CompletedProcess[str]:
    """Run the real ``kache`` CLI on the workspace's store (no faults injected)."""
    env = {**os.environ, **ws.env, **extra_env}
    if clock_offset:
        env.update(PYTHONPATH=str(INJECT), KACHE_TEST_CLOCK_OFFSET=str(clock_offset))
    return subprocess.run([ws.kache, *args], cwd=ws.path, env=env, capture_output=True, text=True, timeout=300)


def doctor(ws: Workspace, *args: str) -> dict[str, dict[str, str]]:
    """``kache doctor --json``: check name → {status, detail, fix}."""
    out = kache_cli(ws, "doctor", "--json", *args)
    assert out.stdout, out.stderr
    doc = json.loads(out.stdout)
    checks = {c["name"]: c for c in doc["checks"]}
    if args:
        checks["fixed"] = {"status": "", "detail": "; ".join(doc.get("fixed", [])), "fix": ""}
    return checks


def index_check(ws: Workspace) -> dict[str, str]:
    """Doctor's "store index" check, run in this process (the same function ``kache
    doctor`` runs, without starting one)."""
    from kache.doctor import check_index

    return check_index(str(ws.store)).to_json()


def gc_later(ws: Workspace, hours: float = 2.0, **extra_env: str) -> dict[str, int]:
    """``kache gc --json`` as it would run ``hours`` from now (the store untouched
    meanwhile), when leftovers of a crash count as left over."""
    out = kache_cli(ws, "gc", "--json", clock_offset=hours * 3600, **extra_env)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def store_problems(ws: Workspace, *, verify_hashes: bool = True) -> list[str]:
    """``Store.check``: what is wrong with the store (every blob re-hashed)."""
    store = Store(str(ws.store), create=False)
    try:
        return store.check(verify_hashes=verify_hashes)
    finally:
        store.close()


def entry_problems(ws: Workspace) -> list[str]:
    """Store problems that concern entries (an entry whose blob is missing or damaged),
    i.e. everything but orphans: what a build could be served wrongly."""
    return [p for p in store_problems(ws) if not p.endswith("orphan blob(s) no entry uses")]


def leftovers(ws: Workspace) -> tuple[list[str], list[Path]]:
    """(orphan blobs, temp files of unfinished puts) in the store."""
    store = Store(str(ws.store), create=False)
    try:
        orphans = store.integrity.orphan_blobs()
    finally:
        store.close()
    return orphans, sorted((ws.store / "tmp").glob("put-*"))


def referenced(ws: Workspace, digest: str) -> bool:
    store = Store(str(ws.store), create=False)
    try:
        return any(h == digest for _, h, _ in store.blob_refs())
    finally:
        store.close()


def store_entries(ws: Workspace) -> list[Entry]:
    store = Store(str(ws.store), create=False)
    try:
        return store.entries()
    finally:
        store.close()


def check_served(ws: Workspace, events: list[dict], entries: list[Entry] | None = None) -> int:
    """Every output restored by a hit among ``events`` has the bytes of its blob's hash
    (dep-info excepted: it is rewritten for the checkout). ``entries`` are the store's
    entries, read now unless given (e.g. read before the index was damaged). Returns
    the files checked."""
    hits = [e for e in events if e.get("outcome") in ("local_hit", "remote_hit", "prefetch_hit")]
    if not hits:
        return 0
    by_prefix = {e.key[:16]: e for e in (store_entries(ws) if entries is None else entries)}
    checked = 0
    for hit in hits:
        entry = by_prefix.get(hit.get("key", ""))
        if entry is None:  # removed since (e.g. its blob was damaged later): nothing to compare
            continue
        for f in entry.meta["files"]:
            if f["kind"] == "depinfo":
                continue
            found = list(ws.target.rglob(f["name"]))
            assert found, f"{f['name']} of {entry.crate_name} was restored but is not in target/"
            for path in found:
                reliability.count("artifacts checked")
                checked += 1
                if hash_file(str(path))[0] != f["hash"]:
                    reliability.count("wrong artifacts served")
                    raise AssertionError(f"{path} does not have the bytes of blob {f['hash'][:16]}")
    return checked
