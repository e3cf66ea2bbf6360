"""``kache sync``: pull what a workspace needs from the remote, push what is only local.

Pull lists the remote archives of the crates in the workspace's ``Cargo.lock`` (all
crates with ``all_crates``) — one delimited listing finds which crates the remote has,
then one listing per wanted crate — and downloads and imports (origin ``prefetch``)
each archive whose key the local store lacks. Push lists, once per crate that has
local entries, what the remote holds, and uploads each local entry it lacks; a local
entry whose archive is there but whose cheap key has no ``_mkeys`` object in the listing
(an upload cut short between the two) is announced again, so builds elsewhere find it.
Transfers run in a thread pool; each worker thread opens its own :class:`Store` (an
SQLite connection is not shared by threads that write).

Cargo.lock names packages (``proc-macro2``), rustc names crates (``proc_macro2``): names
are mapped ``-`` → ``_``. Build scripts are compiled as crates ``build_script_build``
(or ``build_script_main``), always wanted. A ``[lib] name`` that differs from the
package name is not in Cargo.lock: such a crate is pulled only with ``all_crates``.

A bad object (a name that does not fit the layout, an archive that fails the checks of
kache.remote.archive) is skipped and reported, never stored. Network and store errors
are failures: the report's ``ok`` is False.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from kache.errors import KacheError
from kache.remote.archive import ArchiveError, valid_crate_name, valid_key
from kache.remote.s3 import BadObject, RemoteArchive, RemoteError
from kache.store.store import Store, StoreError

if TYPE_CHECKING:
    from collections.abc import Iterable

    from kache.remote.s3 import Remote

__all__ = ["SyncError", "SyncReport", "Transfer", "Skipped", "Progress", "sync", "lock_crates",
           "find_workspace_root", "BUILD_SCRIPT_CRATES"]

BUILD_SCRIPT_CRATES = frozenset({"build_script_build", "build_script_main"})


class SyncError(KacheError):
    """Sync cannot start (no Cargo.lock, an unreadable one)."""


# --------------------------------------------------------------------------- Cargo.lock


def find_workspace_root(start: Path) -> Path | None:
    """The nearest directory at or above ``start`` that holds a ``Cargo.lock``."""
    here = Path(start).resolve()
    for d in (here, *here.parents):
        if (d / "Cargo.lock").is_file():
            return d
    return None


def lock_crates(workspace_root: Path) -> dict[str, int]:
    """rustc crate names of every package in ``Cargo.lock``, plus the build-script crates,
    each with its depth in the dependency graph (0: depends on nothing; the build scripts
    too): cargo compiles in about that order, so a pull in it brings first what a build
    asks for first."""
    import tomllib

    path = Path(workspace_root) / "Cargo.lock"
    try:
        with open(path, "rb") as f:
            doc = tomllib.load(f)
    except FileNotFoundError:
        raise SyncError(f"reading Cargo.lock failed: {path}: it does not exist") from None
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise SyncError(f"reading Cargo.lock failed: {path}: {e}") from None
    deps: dict[str, set[str]] = {}
    for pkg in doc.get("package", []) or []:
        name = pkg.get("name") if isinstance(pkg, dict) else None
        if isinstance(name, str) and name:
            listed = pkg.get("dependencies") or []
            deps.setdefault(name.replace("-", "_"), set()).update(
                d.split(" ", 1)[0].replace("-", "_") for d in listed if isinstance(d, str) and d)
    depth: dict[str, int] = dict.fromkeys(BUILD_SCRIPT_CRATES, 0)

    def walk(name: str, seen: frozenset[str]) -> int:
        if name in depth:
            return depth[name]
        below = [walk(d, seen | {name}) for d in deps.get(name, ()) if d in deps and d not in seen]
        depth[name] = 1 + max(below) if below else 0
        return depth[name]

    for name in sorted(deps):
        walk(name, frozenset())
    return depth


# --------------------------------------------------------------------------- report


@dataclass
class Transfer:
    """One object moved (or, in a dry run, that would move)."""

    crate: str
    key: str
    size: int
    """Bytes on the wire (archive size); for a push in a dry run, the entry's size."""
    package: str | None = None
    """The cargo package of a local entry (recorded in its meta): a build script's is
    shown by it (:func:`kache.store.listing.display_name`)."""

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"crate": self.crate, "key": self.key, "size": self.size}
        if self.package is not None:
            doc["package"] = self.package
        return doc


