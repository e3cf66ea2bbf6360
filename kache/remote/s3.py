"""The S3 remote: object names, transfers and errors (the only module importing boto3).

Object layout under the bucket (``prefix`` stripped of slashes; empty = bucket root)::

    {prefix}/{crate}/{key}.tar.zst        one entry (kache.remote.archive, format 1)
    {prefix}/{crate}/_mkeys/{mkey}.json   the full keys recorded under one cheap key:
                                          [{"key": "<64 hex>", "created": <unix time>}, …]
                                          newest first, at most ``MKEYS_CAP``

The ``_mkeys`` objects let a machine that knows only the cheap key (computed before
compiling) find candidate entries: :meth:`Remote.fetch_by_mkey` downloads the newest
few, and the local direct-mode lookup then checks their recorded inputs. An archive is
always put *before* the ``_mkeys`` object that announces it; the read-modify-write of
``_mkeys`` is best effort (two machines writing at once may drop one key from it; the
archive is still found by ``kache sync``).

An archive's LastModified is its last use, to a day: :meth:`Remote.record_use` copies
an archive onto itself (new metadata, same bytes) when it is a day old or more, so
``kache remote gc`` (kache.remote.gc) can delete what no build has used for a while.

Credentials, first found wins: ``KACHE_S3_ACCESS_KEY`` + ``KACHE_S3_SECRET_KEY`` (both;
one alone is ignored with a warning), then ``cache.remote.profile``, then the AWS
default chain. A custom endpoint means path-style addressing. Every botocore/boto3
error becomes a :class:`RemoteError` (chained with ``from``) whose message never holds
a credential; a missing object (404) is ``None``, never an error, and an error is never
a miss.
"""

from __future__ import annotations

import builtins
import hashlib
import json
import logging
import threading
import time
from base64 import b64encode
from typing import TYPE_CHECKING

from kache.errors import KacheError
from kache.remote.archive import ArchiveError, import_archive, pack_entry, valid_crate_name, valid_key
from kache.remote.spec import RemoteSpec, normalize_prefix, url_of

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence
    from typing import Any

    from kache.settings import Settings
    from kache.store.store import Entry, Store

__all__ = ["Remote", "RemoteError", "RemoteArchive", "RemoteObject", "BadObject", "MKEYS_CAP",
           "ARCHIVE_SUFFIX", "USE_RESOLUTION_SECS", "DELETE_BATCH", "parse_object_name"]

log = logging.getLogger("kache.remote")

MKEYS_CAP = 8
ARCHIVE_SUFFIX = ".tar.zst"
MKEYS_DIR = "_mkeys"
USE_RESOLUTION_SECS = 86400
"""An archive's LastModified is refreshed by a use when it is at least this old: at most
one write per archive per day."""
DELETE_BATCH = 1000
"""Most names in one DeleteObjects request (S3's limit)."""
_NOT_FOUND = {"NoSuchKey", "404", "NotFound"}
_REDACTED = "[redacted]"


class RemoteError(KacheError):
    """A remote operation failed (network, permissions, server). Not a miss: a caller
    that needs an answer must treat it as "unknown", and a build must go on."""


class RemoteArchive:
    """One archive object found by a listing."""

    __slots__ = ("crate", "key", "name", "size")

    def __init__(self, crate: str, key: str, name: str, size: int) -> None:
        self.crate, self.key, self.name, self.size = crate, key, name, size

    def __repr__(self) -> str:
        return f"RemoteArchive({self.crate!r}, {self.key[:16]!r}, size={self.size})"


class RemoteObject:
    """One object as a listing or a HEAD saw it. Times are Unix seconds: ``modified`` is
    its LastModified, ``seen`` the server's clock when it answered (the reply's Date;
    this machine's clock when there is none), so :attr:`age` does not depend on the
    clock of the machine that asks."""

    __slots__ = ("name", "size", "modified", "etag", "seen")

    def __init__(self, name: str, size: int, modified: float, etag: str, seen: float) -> None:
        self.name, self.size, self.modified, self.etag, self.seen = name, size, modified, etag, seen

    @property
    def age(self) -> float:
        """Seconds since it was last written (never negative)."""
        return max(0.0, self.seen - self.modified)

    def __repr__(self) -> str:
        return f"RemoteObject({self.name!r}, size={self.size}, age={self.age:.0f}s)"


