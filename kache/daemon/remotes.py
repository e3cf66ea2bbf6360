"""The remotes a daemon serves: each one a build asked for, and no other.

A build names its remote in every request that touches one (``fetch``, ``prefetch``,
``upload``, ``used``; :mod:`kache.remote.spec`). The daemon keeps one :class:`Served`
per place (endpoint, bucket, prefix, region): two clients (one with short timeouts for
the fetches a build waits on) built from the spec of the last build that could write
to it, so rotated credentials take over. A read-only build's credentials never replace
a writer's (they may not be allowed to write).

Upload intents remember their remote under ``<store>/uploads/<id>/`` with the spec,
without credentials, in ``remote.json``: a daemon that starts later uploads them with
the credentials the next build sends, or meanwhile with the profile and default AWS
chain of its own environment.
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

__all__ = ["Served", "Remotes", "SPEC_NAME", "valid_id", "write_spec", "read_spec"]

log = logging.getLogger("kache.daemon")

SPEC_NAME = "remote.json"
"""The spec of an intent directory's remote, without credentials."""
_HEX = frozenset("0123456789abcdef")

Factory = Callable[[RemoteSpec, bool], Any]
"""``(spec, for_fetch)`` → a remote client (``kache.remote.s3.Remote`` or a stand-in), or None."""


def valid_id(name: str) -> bool:
    return len(name) == 16 and _HEX.issuperset(name)


def write_spec(intents_dir: str, spec: RemoteSpec) -> str:
    """``uploads/<id>/`` with its ``remote.json`` (written once, atomically); the directory."""
    where = os.path.join(intents_dir, spec.id)
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


def read_spec(intents_dir: str, rid: str) -> RemoteSpec | None:
    """The spec an intent directory names (None when missing or unreadable)."""
    try:
        with open(os.path.join(intents_dir, rid, SPEC_NAME), encoding="utf-8") as f:
            found = spec_mod.from_json(json.load(f))
    except (OSError, ValueError) as e:
        log.warning("upload intents: %s: cannot read %s: %s", os.path.join(intents_dir, rid), SPEC_NAME, e)
        return None
    if found.id != rid:
        log.warning("upload intents: %s: its %s names another remote (%s)", os.path.join(intents_dir, rid),
                    SPEC_NAME, found.url)
        return None
    return found


class Served:
    """One remote the daemon serves."""

    __slots__ = ("spec", "remote", "fetch_remote", "asked", "old")

    def __init__(self, spec: RemoteSpec, remote: Any, fetch_remote: Any) -> None:
        self.spec = spec
        self.remote = remote
        """For uploads, prefetch and use records."""
        self.fetch_remote = fetch_remote
        """For the fetches a build waits on: one short attempt."""
        self.asked = 0.0
        """When a build last asked for it (``time.time()``; 0: known from intents only)."""
        self.old: list[Any] = []
        """Clients replaced by newer credentials (closed with the daemon)."""

    @property
    def id(self) -> str:
        return self.spec.id

    def to_json(self) -> dict[str, Any]:
        """What ``status`` shows: never the credentials."""
        return {"url": self.spec.url, "endpoint": self.spec.endpoint, "region": self.spec.region,
                "credentials": self.spec.credential_source,
                "asked": round(self.asked, 3) if self.asked else None}


class Remotes:
    """The remotes of one daemon, by id. Thread-safe.

    ``factory`` makes the clients; ``on_secrets`` learns every credential a build sends
    (for the log's redaction) before anything can log it; ``env`` is the daemon's own
    environment, whose credentials serve intents no build has asked for yet.
    """

    def __init__(self, factory: Factory, on_secrets: Callable[[list[str]], None] | None = None,
                 env: Mapping[str, str] | None = None) -> None:
        self._factory = factory
        self._on_secrets = on_secrets
        self._env = dict(env or {})
        self._served: dict[str, Served] = {}
        self._lock = threading.Lock()

    def asked(self, doc: object) -> Served | None:
        """The remote a request's ``remote`` field names (None for null/absent), made or
        refreshed. Raises SpecError for a field that is not a remote."""
        if doc is None:
            return None
        spec = spec_mod.from_json(doc)
        if self._on_secrets is not None and spec.credentials:
            self._on_secrets(spec.secrets())
        served = self._get(spec, refresh=not spec.read_only)
        if served is not None:
            served.asked = time.time()
        return served

    def for_intents(self, intents_dir: str, rid: str) -> Served | None:
        """The remote of an intent directory: the one a build asked for, else built from its
        ``remote.json`` with the credentials of the daemon's own environment (a service's
        ``KACHE_S3_*`` or ``AWS_*``, its profile, the default chain)."""
        with self._lock:
            served = self._served.get(rid)
        if served is not None:
            return served
        spec = read_spec(intents_dir, rid)
        if spec is None:
            return None
        spec = spec_mod.with_access(spec, self._env)
        if self._on_secrets is not None and spec.credentials:
            self._on_secrets(spec.secrets())
        return self._get(spec, refresh=False)

    def get(self, rid: str) -> Served | None:
        with self._lock:
            return self._served.get(rid)

    def all(self) -> list[Served]:
        with self._lock:
            return sorted(self._served.values(), key=lambda s: s.spec.url)

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

    def _get(self, spec: RemoteSpec, *, refresh: bool) -> Served | None:
        with self._lock:
            served = self._served.get(spec.id)
            if served is not None and (not refresh or _same_access(served.spec, spec)):
                return served
        remote = self._factory(spec, False)
        if remote is None:
            return None
        fetch_remote = self._factory(spec, True)
        with self._lock:
            current = self._served.get(spec.id)
            if current is None:
                current = self._served[spec.id] = Served(spec, remote, fetch_remote)
                log.info("serving remote %s (credentials from %s)", spec.where, spec.credential_source)
            elif refresh and not _same_access(current.spec, spec):
                current.old.extend(r for r in (current.remote, current.fetch_remote) if r is not None)
                current.spec, current.remote, current.fetch_remote = spec, remote, fetch_remote
                log.info("remote %s: a build sent other credentials (from %s); using them from now on",
                         spec.where, spec.credential_source)
            return current


def _same_access(a: RemoteSpec, b: RemoteSpec) -> bool:
    return (a.credentials, a.profile, a.files) == (b.credentials, b.profile, b.files)


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