@dataclass
class Skipped:
    """Something not transferred, and why.

    ``reason``: ``bad-archive``, ``bad-name``, ``not-shareable`` (a local entry without
    its manifest line), ``gone`` (deleted meanwhile) or, for failures, ``error``.
    """

    what: str
    reason: str
    message: str

    def __str__(self) -> str:
        return self.message

    def to_json(self) -> dict[str, Any]:
        return {"what": self.what, "reason": self.reason, "message": self.message}


@dataclass
class SyncReport:
    """What a sync moved, skipped and failed to move."""

    pull: bool
    push: bool
    dry_run: bool
    crates: int | None = None
    """How many crate names the pull wanted (None: every crate): the packages' and the
    build scripts' (BUILD_SCRIPT_CRATES)."""
    packages: int | None = None
    """How many packages the workspace's Cargo.lock lists (None: every crate wanted)."""
    pulled: list[Transfer] = field(default_factory=list)
    pushed: list[Transfer] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    failures: list[Skipped] = field(default_factory=list)
    pull_up_to_date: int = 0
    """Remote archives of the wanted crates the local store already had."""
    push_up_to_date: int = 0
    """Local entries the remote already had."""
    announced: int = 0
    """Of those, entries whose ``_mkeys`` object was missing and has been written."""

    @property
    def pulled_bytes(self) -> int:
        return sum(t.size for t in self.pulled)

    @property
    def pushed_bytes(self) -> int:
        return sum(t.size for t in self.pushed)

    @property
    def ok(self) -> bool:
        return not self.failures

    def to_json(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "pull": None if not self.pull else {
                "packages": self.packages, "crates": self.crates, "objects": len(self.pulled), "bytes": self.pulled_bytes,
                "up_to_date": self.pull_up_to_date, "entries": [t.to_json() for t in self.pulled]},
            "push": None if not self.push else {
                "objects": len(self.pushed), "bytes": self.pushed_bytes, "up_to_date": self.push_up_to_date,
                "announced": self.announced,
                "entries": [t.to_json() for t in self.pushed]},
            "skipped": [s.to_json() for s in self.skipped],
            "failures": [s.to_json() for s in self.failures],
            "ok": self.ok,
        }


class Progress(Protocol):
    """Told about transfers, always from the thread that called :func:`sync`."""

    def start(self, phase: str, objects: int, nbytes: int) -> None:
        """A phase (``pull`` or ``push``) begins: this many objects, about this many bytes."""

    def advance(self, phase: str, nbytes: int) -> None:
        """One object of the phase is done (moved, skipped or failed)."""

    def finish(self, phase: str) -> None:
        """The phase is over."""


# --------------------------------------------------------------------------- sync


class _ThreadStores:
    """One Store per worker thread on the same root; all closed at the end."""

    def __init__(self, root: str) -> None:
        self.root = root
        self._local = threading.local()
        self._all: list[Store] = []
        self._lock = threading.Lock()

    def get(self) -> Store:
        s = getattr(self._local, "store", None)
        if s is None:
            s = self._local.store = Store(self.root)
            with self._lock:
                self._all.append(s)
        return s

    def close(self) -> None:
        for s in self._all:
            s.close()


def sync(store: Store, remote: Remote, *, pull: bool = True, push: bool = True, all_crates: bool = False,
         workspace: Path | None = None, dry_run: bool = False, concurrency: int = 8,
         progress: Progress | None = None) -> SyncReport:
    """Pull (the crates of ``workspace``'s Cargo.lock, or all), then push; see the module.

    Raises SyncError when a pull needs a Cargo.lock and none is given, and RemoteError
    when the remote cannot even be listed. Per-object problems go into the report.
    """
    if pull and not all_crates and workspace is None:
        raise SyncError("sync failed: no workspace: pulling needs a Cargo.lock to choose crates "
                        "(or all_crates)")
    report = SyncReport(pull=pull, push=push, dry_run=dry_run)
    stores = _ThreadStores(store.root)
    listed = _Listing()
    try:
        with ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="kache-sync") as pool:
            if pull:
                assert all_crates or workspace is not None
                wanted = None if all_crates or workspace is None else lock_crates(workspace)
                report.crates = None if wanted is None else len(wanted)
                report.packages = None if wanted is None else len(wanted.keys() - BUILD_SCRIPT_CRATES)
                _pull(store, remote, pool, stores, wanted, listed, report, progress)
            if push:
                _push(store, remote, pool, stores, listed, report, progress)
    finally:
        stores.close()
    return report