def _server_time(response: dict[str, Any]) -> float:
    """The Date header of a reply as Unix seconds; this machine's clock without one."""
    from email.utils import parsedate_to_datetime

    date = ((response.get("ResponseMetadata") or {}).get("HTTPHeaders") or {}).get("date")
    try:
        return parsedate_to_datetime(date).timestamp() if date else time.time()
    except (TypeError, ValueError, IndexError):
        return time.time()


def _timestamp(value: Any, default: float) -> float:
    """A LastModified (a datetime from botocore) as Unix seconds; ``default`` when absent."""
    return value.timestamp() if hasattr(value, "timestamp") else default


class _Ages:
    """What this process last learned of archives' ages, from listings and GETs, so that
    recording the use of an archive just listed or downloaded needs no HEAD. Keyed by
    (endpoint, bucket, name); bounded; shared by every client of a bucket."""

    LIMIT = 200_000

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ages: dict[tuple[str, str, str], tuple[float, float]] = {}

    def note(self, where: tuple[str, str], name: str, age: float) -> None:
        """``name`` was ``age`` seconds old (by the server's clock) just now."""
        with self._lock:
            self._ages.pop((*where, name), None)
            self._ages[(*where, name)] = (age, time.monotonic())
            if len(self._ages) > self.LIMIT:
                del self._ages[next(iter(self._ages))]

    def forget(self, where: tuple[str, str], name: str) -> None:
        with self._lock:
            self._ages.pop((*where, name), None)

    def age(self, where: tuple[str, str], name: str) -> float | None:
        """Its age now, or None when not known."""
        with self._lock:
            known = self._ages.get((*where, name))
        return None if known is None else known[0] + (time.monotonic() - known[1])


_AGES = _Ages()


