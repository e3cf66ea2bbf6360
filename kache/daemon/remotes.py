"""The remotes a daemon serves: each one a build asked for, and no other.

A build names its remote in every request that touches one (``fetch``, ``prefetch``,
``upload``, ``used``; :mod:`kache.remote.spec`). The daemon keeps one :class:`Served`
per place (endpoint, bucket, prefix, region) *and* access (access key id, profile,
credential files): two clients (one with short timeouts for the fetches a build waits
on), made from that build's credentials and remade when they change (a rotated secret,
a refreshed ``~/.aws/credentials``). An upload goes out with the credentials of the
build that asked for it, never with another build's.

Upload intents remember their remote under ``<store>/uploads/<queue id>/`` with the
spec, without credentials, in ``remote.json``: a daemon that starts later uploads the
intents of builds that brought no keys with its own credentials, and keeps those of
builds that brought keys until a build with the same access key asks again.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from kache.remote import spec as spec_mod
from kache.remote.spec import RemoteSpec, SpecError

__all__ = ["Served", "Remotes", "SPEC_NAME", "write_spec", "read_spec"]

log = logging.getLogger("kache.daemon")

SPEC_NAME = "remote.json"
"""The spec of an intent directory's remote, without credentials."""

Factory = Callable[[RemoteSpec, bool], Any]
"""``(spec, for_fetch)`` → a remote client (``kache.remote.s3.Remote`` or a stand-in), or None."""


def write_spec(intents_dir: str, spec: RemoteSpec) -> str:
    """``uploads/<queue id>/`` with its ``remote.json`` (without credentials; written
    once, atomically); the directory."""
    where = os.path.join(intents_dir, spec.queue_id)
    path = os.path.join(where, SPEC_NAME)
    if os.path.exists(path):
        return where
    for folder in (intents_dir, where):  # makedirs gives the mode to the last one only
        try:
            os.mkdir(folder, 0o700)
        except FileExistsError:
            pass
    tmp = f"{path}.{os.getpid()}.{threading.get_ident()}.tmp"
    with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600), "w") as f:
        json.dump(spec.to_json(secrets=False), f)
    os.replace(tmp, path)
    return where


def read_spec(intents_dir: str, queue_id: str) -> RemoteSpec | None:
    """The spec an intents' directory keeps (None when missing or unreadable)."""
    folder = os.path.join(intents_dir, queue_id)
    try:
        with open(os.path.join(folder, SPEC_NAME), encoding="utf-8") as f:
            return spec_mod.from_json(json.load(f))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        log.warning("upload intents: %s: cannot read %s: %s", folder, SPEC_NAME, e)
        return None


class Served:
    """One remote the daemon serves, for one access (who asks: :attr:`RemoteSpec.access_id`)."""

    __slots__ = ("spec", "remote", "fetch_remote", "asked", "old", "stamp", "failures", "down_until")

    def __init__(self, spec: RemoteSpec, remote: Any, fetch_remote: Any, stamp: tuple[Any, ...]) -> None:
        self.spec = spec
        """As the build sent it (its credentials; the daemon's own fill a spec without)."""
        self.remote = remote
        """For uploads, prefetch and use records."""
        self.fetch_remote = fetch_remote
        """For the fetches a build waits on: one short attempt."""
        self.asked = 0.0
        """When a build last asked for it (``time.time()``; 0: known from intents only)."""
        self.old: list[Any] = []
        """Clients replaced by newer credentials (closed with the daemon)."""
        self.stamp = stamp
        """The credentials and the credential files' times its clients were made with."""
        self.failures = 0
        """Fetches in a row that failed or ran out of time."""
        self.down_until = 0.0
        """Until then (monotonic), fetches are not tried: the remote does not answer."""

    @property
    def id(self) -> str:
        """The place and the access: the intents' directory."""
        return self.spec.queue_id

    def fetch_failed(self) -> bool:
        """Count a fetch that failed or timed out; True when that makes the remote "down"
        (no fetches for :data:`DOWN_SECS`: a build stops waiting its budget on every miss)."""
        self.failures += 1
        if self.failures >= DOWN_AFTER:
            self.failures = 0
            self.down_until = time.monotonic() + DOWN_SECS
            return True
        return False

    def to_json(self) -> dict[str, Any]:
        """What ``status`` shows: never the credentials."""
        return {"url": self.spec.url, "endpoint": self.spec.endpoint, "region": self.spec.region,
                "credentials": self.spec.credential_source, "access": self.spec.access_id,
                "asked": round(self.asked, 3) if self.asked else None,
                "down": self.down_until > time.monotonic()}


DOWN_AFTER = 3
"""Fetches in a row that fail or time out before a remote counts as down."""
DOWN_SECS = 60.0


