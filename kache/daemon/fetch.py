"""Fetches from the remotes: on a build's miss (the ``fetch`` op, one flight per key,
waited for within the build's budget) and ahead of a build (the ``prefetch`` op, a
:func:`kache.remote.sync.sync` pull of a workspace's crates).

A remote that fails or does not answer within a build's budget is marked down for
:data:`kache.daemon.remotes.DOWN_SECS` after a few such failures: builds then compile
without asking it. Entries fetched for a build that may write are recorded as used.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kache.daemon import wire
from kache.daemon.remotes import DOWN_SECS, Served
from kache.daemon.wire import ProtocolError

if TYPE_CHECKING:
    from kache.daemon.options import DaemonOptions
    from kache.daemon.state import DaemonState

__all__ = ["Fetches", "Flight", "warm_remote_imports"]

log = logging.getLogger("kache.daemon")


class Flight:
    """A fetch under way; followers asking for the same cheap key wait on the same one."""

    __slots__ = ("done", "result", "before")

    def __init__(self, before: set[str]) -> None:
        self.done = threading.Event()
        self.result: list[str] = []
        self.before = before


class Fetches:
    """The fetches and prefetches of one daemon. ``record_use(served, key, crate)`` notes
    the use of a fetched entry (:meth:`kache.daemon.uploads.Uploads.record_use`)."""

    def __init__(self, state: DaemonState, options: DaemonOptions, concurrency: int,
                 record_use: Callable[[Served, str, str], bool]) -> None:
        self.state = state
        self.concurrency = concurrency
        self.prefetch_dedupe_secs = options.prefetch_dedupe_secs
        self._sync_fn = options.sync
        self._record_use = record_use
        self._flights: dict[tuple[str, str, str], Flight] = {}
        self._prefetched: dict[tuple[str, str], float] = {}

    # ------------------------------------------------------------------ fetch

    def op_fetch(self, msg: dict[str, Any]) -> dict[str, Any]:
        start = time.monotonic()
        crate = wire.check_crate(msg.get("crate"))
        mkey = wire.check_key(msg.get("mkey"), "mkey")
        budget = msg.get("budget_ms", wire.FETCH_BUDGET_MS)
        if (isinstance(budget, bool) or not isinstance(budget, (int, float)) or budget != budget
                or not 0 <= budget <= 1e9):
            raise ProtocolError(f"invalid request: budget_ms = {json.dumps(budget, default=str)[:40]}: "
                                "expected a number of milliseconds from 0 to 1e9")
        served = self.state.asked(msg)
        if served is None:
            return {"ok": True, "imported": [], "remote": None}
        if served.down_until > start:
            return {"ok": True, "imported": [], "down": True}
        deadline = start + float(min(budget, wire.FETCH_MAX_MS)) / 1000  # min first: 10**400 is an int
        flight = self._flight(served, crate, mkey, deadline, bool(msg["remote"].get("read_only")))
        if flight.done.wait(max(0.0, deadline - time.monotonic())):
            return {"ok": True, "imported": list(flight.result)}
        imported = self._imported_since(mkey, flight.before)
        if not imported:
            self._failed(served, "no answer within the build's budget")
        return {"ok": True, "imported": imported, "timed_out": True}

    def _failed(self, served: Served, why: str) -> None:
        with self.state.lock:
            down = served.fetch_failed()
        if down:
            self.state.error(f"remote unavailable: {served.spec.where}: {why}; builds compile without asking it "
                             f"for {DOWN_SECS:g}s")

    def _flight(self, served: Served, crate: str, mkey: str, deadline: float, read_only: bool) -> Flight:
        ident = (served.id, crate, mkey)
        lock = self.state.lock
        with lock:
            flight = self._flights.get(ident)
            if flight is not None:
                return flight
        before = set(self._keys_by_mkey(mkey))
        with lock:
            flight = self._flights.get(ident)
            if flight is not None:
                return flight
            flight = Flight(before)
            self._flights[ident] = flight
            self.state.active += 1
        threading.Thread(target=self._run_fetch, args=(flight, served, crate, mkey, deadline, read_only),
                         name="kache-fetch", daemon=True).start()
        return flight

    def _run_fetch(self, flight: Flight, served: Served, crate: str, mkey: str, deadline: float,
                   read_only: bool) -> None:
        state = self.state
        keys: list[str] = []
        try:
            store = state.open_store()
            try:
                found = served.fetch_remote.fetch_by_mkey(store, crate, mkey, limit=3, deadline=deadline,
                                                          origin="remote")
                keys = [k for k in found or [] if isinstance(k, str)]
            finally:
                store.close()
            if keys:
                log.info("fetched %s %s from %s: %d entr%s", crate, mkey[:16], served.spec.url, len(keys),
                         "y" if len(keys) == 1 else "ies")
        except Exception as e:
            state.error(f"fetch failed: {crate} {mkey[:16]}: {e}")
            self._failed(served, str(e))
        else:
            with state.lock:
                served.failures = 0
        finally:
            with state.lock:
                state.downloads += len(keys)
                flight.result = keys
                self._flights.pop((served.id, crate, mkey), None)
                state.active -= 1
            flight.done.set()
            state.touch()
        if not read_only:
            for key in keys:
                self._record_use(served, key, crate)

    def _keys_by_mkey(self, mkey: str) -> list[str]:
        try:
            store = self.state.open_store()
            try:
                return store.keys_by_mkey(mkey)
            finally:
                store.close()
        except Exception as e:
            log.debug("cannot read the store: %s", e)
            return []

    def _imported_since(self, mkey: str, before: set[str]) -> list[str]:
        return [k for k in self._keys_by_mkey(mkey) if k not in before]

    # ------------------------------------------------------------------ prefetch

    def op_prefetch(self, msg: dict[str, Any]) -> dict[str, Any]:
        root = msg.get("root")
        if not isinstance(root, str) or not root or len(root) > 4096 or "\0" in root or not os.path.isabs(root):
            raise ProtocolError(f"invalid request: root = {json.dumps(root, default=str)[:80]}: "
                                "expected an absolute path")
        served = self.state.asked(msg)
        if served is None:
            return {"ok": True, "started": False, "reason": "no remote"}
        root = os.path.normpath(root)
        if not os.path.isfile(os.path.join(root, "Cargo.lock")):
            return {"ok": True, "started": False, "reason": f"no Cargo.lock in {root}"}
        now = time.monotonic()
        state = self.state
        with state.lock:
            last = self._prefetched.get((served.id, root))
            if last is not None and now - last < self.prefetch_dedupe_secs:
                return {"ok": True, "started": False,
                        "reason": f"a prefetch of this root started {now - last:.0f}s ago"}
            self._prefetched[(served.id, root)] = now
            state.prefetches += 1
            state.active += 1
        threading.Thread(target=self._run_prefetch, args=(served, root), name="kache-prefetch",
                         daemon=True).start()
        return {"ok": True, "started": True}

    def _run_prefetch(self, served: Served, root: str) -> None:
        state = self.state
        began = time.monotonic()
        try:
            sync = self._sync_fn
            if sync is None:
                from kache.remote.sync import sync as real_sync

                sync = real_sync
            store = state.open_store()
            try:
                report = sync(store, served.remote, pull=True, push=False, all_crates=False,
                              workspace=Path(root), dry_run=False, concurrency=self.concurrency)
            finally:
                store.close()
            n = _count(report, ("pulled", "downloaded", "imported"))
            with state.lock:
                state.downloads += n
            log.info("prefetched %s from %s in %.1fs: %s", root, served.spec.url, time.monotonic() - began,
                     _summary(report))
            failure = _first_failure(report)
            if failure:
                state.error(f"prefetch incomplete: {root}: {failure}")
        except Exception as e:
            state.error(f"prefetch failed: {root}: {e}")
        finally:
            state.job_ended()


def warm_remote_imports() -> None:
    """Import boto3 (~250 ms) while no request waits: a build that started this daemon
    has a remote, and its first calls wait for their first fetch."""
    try:
        import boto3.session  # noqa: F401
        import botocore.config  # noqa: F401

        import kache.remote.s3  # noqa: F401
    except Exception:  # noqa: BLE001 - a fetch imports it again and reports
        pass


def _count(report: Any, names: tuple[str, ...]) -> int:
    for name in names:
        value = report.get(name) if isinstance(report, dict) else getattr(report, name, None)
        if isinstance(value, bool):
            continue
        if isinstance(value, int):
            return value
        if isinstance(value, (list, tuple, set, dict)):
            return len(value)
    return 0


def _summary(report: Any) -> str:
    """One line about a sync report: counts when it has them, else its text (shortened)."""
    parts = []
    for name in ("pulled", "pull_up_to_date", "skipped", "failures"):
        value = getattr(report, name, None)
        if isinstance(value, (list, tuple)):
            parts.append(f"{len(value)} {name.replace('_', ' ')}")
        elif isinstance(value, int) and not isinstance(value, bool):
            parts.append(f"{value} {name.replace('_', ' ')}")
    text = ", ".join(parts) if parts else str(report)
    return text if len(text) <= 300 else text[:297] + "..."


def _first_failure(report: Any) -> str | None:
    failures = getattr(report, "failures", None)
    if isinstance(failures, (list, tuple)) and failures:
        return str(failures[0])
    return None
