"""The decision flow of one rustc call that settings allow kache to handle."""

from __future__ import annotations

import os
import time

from kache.settings import Settings, env_flag
from kache.store.connection import StoreError, is_damage, sqlite3
from kache.store.integrity import DamagedBlob
from kache.store.store import Entry, Store
from kache.wrapper import argv as argvmod
from kache.wrapper import cache, remote

__all__ = ["handle", "serve_hit"]

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping


def handle(call: argvmod.RustcCall, argv: list[str], settings: Settings, started: float) -> int:
    from kache.wrapper import exec_compiler, unlink_shared_outputs_quietly, warn_once

    env = os.environ
    store = Store(settings.get("cache.local_store"))
    reason = argvmod.passthrough_reason(call, bool(settings["cache.cache_executables"]))
    if reason is not None:
        unlink_shared_outputs_quietly(call)
        _passthrough_event(store, call, reason, started)
        return exec_compiler(argv)

    for attempt in (1, 2):
        try:
            c = _prepare(call, argv, store, env, settings)
            break
        except cache.Uncacheable as e:
            unlink_shared_outputs_quietly(call)
            _passthrough_event(store, call, str(e), started)
            return exec_compiler(argv)
        except (StoreError, sqlite3.Error, OSError) as e:
            if attempt == 1 and is_damage(e):
                # Moved aside by this call or, a moment ago, by a parallel one: either way a
                # new index is in place, and this call can still be cached.
                _recovered_damaged_index(store, e)
                continue
            warn_once(f"cache unavailable ({e})", store=store.root)
            unlink_shared_outputs_quietly(call)
            _passthrough_event(store, call, f"store: {type(e).__name__}", started, outcome="error")
            return exec_compiler(argv)

    if store.recovered:
        warn_once(f"the cache index was corrupt; moved it aside to {store.recovered} and started a new one",
                  suffix="", store=store.root)
    for path in c.missing_inputs:
        warn_once(f"cache.extra_inputs names {path} for {c.crate}, and nothing is there: its changes "
                  "cannot be seen (paths are relative to the directory cargo runs rustc in: the workspace "
                  "root for a member, the package root for any other crate)", suffix="", store=store.root)
    if call.incremental and settings["cache.incremental"] == "drop" and settings["cache.clean_incremental"]:
        _clean_incremental(c, call.incremental)
    elif call.incremental:
        _note_incremental(c, call.incremental)

    recache = env_flag("KACHE_RECACHE")
    if not recache:
        hit = _try_hit(c, started, settings=settings)
        if hit is not None:
            return hit
    use_remote = remote.enabled(settings)
    if use_remote:
        try:
            remote.announce(c, settings)
            if not recache:
                imported = remote.check(c, settings)
                # Look again even when this fetch imported nothing: the daemon's prefetch may
                # have landed the entry since the first look-up (the fetch then finds it
                # already local and reports nothing new). One more index query on a miss.
                hit = _try_hit(c, started, outcome="remote_hit" if imported else "local_hit", settings=settings)
                if hit is not None:
                    return hit
        except Exception as e:  # noqa: BLE001 - the remote is never a reason to fail
            warn_once(f"remote check failed ({type(e).__name__}: {e}); compiling", suffix="", store=store.root)

    lock = cache.KeyLock(store, c.mkey)
    try:
        locked = lock.acquire()
    except OSError as e:  # a store that cannot be written (read-only, full, gone)
        warn_once(f"cache unavailable ({e})", store=store.root)
        unlink_shared_outputs_quietly(call)
        _passthrough_event(store, call, f"store: {type(e).__name__}", started, outcome="error")
        return exec_compiler(argv)
    try:
        if lock.waited and not recache:  # a twin compile ran meanwhile: take its result
            hit = _try_hit(c, started, settings=settings)
            if hit is not None:
                return hit
        return _compile(c, started, settings, use_remote)
    finally:
        if locked:
            lock.release()


def _prepare(call: argvmod.RustcCall, argv: list[str], store: Store, env: Mapping[str, str], settings: Settings,
             cwd: str | None = None) -> cache.Call:
    """The call's cheap key, under these settings (raises cache.Uncacheable or what the
    store raises); in ``auto`` a workspace crate's incremental session goes with it."""
    c = cache.prepare(call, argv, store, env, settings["cache.extra_inputs"] or {}, settings["cache.key_salt"] or "",
                      cwd=cwd)
    c.snapshots = bool(call.incremental) and settings["cache.incremental"] == "auto"
    return c