class _Listing:
    """What the remote holds, per crate, as far as listed; shared by pull and push.

    ``present`` is the set of crates the remote has a folder for (None: not asked);
    ``complete`` means every crate was listed; ``mkeys`` holds ``(crate, cheap key)`` of
    the ``_mkeys`` objects seen in the listings.
    """

    def __init__(self) -> None:
        self.crates: dict[str, dict[str, RemoteArchive]] = {}
        self.mkeys: set[tuple[str, str]] = set()
        self.present: set[str] | None = None
        self.complete = False

    def keys(self, crate: str) -> dict[str, RemoteArchive]:
        return self.crates.get(crate, {})

    def fill(self, remote: Remote, pool: ThreadPoolExecutor, crates: Iterable[str],
             report: SyncReport) -> None:
        """List each crate not known yet (one LIST per crate, in parallel)."""
        if self.complete:
            return
        if self.present is None:
            self.present = set(remote.list_crates())
        todo = sorted(c for c in set(crates) if c not in self.crates and c in self.present)
        futures = {pool.submit(remote.list_archives, c, mkeys=self.mkeys): c for c in todo}
        for fut, crate in futures.items():
            good, bad = fut.result()  # a RemoteError here: the remote cannot be listed at all
            self.crates[crate] = {a.key: a for a in good}
            _report_bad(bad, report)

    def fill_all(self, remote: Remote, report: SyncReport) -> None:
        """List every crate (one paginated listing of the prefix)."""
        good, bad = remote.list_archives(mkeys=self.mkeys)
        _report_bad(bad, report)
        for a in good:
            self.crates.setdefault(a.crate, {})[a.key] = a
        self.complete = True


def _report_bad(bad: Iterable[BadObject], report: SyncReport) -> None:
    for b in bad:
        report.skipped.append(Skipped(b.name, "bad-name", f"skipped remote object: {b.name}: {b.why}"))


def _pull(store: Store, remote: Remote, pool: ThreadPoolExecutor, stores: _ThreadStores,
          wanted: Mapping[str, int] | set[str] | None, listed: _Listing, report: SyncReport,
          progress: Progress | None) -> None:
    if wanted is None:
        listed.fill_all(remote, report)
    else:
        listed.fill(remote, pool, wanted, report)
    have = store.key_crates()
    todo: list[RemoteArchive] = []
    order = wanted if isinstance(wanted, dict) else {}
    for crate in sorted(listed.crates, key=lambda c: (order.get(c, 0), c)):  # as cargo will ask for them
        if wanted is not None and crate not in wanted:
            continue
        for a in sorted(listed.crates[crate].values(), key=lambda a: a.key):
            if a.key in have:
                report.pull_up_to_date += 1
            else:
                todo.append(a)
    if report.dry_run:
        report.pulled.extend(Transfer(a.crate, a.key, a.size) for a in todo)
        return

    def fetch(a: RemoteArchive) -> Transfer | Skipped | None:
        store = stores.get()
        if store.has_key(a.key):  # a build's fetch brought it meanwhile
            return None
        # a.name is archive_name(crate, key): the listing parsed it from that layout.
        # Once per process: a fetch of the same archive at the same time is waited for.
        if remote.fetch_entry(store, a.crate, a.key, origin="prefetch") is None:
            return Skipped(a.name, "gone", f"skipped remote object: {a.name}: deleted while syncing")
        return Transfer(a.crate, a.key, a.size)

    already = _run(pool, "pull", todo, fetch, lambda a: a.size, lambda a: a.name, report.pulled, report, progress)
    report.pull_up_to_date += already


