"""Uploads to the remotes: the queue, its workers, the intents on disk, and the records
of uses of remote entries (the ``upload`` and ``used`` ops).

An upload intent (``uploads/<remote id>/<key>.<crate>``, next to the remote's place and
access) is written before a job is queued and removed only once the entry is uploaded
(or gone from the local store), so a daemon stopped or killed mid-upload leaves it for
the next one. A failed upload is retried with a doubling delay, and given up after
``max_tries`` (its intent stays). Keys uploaded lately are remembered: asked again, only
their intent is removed. Uses of remote entries are recorded by one worker, once a day
per entry (the remote's gc keeps what builds use).
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from kache.daemon import client, wire
from kache.daemon.remotes import Served
from kache.store import layout

if TYPE_CHECKING:
    from kache.daemon.options import DaemonOptions
    from kache.daemon.state import DaemonState
    from kache.remote.spec import RemoteSpec
    from kache.store.store import Store

__all__ = ["Uploads", "Upload"]

log = logging.getLogger("kache.daemon")

DONE_MEMORY = 10_000
"""Keys uploaded lately: asked again, only their intent is removed (no second HEAD)."""
RETRY_MAX_SECS = 600.0


class Upload:
    """One pending upload of ``key`` to the remote ``rid``: tried ``tries`` times, next due
    at ``next_at`` (monotonic)."""

    __slots__ = ("rid", "key", "crate", "tries", "next_at", "queued", "running")

    def __init__(self, rid: str, key: str, crate: str) -> None:
        self.rid = rid
        self.key = key
        self.crate = crate
        self.tries = 0
        self.next_at = 0.0
        self.queued = False
        self.running = False


class Uploads:
    """The upload queue of one daemon and its workers (``concurrency`` of them, plus one
    that records uses). ``pending`` (job id → :class:`Upload`) is guarded by ``state.lock``.

    ``own_spec`` is the remote of the daemon's own settings, with its own credentials:
    for the intents of builds with the same access, and those an older kache left
    (``uploads/<key>.<crate>``, which name none). No build's request uses it unless that
    build names it."""

    def __init__(self, state: DaemonState, options: DaemonOptions, concurrency: int,
                 own_spec: RemoteSpec | None) -> None:
        self.state = state
        self.root = state.root
        self.intents_dir = layout.uploads_dir(self.root)
        self.concurrency = concurrency
        self.retry_delay = options.retry_delay
        self.max_tries = options.max_tries
        self.own_spec = own_spec
        self.pending: dict[str, Upload] = {}
        self._given_up: set[str] = set()
        self._done: OrderedDict[str, None] = OrderedDict()
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._uses: queue.Queue[tuple[Served, str, str] | None] = queue.Queue()
        self._used: dict[tuple[str, str], int] = {}
        """(remote id, key) → the day (unix time // 86400) its use was last recorded."""
        self._workers: list[threading.Thread] = []

    # ------------------------------------------------------------------ ops

    def op_upload(self, msg: dict[str, Any]) -> dict[str, Any]:
        key = wire.check_key(msg.get("key"))
        crate = wire.check_crate(msg.get("crate"))
        served = self.state.asked(msg)
        if served is None:
            return {"ok": False, "error": f"upload refused: {crate} {key[:16]}: the request names no remote "
                                          "(cache.remote.bucket is not set)", "remote": None}
        if msg["remote"].get("read_only") is True:
            return {"ok": False, "error": f"upload refused: {crate} {key[:16]}: {served.spec.url} is read-only "
                                          "for this build (cache.remote.read_only)", "remote": served.spec.url}
        return {"ok": True, "queued": self.enqueue(served, key, crate, explicit=True, intent=True)}

    def op_used(self, msg: dict[str, Any]) -> dict[str, Any]:
        key = wire.check_key(msg.get("key"))
        crate = wire.check_crate(msg.get("crate"))
        served = self.state.asked(msg)
        if served is None or msg["remote"].get("read_only") is True:
            return {"ok": True, "queued": False}
        return {"ok": True, "queued": self.record_use(served, key, crate)}

    # ------------------------------------------------------------------ the workers

    def start(self) -> None:
        """Start the workers."""
        for i in range(self.concurrency):
            t = threading.Thread(target=self._worker, name=f"kache-upload-{i}", daemon=True)
            self._workers.append(t)
            t.start()
        t = threading.Thread(target=self._use_worker, name="kache-uses", daemon=True)
        self._workers.append(t)
        t.start()

    def stop(self, timeout: float) -> None:
        """Ask the workers to end and wait for them at most ``timeout`` seconds; an upload
        cut short stays an intent (the next daemon redoes it)."""
        for _ in range(self.concurrency):
            self._queue.put(None)
        self._uses.put(None)
        deadline = time.monotonic() + timeout
        for t in self._workers:
            t.join(max(0.0, deadline - time.monotonic()))

    def busy(self) -> bool:
        """Whether a job is queued or running (call under ``state.lock``)."""
        return any(j.queued or j.running for j in self.pending.values())

    def queued_for(self, rid: str) -> int:
        """The uploads pending for remote ``rid`` (call under ``state.lock``)."""
        return sum(1 for j in self.pending.values() if j.rid == rid)

    # ------------------------------------------------------------------ the queue

    def enqueue(self, served: Served, key: str, crate: str, *, explicit: bool, intent: bool = False) -> int:
        """Queue the upload of ``key`` to ``served`` unless it is queued or done; the jobs
        pending. ``intent``: write its upload intent first, under the lock ``_finish``
        removes intents under, so an intent is never left behind a job that has just ended."""
        job_id = f"{served.id}/{key}"
        with self.state.lock:
            if intent and not client.write_intent(self.root, key, crate, served.spec):
                log.warning("cannot write the upload intent: %s",
                            client.intent_path(self.root, key, crate, served.id))
            if job_id in self._done:  # uploaded a moment ago: only the intent is left to remove
                done = True
            elif job_id not in self.pending and (explicit or job_id not in self._given_up):
                done = False
                self._given_up.discard(job_id)
                job = Upload(served.id, key, crate)
                job.queued = True
                self.pending[job_id] = job
                self._queue.put(job_id)
            else:
                done = False
            n = len(self.pending)
        if done:
            self._remove_intent(served.id, key, crate)
        return n

    def serve_own_remote(self) -> None:
        """Serve the remote of the daemon's own settings (a service's, or those of the
        shell that ran ``kache daemon start``): the intents builds with the same access
        left are uploaded at once."""
        if self.own_spec is None:
            return
        try:
            self.state.remotes.serve(self.own_spec)
        except Exception as e:  # noqa: BLE001 - a build that names it reports the problem
            log.warning("remote unavailable: %s: %s", self.own_spec.where, e)

    def scan_intents(self) -> None:
        """Queue the intents on disk: ``uploads/<remote id>/<key>.<crate>`` for the remote
        its directory names; an older kache's ``uploads/<key>.<crate>`` is moved under the
        daemon's own remote (its settings') when it has one, else left."""
        try:
            names = os.listdir(self.intents_dir)
        except FileNotFoundError:
            return
        except OSError as e:
            log.warning("cannot read the upload intents: %s: %s", self.intents_dir, e)
            return
        before = len(self.pending)
        legacy = [parsed for parsed in map(wire.parse_intent, names) if parsed is not None]
        if legacy and self.own_spec is not None:
            self._adopt(legacy)
            names = os.listdir(self.intents_dir)
        for name in names:
            if not wire.valid_queue_id(name) or not os.path.isdir(os.path.join(self.intents_dir, name)):
                continue
            try:
                files = os.listdir(os.path.join(self.intents_dir, name))
            except OSError:
                continue
            intents = [parsed for parsed in map(wire.parse_intent, files) if parsed is not None]
            if not intents:
                continue
            served = self.state.remotes.for_intents(self.intents_dir, name)
            if served is None:
                continue
            for key, crate in intents:
                self.enqueue(served, key, crate, explicit=False)
        added = len(self.pending) - before
        if added > 0:
            log.info("queued %d upload(s) from %s", added, self.intents_dir)

    def _adopt(self, legacy: list[tuple[str, str]]) -> None:
        """Move an older kache's intents (they name no remote) under the daemon's own."""
        from kache.daemon.remotes import write_spec

        assert self.own_spec is not None
        if self.state.remotes.serve(self.own_spec) is None:
            return
        try:
            where = write_spec(self.intents_dir, self.own_spec)
        except OSError as e:
            log.warning("cannot adopt the upload intents of an older kache: %s: %s", self.intents_dir, e)
            return
        for key, crate in legacy:
            name = wire.intent_name(key, crate)
            try:
                os.replace(os.path.join(self.intents_dir, name), os.path.join(where, name))
            except OSError:
                continue
        log.info("%d upload intent(s) of an older kache now go to %s", len(legacy), self.own_spec.url)

    def requeue_due(self, now: float) -> None:
        """Queue again the failed uploads whose retry time came."""
        with self.state.lock:
            for job_id, job in self.pending.items():
                if not job.queued and not job.running and job.tries and job.next_at <= now:
                    job.queued = True
                    self._queue.put(job_id)

    # ------------------------------------------------------------------ one upload

    def _worker(self) -> None:
        store: Store | None = None
        state = self.state
        try:
            while True:
                job_id = self._queue.get()
                if job_id is None:
                    return
                with state.lock:
                    job = self.pending.get(job_id)
                    if job is None or job.running:
                        continue
                    job.queued = False
                    job.running = True
                    state.active += 1
                try:
                    if store is None:
                        store = state.open_store()
                    self._upload(store, job)
                finally:
                    with state.lock:
                        job.running = False
                        state.active -= 1
                    state.touch()
        finally:
            if store is not None:
                store.close()

    def _upload(self, store: Store, job: Upload) -> None:
        what = f"{job.crate} {job.key[:16]}"
        remotes = self.state.remotes
        served = remotes.get(job.rid) or remotes.for_intents(self.intents_dir, job.rid)
        if served is None:  # its build's keys are gone with the daemon that had them: wait for them
            with self.state.lock:
                self.pending.pop(f"{job.rid}/{job.key}", None)
            return
        try:
            if store.get(job.key) is None:
                self._skip(store, job, served)
                return
            sent = served.remote.upload_entry(store, job.key)
        except Exception as e:
            if _gone(store, job.key):  # evicted while being packed: nothing to retry
                self._skip(store, job, served)
                return
            self._failed(job, f"{e}" or type(e).__name__)
            return
        log.info("uploaded %s to %s%s", what, served.spec.url, "" if sent else " (the remote had it already)")
        with self.state.lock:
            self.state.uploads_done += 1
        self._finish(job)

    def _skip(self, store: Store, job: Upload, served: Served) -> None:
        """The entry left the local store (gc, purge) before it was uploaded: drop the job,
        without remembering the key as uploaded. A build may record the same key again
        (and ask for its upload while this job ran): then it is queued anew."""
        log.info("upload skipped: %s %s: the entry is no longer in the local store", job.crate, job.key[:16])
        self._finish(job, uploaded=False)
        if not _gone(store, job.key):
            self.enqueue(served, job.key, job.crate, explicit=True, intent=True)

    def _finish(self, job: Upload, *, uploaded: bool = True) -> None:
        job_id = f"{job.rid}/{job.key}"
        with self.state.lock:  # with enqueue's intent: see there
            self._remove_intent(job.rid, job.key, job.crate)
            self.pending.pop(job_id, None)
            if uploaded:
                self._done[job_id] = None
            while len(self._done) > DONE_MEMORY:
                self._done.popitem(last=False)

    def _remove_intent(self, rid: str, key: str, crate: str) -> None:
        path = client.intent_path(self.root, key, crate, rid)
        if path is None:
            return
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as e:
            log.warning("cannot remove the upload intent: %s: %s", path, e)

    def _failed(self, job: Upload, why: str) -> None:
        what = f"{job.crate} {job.key[:16]}"
        job_id = f"{job.rid}/{job.key}"
        delay = 0.0
        state = self.state
        with state.lock:
            job.tries += 1
            state.uploads_failed += 1
            state.last_error = f"upload failed: {what}: {why}"
            give_up = job.tries >= self.max_tries
            if give_up:
                self.pending.pop(job_id, None)
                self._given_up.add(job_id)
            else:
                delay = min(self.retry_delay * 2 ** (job.tries - 1), RETRY_MAX_SECS)
                job.next_at = time.monotonic() + delay
        if give_up:
            log.error("upload failed: %s: %s; giving up after %d tries (the intent stays in %s for the next daemon)",
                      what, why, job.tries, os.path.join(self.intents_dir, job.rid))
        else:
            log.warning("upload failed: %s: %s; retrying in %gs", what, why, delay)

    # ------------------------------------------------------------------ uses

    def record_use(self, served: Served, key: str, crate: str) -> bool:
        """Queue a record of the use of a remote entry, once a day per daemon (the remote
        object itself says when it was last refreshed: at most one write a day)."""
        day = int(time.time() // 86400)
        with self.state.lock:
            if self._used.get((served.id, key)) == day:
                return False
            self._used[(served.id, key)] = day
            if len(self._used) > DONE_MEMORY:
                self._used.pop(next(iter(self._used)))
        self._uses.put((served, key, crate))
        return True

    def _use_worker(self) -> None:
        """Record uses of remote entries (``Remote.record_use``: a HEAD, and a copy onto
        itself when the object was not refreshed today). Best effort: a failure is logged."""
        while True:
            item = self._uses.get()
            if item is None:
                return
            served, key, crate = item
            self.state.job_started()
            try:
                record = getattr(served.remote, "record_use", None)
                if record is not None and record(crate, key):
                    log.debug("recorded the use of %s %s on %s", crate, key[:16], served.spec.url)
            except Exception as e:  # noqa: BLE001 - bookkeeping for the remote's gc only
                log.info("cannot record the use of %s %s on %s: %s", crate, key[:16], served.spec.url, e)
            finally:
                self.state.job_ended()


def _gone(store: Store, key: str) -> bool:
    """Whether the entry is (known to be) no longer in the local store."""
    try:
        return store.get(key) is None
    except Exception:  # noqa: BLE001 - unreadable: not known to be gone
        return False
