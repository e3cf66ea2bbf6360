"""Shared helpers of the fault-injection suite over real cargo builds.

* :func:`new_workspace` — a copy of tests/fixtures/ws built through kache with a
  counting rustc (the e2e ``Workspace``), with its store wherever the test wants it.
* ``prepared_store`` — a store that already holds every cacheable unit of the fixture,
  built once per session; ``seed_store`` copies it, so a test starts "warm" in
  milliseconds instead of a cold build.
* :class:`Faults` — the environment that makes every kache process of one build patch
  itself with ``tests/faults/inject/sitecustomize.py``, and the log of faults that really
  fired (each one counted as "faults injected").
* ``kache_cli`` / :func:`doctor` / :func:`gc_later` — the real CLI on a workspace's store;
  ``gc_later`` runs ``kache gc`` with its clock moved on (gc spares temp files and orphan
  blobs younger than an hour: they may belong to a build that is still recording).
* ``tmpfs`` — mounts a small tmpfs (real ENOSPC, real EROFS), unmounted at teardown;
  returns False where mounting is not allowed, so a test can fall back to injection.
* :func:`check_served` — every output a build restored from the store has exactly the
  bytes of the blob it came from (an artifact check each).

No fixture here is autouse: tests/faults holds other helpers' modules too.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from kache.store.blobs import hash_file
from kache.store.store import Entry, Store
from tests import reliability
from tests.conftest import FIXTURES
from tests.e2e.conftest import Workspace, make_counting_rustc

INJECT = Path(__file__).resolve().parent / "inject"
_SCRUBBED = ("KACHE_", "RUSTC_WRAPPER", "RUSTC_WORKSPACE_WRAPPER", "CARGO_", "AWS_", "XDG_")


def kache_executable() -> str:
    exe = Path(sys.executable).with_name("kache")
    found = str(exe) if exe.exists() else shutil.which("kache")
    if found is None:
        pytest.fail("the kache console script is not installed; run `pip install -e .`")
    return found


def new_workspace(base: Path, kache: str, store: Path | None = None) -> Workspace:
    """A fresh copy of the fixture under ``base`` whose builds go through kache into
    ``store`` (default ``base/store``), with its own counting rustc."""
    path = base / "ws"
    shutil.copytree(FIXTURES / "ws", path)
    store = store or base / "store"
    log = base / "rustc.log"
    rustc = make_counting_rustc(base / "toolchain", log)
    ws = Workspace(path, store, kache, log)
    ws.env = {"RUSTC_WRAPPER": kache, "RUSTC": str(rustc), "KACHE_CACHE_DIR": str(store),
              "PYTHONDONTWRITEBYTECODE": ""}
    return ws


@pytest.fixture(scope="session")
def prepared_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store holding every cacheable unit of the fixture (one cold build, then
    ``cargo clean``), its event log removed. Copy it with :func:`seed_store`; never
    write to it."""
    base = tmp_path_factory.mktemp("faults-prepared")
    home = base / "home"
    (home / ".cargo").mkdir(parents=True)
    rustup_home = os.environ.get("RUSTUP_HOME", os.path.expanduser("~/.rustup"))
    with pytest.MonkeyPatch.context() as mp:  # the session fixture runs outside clean_env
        for name in list(os.environ):
            if name.startswith(_SCRUBBED):
                mp.delenv(name)
        mp.setenv("HOME", str(home))
        mp.setenv("XDG_CONFIG_HOME", str(home / ".config"))
        mp.setenv("XDG_CACHE_HOME", str(home / ".cache"))
        mp.setenv("CARGO_HOME", str(home / ".cargo"))
        if os.path.isdir(rustup_home):
            mp.setenv("RUSTUP_HOME", rustup_home)
        ws = new_workspace(base, kache_executable())
        ws.build()
        ws.verify_app()
        ws.clean()
    (ws.store / "events.jsonl").unlink()
    return ws.store


def seed_store(prepared: Path, store: Path) -> None:
    """Copy the prepared store to ``store`` (which may exist, e.g. a mount point)."""
    shutil.copytree(prepared, store, symlinks=True, dirs_exist_ok=True)


@pytest.fixture
def fault_ws(tmp_path: Path, kache_exe: str, request: pytest.FixtureRequest) -> Callable[..., Workspace]:
    """``fault_ws(warm=…, store=…)``: a workspace of this test; ``warm`` seeds its store
    (default ``tmp_path/store``) from ``prepared_store``. target/ is empty either way."""

    def make(*, warm: bool = False, store: Path | None = None) -> Workspace:
        ws = new_workspace(tmp_path, kache_exe, store)
        if warm:
            seed_store(request.getfixturevalue("prepared_store"), ws.store)
        return ws

    return make


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


@pytest.fixture
def faults(tmp_path: Path) -> Faults:
    return Faults(tmp_path / "faults.log")


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


@pytest.fixture
def tmpfs() -> Iterator[Callable[..., bool]]:
    """``tmpfs(path, size="4m")`` mounts a tmpfs there (True) or says it cannot (False);
    ``tmpfs.remount(path, "ro")``. Everything mounted is unmounted at teardown."""
    mounted: list[Path] = []

    def mount(path: Path, size: str = "4m") -> bool:
        path.mkdir(parents=True, exist_ok=True)
        out = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)],
                             capture_output=True, text=True, check=False)
        if out.returncode != 0:
            return False
        mounted.append(path)
        return True

    def remount(path: Path, mode: str) -> bool:
        return subprocess.run(["mount", "-o", f"remount,{mode}", str(path)], capture_output=True,
                              check=False).returncode == 0

    mount.remount = remount  # type: ignore[attr-defined]
    yield mount
    for path in reversed(mounted):
        subprocess.run(["umount", str(path)], capture_output=True, check=False)
        if os.path.ismount(path):
            subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)
