"""One rustc call handled whole, in the wrapper's process: hit, remote, or compile and record.

The order of a call::

    decide ─ pass through ──────────────────────────────────────────► PASSTHROUGH (exec rustc)
        │
    cheap key (args, toolchain, externs, env) ─► manifest ─► inputs still match? ─► restore, replay
        │ no match                                                                    (local_hit)
    ask the remote (through the daemon) ─► imported? ─► look up again ─────────────► (remote_hit)
        │
    lock the cheap key (a twin compile waits here, then finds the twin's entry)
        │
    run rustc (paths remapped; incremental as cache.incremental says), streaming stderr
        │ exit 0
    read the .d, hash inputs and outputs, put blobs, add entry + manifest line (miss / dup)

:func:`handle` returns rustc's exit status, or :data:`PASSTHROUGH` when rustc must run as
if kache were absent (the wrapper then replaces itself with it). Nothing here may fail a
build: errors before rustc runs end in a pass-through; errors after it ran are reported
and rustc's own exit status is returned.
"""

from __future__ import annotations

import os
import time

TYPE_CHECKING = False  # typing costs ~11 ms to import; annotations are strings here

from kache.engine import incremental
from kache.engine.call import Uncacheable
from kache.engine.decide import decide
from kache.engine.hit import prepare_call, recovered_damaged_index, try_hit, warn_recovered
from kache.engine.notices import warn_once
from kache.engine.outputs import unlink_expected_outputs, unlink_shared_outputs
from kache.store import layout
from kache.store.store import Store, StoreError, is_damage, sqlite3

if TYPE_CHECKING:
    from collections.abc import Mapping

    from kache.engine import argv as argvmod
    from kache.engine.call import PreparedCall
    from kache.engine.decide import Plan
    from kache.engine.hit import RemoteAsks
    from kache.settings import Settings

__all__ = ["handle", "PASSTHROUGH"]

PASSTHROUGH = -1
""":func:`handle`'s answer when rustc is to run as if kache were absent."""

# A damaged index is moved aside by the first call that finds it; a parallel call may
# find the index it had opened moved, and another damaged one found meanwhile: try a
# few times before passing through.
DAMAGE_ATTEMPTS = 3

GC_CHECK_INTERVAL_SECS = 300.0
GC_TRIGGER = 1.1


def handle(call: argvmod.RustcCall, argv: list[str], settings: Settings, started: float,
           remote: RemoteAsks, env: Mapping[str, str] | None = None) -> int:
    """Handle one call that settings allow kache to see; rustc's exit status or PASSTHROUGH."""
    env = os.environ if env is None else env
    store = Store(settings.converted("cache.local_store"))
    plan = decide(call, settings, env)
    if plan.passthrough is not None:
        unlink_expected_outputs(call)
        if plan.passthrough != "disabled":
            passthrough_event(store, call, plan.passthrough, started, env=env)
        return PASSTHROUGH

    for attempt in range(1, DAMAGE_ATTEMPTS + 1):
        try:
            c = prepare_call(call, argv, store, env, settings, plan.snapshots)
            break
        except Uncacheable as e:
            unlink_expected_outputs(call)
            passthrough_event(store, call, str(e), started, env=env)
            return PASSTHROUGH
        except (StoreError, sqlite3.Error, OSError) as e:
            if attempt < DAMAGE_ATTEMPTS and is_damage(e):
                # Moved aside by this call or, a moment ago, by a parallel one: either way a
                # new index is in place, and this call can still be cached.
                recovered_damaged_index(store, e)
                continue
            warn_once(f"cache unavailable ({e})", store=store.root)
            unlink_expected_outputs(call)
            passthrough_event(store, call, f"store: {type(e).__name__}", started, outcome="error", env=env)
            return PASSTHROUGH

    if store.recovered:
        warn_recovered(store)
    for path in c.missing_inputs:
        warn_once(f"cache.extra_inputs names {path} for {c.crate}, and nothing is there: its changes "
                  "cannot be seen (paths are relative to the directory cargo runs rustc in: the workspace "
                  "root for a member, the package root for any other crate)", suffix="", store=store.root)
    if plan.clean_incremental:
        incremental.clean(c, call.incremental or "")
    elif call.incremental:
        incremental.note(c, call.incremental)

    if plan.look_up and try_hit(c, started, remote, settings):
        return 0
    use_remote = remote.enabled(settings)
    if use_remote:
        try:
            remote.announce(c, settings)
            if plan.look_up:
                imported = remote.check(c, settings)
                # Look again even when this fetch imported nothing: the daemon's prefetch may
                # have landed the entry since the first look-up (the fetch then finds it
                # already local and reports nothing new). One more index query on a miss.
                if try_hit(c, started, remote, settings, outcome="remote_hit" if imported else "local_hit"):
                    return 0
        except Exception as e:  # noqa: BLE001 - the remote is never a reason to fail
            warn_once(f"remote check failed ({type(e).__name__}: {e}); compiling", suffix="", store=store.root)

    # The miss path's modules (portable scan, full key, rustc's runner) load only on a miss:
    # ~1 ms less of imports on every hit (docs/performance.md, "A hit").
    from kache.engine import record

    lock = record.KeyLock(store, c.mkey)
    try:
        locked = lock.acquire()
    except OSError as e:  # a store that cannot be written (read-only, full, gone)
        warn_once(f"cache unavailable ({e})", store=store.root)
        unlink_expected_outputs(call)
        passthrough_event(store, call, f"store: {type(e).__name__}", started, outcome="error", env=c.env)
        return PASSTHROUGH
    try:
        # Look again, waited or not: a twin may have recorded between the look-up above and
        # this lock (its lock free again by then). One indexed query when nothing is there.
        if plan.look_up and try_hit(c, started, remote, settings):
            return 0  # a twin compile ran meanwhile: its result
        return _compile(c, plan, started, settings, remote, use_remote)
    finally:
        if locked:
            lock.release()