def _try_hit(c: cache.Call, started: float, outcome: str = "local_hit", settings: Settings | None = None
             ) -> int | None:
    from kache.wrapper import warn_once, write_replay

    try:
        found = _restore_hit(c)
    except DamagedBlob as e:
        try:
            c.store.drop_damaged(e.digest)
        except (StoreError, sqlite3.Error, OSError):
            pass
        warn_once(f"the cached {c.crate} was damaged ({e}); removed it and compiling", suffix="", store=c.store.root)
        return None
    except (StoreError, sqlite3.Error, OSError, ValueError) as e:
        if not _recovered_damaged_index(c.store, e):
            warn_once(f"cache hit for {c.crate} could not be restored ({e}); compiling", suffix="",
                      store=c.store.root)
        return None
    if found is None:
        return None
    entry, size, snapshot = found
    write_replay(*cache.replay_texts(c, entry.meta))
    if _hit_event(c, started, outcome, entry, size, snapshot) == "prefetch_hit" and settings is not None:
        _note_remote_use(c, entry, settings)
    return 0


def _restore_hit(c: cache.Call) -> tuple[Entry, int, bool] | None:
    """Look up and restore: (entry, bytes restored, whether its incremental session was
    restored too), or None on a miss. Prints nothing; raises what the store raises."""
    entry = cache.look_up(c)
    if entry is None:
        return None
    size = cache.restore(c, entry)
    snapshot = c.snapshots and _restore_snapshot(c, entry)
    with c.store.transaction():
        c.store.touch(entry.key)
        c.store.stamp_blobs(f["hash"] for f in entry.meta["files"])
        c.hasher.flush()
    return entry, size, snapshot


def _hit_event(c: cache.Call, started: float, outcome: str, entry: Entry, size: int, snapshot: bool,
               via: str | None = None) -> str:
    """Write the hit's event; its outcome (``prefetch_hit`` for the first hit of an entry
    a prefetch brought)."""
    ms = (time.monotonic() - started) * 1000
    if outcome == "local_hit" and entry.hits == 0 and entry.meta.get("origin") == "prefetch":
        outcome = "prefetch_hit"  # the daemon brought it before this build asked
    c.event(outcome, started, bytes=size, key=entry.key[:16], saved_ms=max(0, round(entry.compile_ms - ms)),
            incremental="restored" if snapshot else None, via=via)
    return outcome


def _note_remote_use(c: cache.Call, entry: Entry, settings: Settings) -> None:
    """A prefetched entry served its first hit: the remote object is in use (the daemon
    records it there; a fetch on a miss records its own)."""
    if remote.enabled(settings):
        try:
            remote.note_use(c.store.root, entry.key, c.crate, settings)
        except Exception:  # noqa: BLE001 - bookkeeping for the remote's gc only
            pass


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
    prefetch brought (the daemon records the use on the remote), instead of notifying
    the daemon.
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
        if env_flag("KACHE_DISABLED", env) or env_flag("KACHE_RECACHE", env):
            return None
        if call.incremental and settings["cache.incremental"] == "drop" and settings["cache.clean_incremental"]:
            return None  # the wrapper removes stale state first
        if argvmod.passthrough_reason(call, bool(settings["cache.cache_executables"])) is not None:
            return None
        if store is None:
            store = Store(store_root, create=False)
        c = _prepare(call, argv, store, env, settings, cwd)
        c.umask = umask
        found = _restore_hit(c)
        if found is None:
            return None
        entry, size, snapshot = found
        if call.incremental:
            _note_incremental(c, call.incremental)
        if _hit_event(c, started, "local_hit", entry, size, snapshot, via="daemon") == "prefetch_hit":
            if on_prefetch_hit is not None:
                on_prefetch_hit(entry.key, c.crate, settings)
            else:
                _note_remote_use(c, entry, settings)
        return cache.replay_texts(c, entry.meta)
    except Exception:  # noqa: BLE001 - the wrapper's own path decides and reports
        if store is not None:
            store.close()  # a connection that failed is not used again (a kept one reopens)
        return None
    finally:
        if own and store is not None:
            store.close()


def _restore_snapshot(c: cache.Call, entry: Entry) -> bool:
    """The entry's incremental session, restored beside the outputs (best effort: without
    it the next edit compiles incrementally from scratch, which is only slower)."""
    try:
        return cache.restore_incremental(c, entry)
    except Exception:  # noqa: BLE001
        return False


