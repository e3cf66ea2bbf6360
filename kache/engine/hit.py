"""Serving a hit: look up, restore, stamp, write the event — in the wrapper or the daemon.

:func:`restore_hit` is the hit itself, shared by both ways a call is served:
:func:`try_hit` in the wrapper's own process (it prints rustc's recorded messages) and
:func:`serve_hit` in the daemon (it returns them for the wrapper to print).
"""

from __future__ import annotations

import os
import time

TYPE_CHECKING = False  # typing costs ~11 ms to import; annotations are strings here

from kache.engine import argv as argvmod
from kache.engine import incremental, restore
from kache.engine.call import prepare
from kache.engine.decide import decide
from kache.engine.notices import warn_once, write_replay
from kache.store.store import DamagedBlob, Store, StoreError, sqlite3

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from typing import Protocol

    from kache.engine.call import PreparedCall
    from kache.settings import Settings
    from kache.store.store import Entry
else:
    Protocol = object  # RemoteAsks is a Protocol to the type checker only

__all__ = ["RemoteAsks", "prepare_call", "restore_hit", "try_hit", "serve_hit",
           "recovered_damaged_index", "warn_recovered"]


class RemoteAsks(Protocol):
    """What the engine asks of the remote, through whoever reaches it (the wrapper passes
    :mod:`kache.wrapper.daemon_remote`, which asks the daemon). Documentation of the
    interface; any object with these functions will do."""

    def enabled(self, settings: Settings) -> bool: ...
    def announce(self, c: PreparedCall, settings: Settings) -> None: ...
    def check(self, c: PreparedCall, settings: Settings) -> bool: ...
    def queue_upload(self, c: PreparedCall, key: str, settings: Settings) -> None: ...
    def note_use(self, store_root: str, key: str, crate: str, settings: Settings) -> None: ...


def prepare_call(call: argvmod.RustcCall, argv: list[str], store: Store, env: Mapping[str, str],
                 settings: Settings, snapshots: bool, cwd: str | None = None) -> PreparedCall:
    """The call's cheap key under these settings (raises :class:`~kache.engine.call.Uncacheable`
    or what the store raises)."""
    c = prepare(call, argv, store, env, settings["cache.extra_inputs"] or {}, settings["cache.key_salt"] or "",
                cwd=cwd)
    c.snapshots = snapshots
    return c


def restore_hit(c: PreparedCall) -> tuple[Entry, int, bool] | None:
    """Look up and restore: (entry, bytes restored, whether its incremental session was
    restored too), or None on a miss. Prints nothing; raises what the store raises."""
    entry = restore.look_up(c)
    if entry is None:
        return None
    size = restore.restore(c, entry)
    snapshot = c.snapshots and incremental.restore_snapshot(c, entry)
    with c.store.transaction():
        c.store.touch(entry.key)
        c.store.stamp_blobs(f["hash"] for f in entry.meta["files"])
        c.hasher.flush()
    return entry, size, snapshot


def hit_event(c: PreparedCall, started: float, outcome: str, entry: Entry, size: int, snapshot: bool,
              via: str | None = None) -> str:
    """Write the hit's event; its outcome (``prefetch_hit`` / ``remote_hit`` for the
    first hit of an entry a prefetch / a fetch brought)."""
    ms = (time.monotonic() - started) * 1000
    if outcome == "local_hit" and entry.hits == 0:
        origin = entry.meta.get("origin")
        if origin == "prefetch":
            outcome = "prefetch_hit"  # the daemon brought it before this build asked
        elif origin == "remote":
            # A fetch brought it for a call that did not hear back (its daemon died after
            # the import, or it stopped waiting): its first use is still the remote's hit.
            outcome = "remote_hit"
    c.event(outcome, started, bytes=size, key=entry.key[:16], saved_ms=max(0, round(entry.compile_ms - ms)),
            incremental="restored" if snapshot else None, via=via)
    return outcome


def recovered_damaged_index(store: Store, e: BaseException) -> bool:
    """When ``e`` says the index file is damaged (it opened, then a query found it
    malformed), move it aside so the next calls start a new one; True if it was."""
    from kache.store.store import is_damage

    if not is_damage(e):
        return False
    try:
        if not store.recover_if_corrupt():
            return False
    except Exception:  # noqa: BLE001 - recovery is best effort; this call compiles anyway
        return False
    warn_recovered(store)
    return True