def _compile(c: PreparedCall, plan: Plan, started: float, settings: Settings, remote: RemoteAsks,
             use_remote: bool) -> int:
    from kache.engine import record

    unlink_shared_outputs(c.outputs)
    os.makedirs(c.out_dir, exist_ok=True)
    # As cargo asked (auto and keep): a workspace crate compiles incrementally, and under
    # auto its session is kept with the entry (docs/performance.md, "The edit loop").
    c.keep_incremental = plan.keep_incremental
    t0_ns = time.time_ns()
    t0 = time.monotonic()
    status, stdout, stderr = record.run_compiler(record.compiler_command(c), c.norm.diagnostics)
    compile_ms = round((time.monotonic() - t0) * 1000)
    if status != 0:
        c.event("miss", started, reason="compile-failed", status=status)
        return status
    for attempt in range(1, DAMAGE_ATTEMPTS + 1):
        try:
            outcome, size = record.record(c, t0_ns, stdout, stderr, compile_ms)
            c.hasher.flush()
            break
        except Exception as e:  # noqa: BLE001 - rustc succeeded; the build must too
            recovered = recovered_damaged_index(c.store, e)
            if attempt < DAMAGE_ATTEMPTS and is_damage(e):
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
    c.event(outcome, started, bytes=size, compile_ms=compile_ms, key=c.stored_key[:16] if c.stored_key else None)
    if use_remote and c.stored_key:
        try:
            remote.queue_upload(c, c.stored_key, settings)
        except Exception as e:  # noqa: BLE001
            warn_once(f"could not queue {c.crate} for upload ({type(e).__name__}: {e})", suffix="",
                      store=c.store.root)
    _maybe_gc(c.store, settings)
    return 0


def _maybe_gc(store: Store, settings: Settings) -> None:
    """At most every 5 minutes, start `kache gc` in the background if the store passed
    its limit by 10 % (with or without a daemon: a store must never grow unbounded)."""
    stamp = layout.tmp_path(store.root, layout.GC_CHECKED)
    try:
        if time.time() - os.stat(stamp).st_mtime < GC_CHECK_INTERVAL_SECS:
            return
    except OSError:
        pass
    try:
        os.close(os.open(stamp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))
        limit = settings.converted("cache.local_max_size")
        if store.totals()["physical_bytes"] <= limit * GC_TRIGGER:
            return
        from kache import selfexec

        env = {k: v for k, v in os.environ.items() if not k.startswith(("CARGO", "RUSTC"))}
        env["KACHE_CACHE_DIR"] = store.root
        selfexec.spawn_detached(["gc"], env)
    except Exception:  # noqa: BLE001 - upkeep must never disturb the build
        pass


def passthrough_event(store: Store, call: argvmod.RustcCall, reason: str, started: float,
                      outcome: str = "passthrough", env: Mapping[str, str] | None = None) -> None:
    """The event of a call rustc handles alone (``error``: because of kache's store)."""
    from kache.paths import find_target_dir
    from kache.store import events

    try:
        target_dir = find_target_dir(call.out_dir)
        os.makedirs(store.root, mode=0o700, exist_ok=True)
        crate = call.crate_name or "?"
        ev = {"t": round(time.time(), 3), "crate": crate, "outcome": outcome, "reason": reason,
              "ms": round((time.monotonic() - started) * 1000, 1),
              "root": os.path.dirname(target_dir) if target_dir else os.getcwd()}
        package = (os.environ if env is None else env).get("CARGO_PKG_NAME")
        if package and crate.startswith("build_script_"):
            ev["package"] = package  # build scripts are shown by their package
        events.append(store.root, ev)
    except OSError:
        pass