def _compile(c: cache.Call, started: float, settings: Settings, use_remote: bool) -> int:
    from kache.wrapper import warn_once

    cache.unlink_shared_outputs(c.outputs)
    os.makedirs(c.out_dir, exist_ok=True)
    # As cargo asked (auto and keep): a workspace crate compiles incrementally, and under
    # auto its session is kept with the entry (docs/performance.md, "The edit loop").
    c.keep_incremental = bool(c.call.incremental) and settings["cache.incremental"] != "drop"
    t0_ns = time.time_ns()
    t0 = time.monotonic()
    status, stdout, stderr = cache.run_compiler(cache.compiler_command(c), c.norm.diagnostics)
    compile_ms = round((time.monotonic() - t0) * 1000)
    if status != 0:
        c.event("miss", started, reason="compile-failed", status=status)
        return status
    for attempt in (1, 2):
        try:
            outcome, size = cache.record(c, t0_ns, stdout, stderr, compile_ms)
            c.hasher.flush()
            break
        except Exception as e:  # noqa: BLE001 - rustc succeeded; the build must too
            recovered = _recovered_damaged_index(c.store, e)
            if attempt == 1 and is_damage(e):
                # The index this call opened was damaged: moved aside now, by this call or
                # (while rustc ran) by a parallel one. The store opens the index now in
                # place; record there (blobs already put are found, not copied again).
                continue
            if not recovered:
                warn_once(f"could not store {c.crate} in the cache ({type(e).__name__}: {e})", suffix="",
                          store=c.store.root)
            c.event("error", started, reason=f"store: {type(e).__name__}")
            return 0
    if outcome.startswith("skip:"):
        c.event("miss", started, reason=outcome[5:], compile_ms=compile_ms)
        return 0
    c.event(outcome, started, bytes=size, compile_ms=compile_ms)
    if use_remote and c.stored_key:
        try:
            remote.queue_upload(c, c.stored_key, settings)
        except Exception as e:  # noqa: BLE001
            warn_once(f"could not queue {c.crate} for upload ({type(e).__name__}: {e})", suffix="",
                      store=c.store.root)
    _maybe_gc(c.store, settings)
    return 0


GC_CHECK_INTERVAL_SECS = 300.0
GC_TRIGGER = 1.1


def _maybe_gc(store: Store, settings: Settings) -> None:
    """At most every 5 minutes, start `kache gc` in the background if the store passed
    its limit by 10 % (with or without a daemon: a store must never grow unbounded)."""
    stamp = os.path.join(store.root, "tmp", "gc-checked")
    try:
        if time.time() - os.stat(stamp).st_mtime < GC_CHECK_INTERVAL_SECS:
            return
    except OSError:
        pass
    try:
        os.close(os.open(stamp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))
        limit = settings.get("cache.local_max_size")
        if store.totals()["physical_bytes"] <= limit * GC_TRIGGER:
            return
        from kache.daemon.client import spawn_kache

        env = {k: v for k, v in os.environ.items() if not k.startswith(("CARGO", "RUSTC"))}
        env["KACHE_CACHE_DIR"] = store.root
        spawn_kache(["gc"], env)
    except Exception:  # noqa: BLE001 - upkeep must never disturb the build
        pass


def _recovered_damaged_index(store: Store, e: BaseException) -> bool:
    """When ``e`` says the index file is damaged (it opened, then a query found it
    malformed), move it aside so the next calls start a new one; True if it was."""
    from kache.wrapper import warn_once

    if not is_damage(e):
        return False
    try:
        if not store.recover_if_corrupt():
            return False
    except Exception:  # noqa: BLE001 - recovery is best effort; this call compiles anyway
        return False
    # The same words as handle()'s warning for an index that could not open: said once.
    warn_once(f"the cache index was corrupt; moved it aside to {store.recovered} and started a new one",
              suffix="", store=store.root)
    return True


def _passthrough_event(store: Store, call: argvmod.RustcCall, reason: str, started: float,
                       outcome: str = "passthrough") -> None:
    from kache.paths import find_target_dir
    from kache.store import events

    try:
        target_dir = find_target_dir(call.out_dir)
        os.makedirs(store.root, mode=0o700, exist_ok=True)
        events.append(store.root, {"t": round(time.time(), 3), "crate": call.crate_name or "?",
                                   "outcome": outcome, "reason": reason,
                                   "ms": round((time.monotonic() - started) * 1000, 1),
                                   "root": os.path.dirname(target_dir) if target_dir else os.getcwd()})
    except OSError:
        pass


def _note_incremental(c: cache.Call, incremental: str) -> None:
    """Remember an incremental dir, for gc to remove its sessions once they go stale."""
    try:
        c.store.note_incremental(os.path.join(c.cwd, incremental))
    except Exception:  # noqa: BLE001 - bookkeeping for gc only
        pass


def _clean_incremental(c: cache.Call, incremental: str) -> None:
    """Remove this crate's incremental state (stale: kache compiles without it)."""
    path = os.path.join(c.cwd, incremental)
    prefix = f"{c.crate}-"
    _note_incremental(c, incremental)
    try:
        names = os.listdir(path)
    except OSError:
        return
    for name in names:
        if name.startswith(prefix):
            import shutil

            shutil.rmtree(os.path.join(path, name), ignore_errors=True)