def _push(store: Store, remote: Remote, pool: ThreadPoolExecutor, stores: _ThreadStores,
          listed: _Listing, report: SyncReport, progress: Progress | None) -> None:
    local = store.key_crates()
    by_crate: dict[str, list[str]] = {}
    for key, crate in local.items():
        if not valid_crate_name(crate):
            report.skipped.append(Skipped(
                f"{crate} {key[:16]}", "bad-name",
                f"skipped local entry: {crate!r}: not a valid crate name for the remote"))
            continue
        by_crate.setdefault(crate, []).append(key)
    listed.fill(remote, pool, by_crate, report)
    todo: list[tuple[str, str, int]] = []
    packages: dict[str, str | None] = {}
    unannounced: list[tuple[str, str, int]] = []
    for crate in sorted(by_crate):
        for key in sorted(by_crate[crate]):
            if key in listed.keys(crate):
                report.push_up_to_date += 1
                entry = store.get(key)
                if entry is not None and valid_key(entry.mkey) and (crate, entry.mkey) not in listed.mkeys:
                    unannounced.append((crate, key, 0))
                continue
            if store.manifest_line(key) is None:
                report.skipped.append(Skipped(
                    f"{crate} {key[:16]}", "not-shareable",
                    f"skipped local entry: {crate} {key[:16]}: no manifest line recorded for it"))
                continue
            entry = store.get(key)
            todo.append((crate, key, entry.size if entry is not None else 0))
            package = entry.meta.get("package") if entry is not None else None
            packages[key] = package if isinstance(package, str) else None
    if report.dry_run:
        report.pushed.extend(Transfer(crate, key, size, packages[key]) for crate, key, size in todo)
        return
    if unannounced:
        def announce(item: tuple[str, str, int]) -> Transfer | Skipped:
            crate, key, _ = item
            if not remote.announce(stores.get(), key):
                return Skipped(f"{crate} {key[:16]}", "gone", f"skipped local entry: {crate} {key[:16]}: "
                                                             "deleted while syncing")
            return Transfer(crate, key, 0)

        announced: list[Transfer] = []
        _run(pool, "announce", unannounced, announce, lambda t: 0, lambda t: f"{t[0]} {t[1][:16]}", announced,
             report, None)
        report.announced = len(announced)

    def upload(item: tuple[str, str, int]) -> Transfer | Skipped:
        crate, key, _ = item
        size = remote.upload(stores.get(), key, check_exists=False)
        return Transfer(crate, key, size, packages[key])

    _run(pool, "push", todo, upload, lambda t: t[2], lambda t: f"{t[0]} {t[1][:16]}", report.pushed, report,
         progress)


def _run(pool: ThreadPoolExecutor, phase: str, todo: list[Any],
         work: Callable[[Any], Transfer | Skipped | None], size_of: Callable[[Any], int],
         name_of: Callable[[Any], str], done: list[Transfer], report: SyncReport,
         progress: Progress | None) -> int:
    """Run ``work`` over ``todo`` in the pool; sort each outcome into the report. Returns
    how many items needed nothing (``work`` gave None)."""
    nothing = 0
    if progress is not None:
        progress.start(phase, len(todo), sum(size_of(t) for t in todo))
    pending: dict[Future[Transfer | Skipped | None], Any] = {pool.submit(work, t): t for t in todo}
    try:
        while pending:
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in finished:
                item = pending.pop(fut)
                name = name_of(item)
                try:
                    result = fut.result()
                except ArchiveError as e:
                    report.skipped.append(Skipped(name, "bad-archive", str(e)))
                except (RemoteError, StoreError, OSError) as e:
                    report.failures.append(Skipped(name, "error", str(e)))
                except Exception as e:  # noqa: BLE001 - one object's bug must not stop the others
                    report.failures.append(Skipped(name, "error", f"{phase} failed: {name}: "
                                                                  f"{type(e).__name__}: {e}"))
                else:
                    if result is None:
                        nothing += 1
                    elif isinstance(result, Skipped):
                        report.skipped.append(result)
                    else:
                        done.append(result)
                if progress is not None:
                    progress.advance(phase, size_of(item))
    finally:
        for fut in pending:
            fut.cancel()
        if progress is not None:
            progress.finish(phase)
    done.sort(key=lambda t: (t.crate, t.key))
    return nothing