class Remotes:
    """The remotes of one daemon, by place and access. Thread-safe.

    ``factory`` makes the clients; ``on_secrets`` learns every credential a build sends
    (for the log's redaction) before anything can log it; ``env`` is the daemon's own
    environment: its credentials (a service's ``KACHE_S3_*`` or ``AWS_*``; a daemon a
    build started has none) serve the builds that bring none.

    Each upload goes out with the credentials of the build that asked for it: builds
    with another access key, profile or credential files have their own clients and
    queue. An intent left on disk by a build that brought keys waits until a build with
    the same access key asks again (the daemon keeps no secret on disk); one that
    brought none is uploaded with the daemon's own.
    """

    def __init__(self, factory: Factory, on_secrets: Callable[[list[str]], None] | None = None,
                 env: Mapping[str, str] | None = None) -> None:
        self._factory = factory
        self._on_secrets = on_secrets
        self._env = dict(env or {})
        self._served: dict[str, Served] = {}
        self._lock = threading.Lock()
        self.new_access = threading.Event()
        """Set when a build brought an access not seen before: its intents on disk can go now."""

    def asked(self, doc: object) -> Served | None:
        """The remote a request's ``remote`` field names (None for null/absent), made or
        refreshed. Raises SpecError for a field that is not a remote."""
        if doc is None:
            return None
        served = self.serve(spec_mod.from_json(doc))
        if served is not None:
            if not served.asked:
                self.new_access.set()
            served.asked = time.time()
        return served

    def for_intents(self, intents_dir: str, queue_id: str) -> Served | None:
        """The remote of an intent directory: the one a build asked for; else, when the
        build that left them brought no keys, built from its ``remote.json``; else None
        (they wait for a build with the same access key)."""
        with self._lock:
            served = self._served.get(queue_id)
        if served is not None:
            return served
        spec = read_spec(intents_dir, queue_id)
        if spec is None or spec.queue_id != queue_id:  # its build brought keys: they are not on disk
            return None
        return self.serve(spec)

    def get(self, queue_id: str) -> Served | None:
        with self._lock:
            return self._served.get(queue_id)

    def all(self) -> list[Served]:
        with self._lock:
            return sorted(self._served.values(), key=lambda s: (s.spec.url, s.id))

    def close(self) -> None:
        with self._lock:
            served, self._served = list(self._served.values()), {}
        seen: set[int] = set()
        for s in served:
            for r in (s.remote, s.fetch_remote, *s.old):
                if r is None or id(r) in seen:
                    continue
                seen.add(id(r))
                close = getattr(r, "close", None)
                if close is not None:
                    try:
                        close()
                    except Exception:  # noqa: BLE001 - closing is best effort
                        pass

    def _stamp(self, spec: RemoteSpec) -> tuple[Any, ...]:
        """What the clients depend on: the credentials and the credential files' times (a
        rotated key in ``~/.aws/credentials``, a refreshed SSO session)."""
        times: list[tuple[str, int | None, int | None]] = []
        for path in sorted(spec.files.values()):
            try:
                st = os.stat(path)
                times.append((path, st.st_mtime_ns, st.st_size))
            except OSError:
                times.append((path, None, None))
        return (tuple(sorted(spec.credentials.items())), tuple(times))

    def serve(self, spec: RemoteSpec) -> Served | None:
        """The remote of ``spec`` (made, or remade when its credentials changed)."""
        stamp = self._stamp(spec)
        with self._lock:
            served = self._served.get(spec.queue_id)
            if served is not None and served.stamp == stamp:
                return served
        access = spec_mod.with_access(spec, self._env)  # the daemon's own keys for a build without
        if self._on_secrets is not None and access.credentials:
            self._on_secrets(access.secrets())
        remote = self._factory(access, False)
        if remote is None:
            return None
        fetch_remote = self._factory(access, True)
        with self._lock:
            current = self._served.get(spec.queue_id)
            if current is None:
                current = self._served[spec.queue_id] = Served(spec, remote, fetch_remote, stamp)
                log.info("serving remote %s (credentials from %s)", spec.where, access.credential_source)
            elif current.stamp != stamp:
                current.old.extend(r for r in (current.remote, current.fetch_remote) if r is not None)
                current.spec, current.remote, current.fetch_remote, current.stamp = spec, remote, fetch_remote, stamp
                log.info("remote %s: the credentials of %s changed; using the new ones", spec.where,
                         access.credential_source)
            return current


def default_factory(concurrency: int, compression_level: int, fetch_max_ms: int) -> Factory:
    """Clients of :class:`kache.remote.s3.Remote` for a spec (boto3 loads on first use)."""

    def make(spec: RemoteSpec, for_fetch: bool) -> Any:
        from kache.remote.s3 import Remote

        extra: dict[str, Any] = {"concurrency": concurrency, "compression_level": compression_level,
                                 "read_only": False}
        if for_fetch:  # a build waits on it: one short attempt, bounded by its budget anyway
            extra.update(connect_timeout=1.0, read_timeout=fetch_max_ms / 1000, max_attempts=1)
        remote = Remote.from_spec(spec, **extra)
        for w in remote.warnings:
            log.warning("%s", w)
        return remote

    return make


__all__ += ["default_factory", "SpecError"]