class _Downloads:
    """Archives being downloaded by some thread of this process, so that a build's fetch
    and a prefetch that want the same archive at once download it once: the second waits
    for the first and reads what it imported."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._busy: dict[tuple[str, str, str], threading.Event] = {}

    def claim(self, ident: tuple[str, str, str]) -> tuple[bool, threading.Event]:
        """(True, event) when the caller is to download (then :meth:`release`), else
        (False, the event that is set when the other download ends)."""
        with self._lock:
            busy = self._busy.get(ident)
            if busy is not None:
                return False, busy
            event = self._busy[ident] = threading.Event()
            return True, event

    def release(self, ident: tuple[str, str, str], event: threading.Event) -> None:
        with self._lock:
            if self._busy.get(ident) is event:
                del self._busy[ident]
        event.set()


_DOWNLOADS = _Downloads()


def _content_md5(params: dict[str, Any], **_: Any) -> None:
    """Give a DeleteObjects request a Content-MD5 header: botocore ≥ 1.36 sends only a
    CRC32 checksum, which S3-compatible servers (MinIO before 2025, Ceph) refuse with
    MissingContentMD5; AWS takes both."""
    body = params.get("body")
    if isinstance(body, (bytes, bytearray)) and "Content-MD5" not in params["headers"]:
        digest = hashlib.md5(body, usedforsecurity=False).digest()
        params["headers"]["Content-MD5"] = b64encode(digest).decode("ascii")


class BadObject:
    """An object whose name does not fit the layout (skipped, reported)."""

    __slots__ = ("name", "why")

    def __init__(self, name: str, why: str) -> None:
        self.name, self.why = name, why

    def __repr__(self) -> str:
        return f"BadObject({self.name!r}, {self.why!r})"


def parse_object_name(rest: str) -> tuple[str, str, str]:
    """Classify a name relative to the prefix: (``archive`` | ``mkeys``, crate, key).

    Raises ValueError with the reason when the name does not fit the layout.
    """
    parts = rest.split("/")
    if len(parts) == 2 and parts[1].endswith(ARCHIVE_SUFFIX):
        kind, crate, key = "archive", parts[0], parts[1][:-len(ARCHIVE_SUFFIX)]
    elif len(parts) == 3 and parts[1] == MKEYS_DIR and parts[2].endswith(".json"):
        kind, crate, key = "mkeys", parts[0], parts[2][:-len(".json")]
    else:
        raise ValueError("not {crate}/{key}.tar.zst or {crate}/_mkeys/{mkey}.json")
    if not valid_crate_name(crate):
        raise ValueError(f"{crate!r} is not a valid crate name")
    if not valid_key(key):
        raise ValueError(f"{key!r} is not a 64-hex-digit key")
    return kind, crate, key


class Remote:
    """One S3 bucket (and prefix) holding shared cache entries.

    Cheap to build: boto3 is imported and the client created on first use, once, under
    a lock; the client is then shared by threads (its pool holds ``concurrency``
    connections at least). ``connect_timeout``, ``read_timeout`` and ``max_attempts``
    (the first try included) bound each request: the daemon's fetch on behalf of a
    waiting build uses small values. The defaults (5 s to connect, 20 s without a byte,
    3 tries) keep a stalled S3 from holding ``kache sync`` for minutes per object.
    """

    def __init__(self, bucket: str, *, prefix: str | None = "artifacts", endpoint: str | None = None,
                 region: str | None = "us-east-1", profile: str | None = None, access_key: str | None = None,
                 secret_key: str | None = None, session_token: str | None = None,
                 files: dict[str, str] | None = None, read_only: bool = False, concurrency: int = 8,
                 compression_level: int = 3, connect_timeout: float = 5.0, read_timeout: float = 20.0,
                 max_attempts: int = 3) -> None:
        self.bucket = bucket
        self.prefix = normalize_prefix(prefix)
        self.endpoint = endpoint or None
        self.region = region or "us-east-1"
        self.profile = profile or None
        self._access_key = access_key or None
        self._secret_key = secret_key or None
        self._session_token = session_token or None
        self.files = dict(files or {})
        """``credentials_file`` and ``config_file``: where boto3 reads profiles (AWS_SHARED_CREDENTIALS_FILE,
        AWS_CONFIG_FILE of the build that asked)."""
        self.read_only = bool(read_only)
        """Never write: ``put``, deletes and use records refuse (``cache.remote.read_only``)."""
        self.concurrency = max(1, int(concurrency))
        self.compression_level = int(compression_level)
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.max_attempts = max(1, int(max_attempts))
        self.warnings: list[str] = []
        """Problems found while configuring (one credential of two set): for a person."""
        self._secrets: list[str] = [s for s in (self._access_key, self._secret_key, self._session_token) if s]
        self._lock = threading.Lock()
        self._client: Any = None

    @property
    def url(self) -> str:
        """``s3://bucket/prefix`` (what messages show)."""
        return url_of(self.bucket, self.prefix)

    def __repr__(self) -> str:  # never the credentials
        return f"Remote(bucket={self.bucket!r}, prefix={self.prefix!r}, endpoint={self.endpoint!r})"

    @property
    def credential_source(self) -> str:
        """Where the credentials come from: ``env``, ``profile <name>`` or ``default chain``."""
        if self._access_key and self._secret_key:
            return "env"
        if self.profile:
            return f"profile {self.profile}"
        return "default chain"

    @classmethod
    def from_settings(cls, settings: Settings, **kwargs: Any) -> Remote | None:
        """The remote the settings describe, or None when no bucket is set.

        ``kwargs`` override constructor arguments (timeouts, ``max_attempts``).
        """
        from kache.remote import spec as spec_mod

        spec = spec_mod.from_settings(settings)
        if spec is None:
            return None
        env = settings.env
        access = (env.get("KACHE_S3_ACCESS_KEY") or "").strip()
        secret = (env.get("KACHE_S3_SECRET_KEY") or "").strip()
        warnings = []
        if bool(access) != bool(secret):
            have, missing = (("KACHE_S3_ACCESS_KEY", "KACHE_S3_SECRET_KEY") if access
                             else ("KACHE_S3_SECRET_KEY", "KACHE_S3_ACCESS_KEY"))
            warnings.append(f"remote credentials: {have} is set but {missing} is not: ignoring it; "
                            "using the profile or the AWS default credentials instead")
        kwargs.setdefault("concurrency", settings["cache.s3_concurrency"])
        kwargs.setdefault("compression_level", settings["cache.compression_level"])
        remote = cls.from_spec(spec, **kwargs)
        remote.warnings.extend(warnings)
        return remote

    @classmethod
    def from_spec(cls, spec: RemoteSpec, **kwargs: Any) -> Remote:
        """The remote a build asked for (:mod:`kache.remote.spec`); ``kwargs`` add or
        override constructor arguments (concurrency, compression, timeouts)."""
        creds = spec.credentials
        args: dict[str, Any] = {
            "prefix": spec.prefix, "endpoint": spec.endpoint, "region": spec.region, "profile": spec.profile,
            "access_key": creds.get("access_key"), "secret_key": creds.get("secret_key"),
            "session_token": creds.get("session_token"), "files": spec.files, "read_only": spec.read_only,
        }
        args.update(kwargs)
        return cls(spec.bucket, **args)

    # ------------------------------------------------------------------ client, errors

    def client(self) -> Any:
        """The boto3 S3 client (created on first use)."""
        with self._lock:
            if self._client is None:
                self._client = self._make_client()
            return self._client

    def _make_client(self) -> Any:
        import boto3.session
        from botocore import exceptions as bx
        from botocore.config import Config

        try:
            core = None
            if self.files:  # the asking build's AWS_SHARED_CREDENTIALS_FILE / AWS_CONFIG_FILE
                import botocore.session

                core = botocore.session.Session()
                for name, path in self.files.items():
                    core.set_config_variable(name, path)
            if self._access_key and self._secret_key:
                session = boto3.session.Session(aws_access_key_id=self._access_key,
                                                aws_secret_access_key=self._secret_key,
                                                aws_session_token=self._session_token,
                                                region_name=self.region, botocore_session=core)
            elif self.profile:
                session = boto3.session.Session(profile_name=self.profile, region_name=self.region,
                                                botocore_session=core)
            else:
                session = boto3.session.Session(region_name=self.region, botocore_session=core)
            # Learn the credentials in use, so no message can ever show them.
            creds = session.get_credentials()
            if creds is not None:
                frozen = creds.get_frozen_credentials()
                self._secrets.extend(s for s in (frozen.access_key, frozen.secret_key, frozen.token) if s)
            config = Config(
                region_name=self.region,
                connect_timeout=self.connect_timeout,
                read_timeout=self.read_timeout,
                retries={"total_max_attempts": self.max_attempts, "mode": "standard"},
                max_pool_connections=max(10, self.concurrency),
                s3={"addressing_style": "path"} if self.endpoint else None,
            )
            return session.client("s3", endpoint_url=self.endpoint, config=config)
        except bx.ProfileNotFound as e:
            raise RemoteError(f"remote setup failed: profile {self.profile!r}: not found in ~/.aws/config "
                              "or ~/.aws/credentials (set cache.remote.profile to an existing profile)"
                              ) from e
        except (bx.BotoCoreError, ValueError) as e:
            raise RemoteError(self._scrub(f"remote setup failed: s3://{self.bucket}: {e}")) from e

    def close(self) -> None:
        """Close the client's connections (a new client is made on next use)."""
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            try:
                client.close()
            except Exception:  # noqa: BLE001 - closing must not fail the caller
                pass

    def _scrub(self, text: str) -> str:
        for s in self._secrets:
            if len(s) >= 4:
                text = text.replace(s, _REDACTED)
        return text

    def _where(self, name: str | None) -> str:
        return f"s3://{self.bucket}/{name}" if name else f"s3://{self.bucket}"

    def _error(self, op: str, name: str | None, e: BaseException) -> RemoteError:
        """A botocore/boto3/network error as a RemoteError for a person (no credentials)."""
        from botocore import exceptions as bx

        why = str(e)
        if isinstance(e, bx.ClientError):
            err = e.response.get("Error", {}) or {}
            code = str(err.get("Code") or "")
            status = (e.response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
            message = str(err.get("Message") or "").strip()
            head = f"HTTP {status}" if status else "error"
            if code and code != str(status):
                head += f" {code}"
            hint = {
                "NoSuchBucket": "the bucket does not exist (check cache.remote.bucket)",
                "AccessDenied": "access denied (check the credentials and the bucket's policy)",
                "InvalidAccessKeyId": "the access key was not accepted",
                "SignatureDoesNotMatch": "the secret key was not accepted",
                "ExpiredToken": "the credentials have expired",
                "403": "access denied (check the credentials and the bucket's policy)",
            }.get(code)
            why = head + (f": {hint}" if hint else "") + (f" ({message})" if message else "")
        elif isinstance(e, bx.NoCredentialsError):
            why = ("no credentials found: set KACHE_S3_ACCESS_KEY and KACHE_S3_SECRET_KEY, "
                   "cache.remote.profile, or AWS credentials")
        elif isinstance(e, (bx.EndpointConnectionError, bx.ConnectTimeoutError, bx.ReadTimeoutError,
                            bx.ConnectionClosedError)):
            why = f"cannot reach the endpoint: {e}"
        return RemoteError(self._scrub(f"remote {op} failed: {self._where(name)}: {why}"))

    @staticmethod
    def _is_not_found(e: BaseException) -> bool:
        from botocore import exceptions as bx

        if not isinstance(e, bx.ClientError):
            return False
        code = str((e.response.get("Error") or {}).get("Code") or "")
        return code in _NOT_FOUND

    @staticmethod
    def _catchable() -> tuple[type[BaseException], ...]:
        from botocore import exceptions as bx

        return (bx.BotoCoreError, bx.ClientError)

    # ------------------------------------------------------------------ names

    def _join(self, *parts: str) -> str:
        return "/".join(p for p in (self.prefix, *parts) if p)

    def archive_name(self, crate: str, key: str) -> str:
        """``{prefix}/{crate}/{key}.tar.zst`` (crate and key validated)."""
        self._check(crate, key, "key")
        return self._join(crate, key + ARCHIVE_SUFFIX)

    def mkeys_name(self, crate: str, mkey: str) -> str:
        """``{prefix}/{crate}/_mkeys/{mkey}.json`` (crate and cheap key validated)."""
        self._check(crate, mkey, "cheap key")
        return self._join(crate, MKEYS_DIR, mkey + ".json")

    @staticmethod
    def _check(crate: str, key: str, what: str) -> None:
        if not valid_crate_name(crate):
            raise RemoteError(f"remote object name failed: crate {crate!r}: not a valid crate name "
                              "(letters, digits, _ . - only, no '..', at most 128)")
        if not valid_key(key):
            raise RemoteError(f"remote object name failed: {what} {key!r}: not 64 lowercase hex digits")

    # ------------------------------------------------------------------ objects

    def put(self, name: str, data: bytes) -> None:
        """Write one object (refused on a read-only remote)."""
        self._refuse_write("PUT", name)
        try:
            self.client().put_object(Bucket=self.bucket, Key=name, Body=data)
        except self._catchable() as e:
            raise self._error("PUT", name, e) from e

    def get(self, name: str, *, max_bytes: int | None = None) -> bytes | None:
        """One object's bytes; None when it does not exist (404). ``max_bytes`` refuses a
        larger object before reading it."""
        try:
            resp = self.client().get_object(Bucket=self.bucket, Key=name)
            length = resp.get("ContentLength")
            if max_bytes is not None and isinstance(length, int) and length > max_bytes:
                resp["Body"].close()
                raise RemoteError(f"remote GET failed: {self._where(name)}: {length} bytes, "
                                  f"more than the {max_bytes}-byte limit")
            data: bytes = resp["Body"].read()
            seen = _server_time(resp)
            _AGES.note(self._ages_where, name, max(0.0, seen - _timestamp(resp.get("LastModified"), seen)))
            return data
        except self._catchable() as e:
            if self._is_not_found(e):
                return None
            raise self._error("GET", name, e) from e

    def exists(self, name: str) -> bool:
        """Whether an object exists (HEAD)."""
        return self.stat(name) is not None

    def stat(self, name: str) -> RemoteObject | None:
        """One object's size, LastModified and ETag (HEAD); None when it does not exist."""
        from botocore import exceptions as bx

        try:
            resp = self.client().head_object(Bucket=self.bucket, Key=name)
        except self._catchable() as e:
            status = (e.response.get("ResponseMetadata") or {}).get("HTTPStatusCode") \
                if isinstance(e, bx.ClientError) else None
            if self._is_not_found(e) or status == 404:
                return None
            raise self._error("HEAD", name, e) from e
        seen = _server_time(resp)
        return RemoteObject(name, int(resp.get("ContentLength") or 0),
                            _timestamp(resp.get("LastModified"), seen), str(resp.get("ETag") or ""), seen)

    def list(self, prefix: str = "", *, page_size: int | None = None) -> Iterator[tuple[str, int]]:
        """(name, size) of every object whose name starts with ``prefix`` (paginated;
        ``page_size`` names per request, the server's default when None)."""
        for obj in self.list_objects(prefix, page_size=page_size):
            yield obj.name, obj.size

    def list_objects(self, prefix: str = "", *, page_size: int | None = None) -> Iterator[RemoteObject]:
        """Every object whose name starts with ``prefix``, with its LastModified and ETag
        (paginated like :meth:`list`)."""
        config = {"PageSize": page_size} if page_size else {}
        try:
            pages = self.client().get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=prefix, PaginationConfig=config)
            for page in pages:
                seen = _server_time(page)
                for obj in page.get("Contents", []) or []:
                    found = RemoteObject(str(obj["Key"]), int(obj.get("Size", 0)),
                                         _timestamp(obj.get("LastModified"), seen), str(obj.get("ETag") or ""),
                                         seen)
                    if found.name.endswith(ARCHIVE_SUFFIX):
                        _AGES.note(self._ages_where, found.name, found.age)
                    yield found
        except self._catchable() as e:
            raise self._error("LIST", prefix or None, e) from e

    # ------------------------------------------------------------------ lifecycle

    @property
    def is_read_only(self) -> bool:
        """Whether this remote may only be read (``cache.remote.read_only``)."""
        return self.read_only

    def _refuse_write(self, op: str, name: str | None) -> None:
        if self.is_read_only:
            raise RemoteError(f"remote {op} refused: {self._where(name)}: the remote is read-only "
                              "(cache.remote.read_only)")

    def record_use(self, crate: str, key: str) -> bool:
        """Make an archive's LastModified now, if it is ``USE_RESOLUTION_SECS`` old or
        more: a copy onto itself (same bytes, new metadata ``kache-used``), so at most one
        small write per archive per day. True when it wrote. A missing archive, or a
        read-only remote, writes nothing (False). Raises RemoteError."""
        if self.is_read_only:
            return False
        name = self.archive_name(crate, key)
        age = _AGES.age(self._ages_where, name)  # just listed or downloaded: no HEAD
        if age is None:
            found = self.stat(name)
            if found is None:
                return False
            age = found.age
        if age < USE_RESOLUTION_SECS:
            return False
        if not self._touch(name):
            _AGES.forget(self._ages_where, name)
            return False
        _AGES.note(self._ages_where, name, 0.0)
        return True

    @property
    def _ages_where(self) -> tuple[str, str]:
        return (self.endpoint or "", self.bucket)

    def _touch(self, name: str) -> bool:
        """Copy an object onto itself (CopyObject, metadata replaced): its LastModified
        becomes now. False when it is gone."""
        self._refuse_write("COPY", name)
        used = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        try:
            self.client().copy_object(Bucket=self.bucket, Key=name,
                                      CopySource={"Bucket": self.bucket, "Key": name},
                                      MetadataDirective="REPLACE", Metadata={"kache-used": used})
        except self._catchable() as e:
            if self._is_not_found(e):
                return False
            raise self._error("COPY", name, e) from e
        return True

    def delete(self, names: Sequence[str]) -> dict[str, str]:
        """Delete objects, ``DELETE_BATCH`` names per DeleteObjects request. Returns the
        names the server refused to delete, each with its reason (an object already gone
        is not refused). Raises RemoteError when a request fails, or on a read-only
        remote."""
        names = builtins.list(names)
        if not names:
            return {}
        self._refuse_write("DELETE", names[0] if len(names) == 1 else self._many(names))
        client = self.client()
        client.meta.events.register("before-call.s3.DeleteObjects", _content_md5,
                                    unique_id="kache-content-md5")
        refused: dict[str, str] = {}
        for start in range(0, len(names), DELETE_BATCH):
            batch = names[start:start + DELETE_BATCH]
            try:
                resp = client.delete_objects(Bucket=self.bucket, Delete={
                    "Objects": [{"Key": n} for n in batch], "Quiet": True})
            except self._catchable() as e:
                raise self._error("DELETE", self._many(batch), e) from e
            for err in resp.get("Errors") or []:
                code, message = str(err.get("Code") or "error"), str(err.get("Message") or "").strip()
                refused[str(err.get("Key"))] = self._scrub(code + (f" ({message})" if message else ""))
        return refused

    @staticmethod
    def _many(names: Sequence[str]) -> str:
        return names[0] if len(names) == 1 else f"{names[0]} (and {len(names) - 1} more)"

    def check(self) -> str:
        """One listing request under the prefix, for ``kache doctor``: reachable, bucket
        there, credentials accepted. Returns a line saying so; raises RemoteError."""
        for _ in self.list(self.prefix, page_size=1):
            break
        return f"{self.url} answers (credentials from {self.credential_source})"

    def list_crates(self) -> builtins.list[str]:
        """Crate names that have a folder under the prefix (one delimited listing;
        invalid names are left out)."""
        base = self._join("") + "/" if self.prefix else ""
        out = []
        try:
            pages = self.client().get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=base, Delimiter="/")
            for page in pages:
                for cp in page.get("CommonPrefixes", []) or []:
                    crate = str(cp["Prefix"])[len(base):].rstrip("/")
                    if valid_crate_name(crate):
                        out.append(crate)
                    else:
                        log.warning("remote: skipping %r: not a valid crate name", cp["Prefix"])
        except self._catchable() as e:
            raise self._error("LIST", base or None, e) from e
        return sorted(out)

    def list_archives(self, crate: str | None = None, *, mkeys: set[tuple[str, str]] | None = None
                      ) -> tuple[builtins.list[RemoteArchive], builtins.list[BadObject]]:
        """The archives of one crate (or of every crate), and the objects whose names do
        not fit the layout (skipped; the caller reports them). ``mkeys``, when given,
        receives ``(crate, cheap key)`` of every ``_mkeys`` object listed on the way."""
        if crate is not None:
            self._check(crate, "0" * 64, "key")
        base = self._join(crate or "")
        base = base + "/" if base else ""
        good: list[RemoteArchive] = []
        bad: list[BadObject] = []
        root = self._join("") + "/" if self.prefix else ""
        for name, size in self.list(base):
            try:
                kind, found_crate, key = parse_object_name(name[len(root):])
            except ValueError as e:
                bad.append(BadObject(name, str(e)))
                continue
            if kind == "archive":
                good.append(RemoteArchive(found_crate, key, name, size))
            elif mkeys is not None:
                mkeys.add((found_crate, key))
        return good, bad

    # ------------------------------------------------------------------ entries

    def upload(self, store: Store, key: str, *, check_exists: bool = True) -> int:
        """Pack and put one local entry, then announce it under its cheap key.

        Returns the archive's size, or 0 when ``check_exists`` found it on the remote
        already (nothing sent). Raises ArchiveError (the entry cannot be packed) or
        RemoteError.
        """
        entry = store.get(key)
        if entry is None:
            raise RemoteError(f"remote upload failed: {key}: not in the local store")
        name = self.archive_name(entry.crate_name, key)
        if check_exists and self.exists(name):
            # Uploaded before (here or by another machine); make sure it is announced,
            # in case that upload stopped between the archive and its _mkeys object.
            if valid_key(entry.mkey):
                self._announce(entry)
            return 0
        data = pack_entry(store, key, self.compression_level)
        self.put(name, data)  # the archive first: what announces it must never dangle
        if valid_key(entry.mkey):
            self._announce(entry)
        return len(data)

    def upload_entry(self, store: Store, key: str) -> bool:
        """Upload one local entry unless the remote has it (HEAD). True when uploaded.

        What the daemon calls for an upload intent; safe to repeat after any failure.
        """
        return self.upload(store, key) > 0

    def announce(self, store: Store, key: str) -> bool:
        """List a local entry whose archive is on the remote under its cheap key (repairs
        an upload that stopped between the archive and its ``_mkeys`` object). False when
        the entry is gone or has no cheap key. Raises RemoteError."""
        entry = store.get(key)
        if entry is None or not valid_key(entry.mkey):
            return False
        self._announce(entry)
        return True

    def _announce(self, entry: Entry) -> None:
        """Add the entry to its ``_mkeys`` object (read-modify-write; no write when it is
        listed already, or older than the ``MKEYS_CAP`` newest)."""
        name = self.mkeys_name(entry.crate_name, entry.mkey)
        current = self._read_mkeys(name)
        if any(i["key"] == entry.key for i in current):
            return
        items = list(current)
        items.append({"key": entry.key, "created": float(entry.created)})
        items.sort(key=lambda i: i["created"], reverse=True)
        items = items[:MKEYS_CAP]
        if items != current:
            self.put(name, json.dumps(items, separators=(",", ":")).encode())

    def _read_mkeys(self, name: str) -> builtins.list[dict[str, Any]]:
        """The valid items of a ``_mkeys`` object (none when missing or unreadable)."""
        raw = self.get(name, max_bytes=1 << 20)
        if raw is None:
            return []
        try:
            doc = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError):
            log.warning("remote: %s: not valid JSON; ignoring it", name)
            return []
        if not isinstance(doc, list):
            return []
        return [{"key": i["key"], "created": float(i["created"])} for i in doc
                if isinstance(i, dict) and valid_key(i.get("key"))
                and isinstance(i.get("created"), (int, float)) and not isinstance(i.get("created"), bool)]

    def mkey_candidates(self, crate: str, mkey: str) -> builtins.list[str]:
        """Full keys announced under a cheap key, newest first (invalid items skipped)."""
        return [i["key"] for i in self._read_mkeys(self.mkeys_name(crate, mkey))]

    def fetch_entry(self, store: Store, crate: str, key: str, origin: str = "remote", *,
                    wait: float | None = None) -> Entry | None:
        """Download and import one archive; None when the remote does not have it. When
        another thread of this process is downloading it already, wait for that (at most
        ``wait`` seconds; None: as long as it takes) and return what it imported.

        Raises RemoteError, or ArchiveError for a bad archive (nothing recorded).
        """
        name = self.archive_name(crate, key)
        ident = (*self._ages_where, name)
        mine, done = _DOWNLOADS.claim(ident)
        if not mine:
            finished = done.wait(wait)
            entry = store.get(key)
            if entry is None and finished:
                raise RemoteError(f"remote GET failed: {self._where(name)}: the download another request of "
                                  "this process made at the same time did not import it")
            return entry
        try:
            if store.has_key(key):  # a download that ended just before this one began
                return store.get(key)
            data = self.get(name)
            if data is None:
                return None
            return import_archive(store, data, expected_key=key, expected_crate=crate, origin=origin, name=name)
        finally:
            _DOWNLOADS.release(ident, done)

    def fetch_by_mkey(self, store: Store, crate: str, mkey: str, *, limit: int = 3,
                      deadline: float | None = None, origin: str = "remote") -> builtins.list[str]:
        """Import the newest entries announced under a cheap key that the store lacks.

        Looks at most ``limit`` candidates; stops when ``time.monotonic()`` passes
        ``deadline``. Returns the keys imported. A bad archive is skipped (logged); when
        nothing could be imported and some candidate failed, that error is raised.
        """
        if deadline is not None and time.monotonic() >= deadline:
            return []
        candidates = self.mkey_candidates(crate, mkey)
        imported: list[str] = []
        errors: list[KacheError] = []
        tried = 0
        for key in candidates:
            if tried >= limit or (deadline is not None and time.monotonic() >= deadline):
                break
            if store.has_key(key):
                continue
            tried += 1
            try:
                entry = self.fetch_entry(store, crate, key, origin=origin,
                                         wait=None if deadline is None else max(0.0, deadline - time.monotonic()))
            except ArchiveError as e:
                log.warning("%s", e)
                errors.append(e)
                continue
            except RemoteError as e:
                errors.append(e)
                continue
            if entry is not None:
                imported.append(key)
        if not imported and errors:
            raise errors[0]
        return imported