def warn_recovered(store: Store) -> None:
    """Say (once) where a damaged index went: found at open or by a query, by this call."""
    warn_once(f"the cache index was corrupt; moved it aside to {store.recovered} and started a new one",
              suffix="", store=store.root)


def try_hit(c: PreparedCall, started: float, remote: RemoteAsks, settings: Settings, outcome: str = "local_hit") -> bool:
    """The wrapper's hit: restore, replay rustc's messages, write the event; False on a
    miss or when the entry could not be restored (reported; the caller compiles)."""
    try:
        found = restore_hit(c)
    except DamagedBlob as e:
        try:
            c.store.drop_damaged(e.digest)
        except (StoreError, sqlite3.Error, OSError):
            pass
        warn_once(f"the cached {c.crate} was damaged ({e}); removed it and compiling", suffix="", store=c.store.root)
        return False
    except (StoreError, sqlite3.Error, OSError, ValueError) as e:
        if not recovered_damaged_index(c.store, e):
            warn_once(f"cache hit for {c.crate} could not be restored ({e}); compiling", suffix="",
                      store=c.store.root)
        return False
    if found is None:
        return False
    entry, size, snapshot = found
    write_replay(*restore.replay_texts(c, entry.meta))
    if hit_event(c, started, outcome, entry, size, snapshot) == "prefetch_hit" and remote.enabled(settings):
        try:  # the remote object is in use (the daemon records it there; a fetch records its own)
            remote.note_use(c.store.root, entry.key, c.crate, settings)
        except Exception:  # noqa: BLE001 - bookkeeping for the remote's gc only
            pass
    return True


def serve_hit(argv: list[str], env: Mapping[str, str], cwd: str, store_root: str,
              started: float, umask: int | None = None, *, store: Store | None = None,
              settings: Settings | None = None,
              on_prefetch_hit: Callable[[str, str, Settings], None] | None = None) -> tuple[str, str] | None:
    """A plain local hit served whole, for the daemon (op ``hit``, sent by
    :mod:`kache.wrapper.daemon_hit`): the outputs restored into the caller's target dir,
    the entry touched, the event written (``via: daemon``), files it creates given the
    modes the caller's ``umask`` gives (the daemon runs under 077); returns rustc's messages for
    the caller to print. None for anything else (a miss, a passthrough, a setting or a
    problem the wrapper must see and report itself): the wrapper then takes its own path,
    which looks up again. Never raises. ``store``: an open store of ``store_root`` to
    use and leave open (the daemon keeps a few); it is closed after an error. ``settings``:
    the caller's, when the daemon has read them already (``load_checked(env)``).
    ``on_prefetch_hit(key, crate, settings)``: called for the first hit of an entry a
    prefetch brought (the daemon records the use on the remote).
    """
    from kache.settings import load_checked

    if not argv or not os.path.isabs(argv[0]) or any(a.startswith("@") for a in argv):
        return None  # a relative compiler or an @argfile would be read relative to the caller
    if len(argv) > 1 and argv[1][:1] not in ("-", "/"):
        return None  # a workspace wrapper's compiler by name (or a relative path): the wrapper finds it
    own = store is None
    try:
        call = argvmod.parse(argv, env)
        if settings is None:
            settings = load_checked(env)
        plan = decide(call, settings, env)
        if plan.passthrough is not None or plan.clean_incremental or not plan.look_up:
            return None  # the wrapper passes through, removes stale state first, or recompiles
        if store is None:
            store = Store(store_root, create=False)
        c = prepare_call(call, argv, store, env, settings, plan.snapshots, cwd)
        c.umask = umask
        found = restore_hit(c)
        if found is None:
            return None
        entry, size, snapshot = found
        if call.incremental:
            incremental.note(c, call.incremental)
        if hit_event(c, started, "local_hit", entry, size, snapshot, via="daemon") == "prefetch_hit":
            if on_prefetch_hit is not None:
                on_prefetch_hit(entry.key, c.crate, settings)
        return restore.replay_texts(c, entry.meta)
    except Exception:  # noqa: BLE001 - the wrapper's own path decides and reports
        if store is not None:
            store.close()  # a connection that failed is not used again (a kept one reopens)
        return None
    finally:
        if own and store is not None:
            store.close()
