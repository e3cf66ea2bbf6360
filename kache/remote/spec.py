"""Which remote a build asks for: the settings that choose it, as one small record.

The remote follows the build. A build's effective settings (system file, user file,
environment) name its remote; the wrapper sends that remote, as a :class:`RemoteSpec`
in JSON, with every request that touches it (``fetch``, ``prefetch``, ``upload``), and
the daemon serves each remote its builds ask for, one S3 client per remote, and no
other. Upload intents remember their remote (without credentials) under
``uploads/<queue id>/`` in the store, so a daemon started later uploads them to the
right bucket, with the right credentials.

Credentials travel the same way, from the build's environment, over the owner-only
socket, and are never written to disk, shown or logged: ``KACHE_S3_ACCESS_KEY`` and
``KACHE_S3_SECRET_KEY`` first, then ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY`` and
``AWS_SESSION_TOKEN``; the profile is ``cache.remote.profile``, else ``AWS_PROFILE``.
Without any, the daemon uses the AWS default chain of its own environment (instance
roles, ``~/.aws``).

Stdlib only (the wrapper imports it on a miss).
"""

from __future__ import annotations

import hashlib
import json

from kache.errors import KacheError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

    from kache.settings import Settings

__all__ = ["RemoteSpec", "SpecError", "from_settings", "from_json", "credentials_from_env", "credential_files",
           "with_access", "normalize_prefix", "url_of", "CREDENTIAL_VARIABLES"]

_CREDENTIAL_VARIABLES = (
    ("KACHE_S3_ACCESS_KEY", "KACHE_S3_SECRET_KEY", None),
    ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"),
)
_FILE_VARIABLES = {"AWS_SHARED_CREDENTIALS_FILE": "credentials_file", "AWS_CONFIG_FILE": "config_file"}
CREDENTIAL_VARIABLES = tuple(v for trio in _CREDENTIAL_VARIABLES for v in trio if v) + (
    "AWS_PROFILE", *_FILE_VARIABLES)
"""Every variable through which a build's environment gives credentials."""
_MAX_TEXT = 2048


class SpecError(KacheError, ValueError):
    """A remote description that is not one (its text says which field, and why)."""


def normalize_prefix(prefix: str | None) -> str:
    """``/a//b/`` → ``a/b``; empty or None → ``""`` (the bucket root)."""
    return "/".join(p for p in (prefix or "").split("/") if p)


def url_of(bucket: str, prefix: str) -> str:
    """``s3://bucket/prefix`` (``s3://bucket`` at the bucket root): what messages show."""
    return f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}"


class RemoteSpec:
    """One remote: where it is (bucket, prefix, endpoint, region), how to reach it
    (profile, credentials, credential files) and whether builds may write to it.

    ``id`` names the place (endpoint, bucket, prefix, region); ``queue_id`` the place
    and the access: builds with other credentials for the same bucket have their own
    client and intents.
    """

    __slots__ = ("bucket", "prefix", "endpoint", "region", "profile", "read_only", "credentials", "files")

    def __init__(self, bucket: str, prefix: str = "artifacts", endpoint: str | None = None,
                 region: str = "us-east-1", profile: str | None = None, read_only: bool = False,
                 credentials: dict[str, str] | None = None, files: dict[str, str] | None = None) -> None:
        self.bucket = bucket
        self.prefix = normalize_prefix(prefix)
        self.endpoint = endpoint or None
        self.region = region or "us-east-1"
        self.profile = profile or None
        self.read_only = bool(read_only)
        self.credentials = dict(credentials or {})
        self.files = dict(files or {})

    def __repr__(self) -> str:  # never the credentials
        return f"RemoteSpec({self.url!r}, endpoint={self.endpoint!r}, read_only={self.read_only})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RemoteSpec) and self.to_json(secrets=True) == other.to_json(secrets=True)

    def __hash__(self) -> int:
        return hash(self.id)

    @property
    def url(self) -> str:
        """``s3://bucket/prefix`` (what status and messages show)."""
        return url_of(self.bucket, self.prefix)

    @property
    def where(self) -> str:
        """The URL, with the endpoint when there is one: ``s3://b/p at http://host:9000``."""
        return f"{self.url} at {self.endpoint}" if self.endpoint else self.url

    @property
    def id(self) -> str:
        """16 hex digits naming the place (the intents' directory)."""
        place = json.dumps([self.endpoint or "", self.bucket, self.prefix, self.region], separators=(",", ":"))
        return hashlib.sha256(place.encode()).hexdigest()[:16]

    @property
    def access_id(self) -> str:
        """8 hex digits naming who asks: the access key id (not the secret), the profile and
        the credential files. Builds with other access get their own client and their own
        upload queue: an upload goes out with the credentials of the build that asked."""
        who = json.dumps([self.credentials.get("access_key", ""), self.profile or "", sorted(self.files.items())],
                         separators=(",", ":"))
        return hashlib.sha256(who.encode()).hexdigest()[:8]

    @property
    def queue_id(self) -> str:
        """The place and the access: the name of the intents' directory (24 hex digits)."""
        return self.id + self.access_id

    @property
    def credential_source(self) -> str:
        if self.credentials.get("access_key"):
            return "environment"
        if self.profile:
            return f"profile {self.profile}"
        return "default chain"

    def secrets(self) -> list[str]:
        return [v for k, v in self.credentials.items() if v]

    def to_json(self, *, secrets: bool = True) -> dict[str, Any]:
        """The request's ``remote`` field; without ``secrets``, what an intent directory
        keeps (no credentials)."""
        out: dict[str, Any] = {"bucket": self.bucket, "prefix": self.prefix, "endpoint": self.endpoint,
                               "region": self.region, "profile": self.profile, "read_only": self.read_only}
        if self.files:
            out["files"] = dict(self.files)
        if secrets and self.credentials:
            out["credentials"] = dict(self.credentials)
        return out


def from_settings(settings: Settings, env: Mapping[str, str] | None = None) -> RemoteSpec | None:
    """The remote these settings name (None without a bucket), with the credentials of
    ``env`` (default: the settings' own environment)."""
    bucket = settings["cache.remote.bucket"]
    if not bucket:
        return None
    env = settings.env if env is None else env
    credentials, profile = credentials_from_env(env, settings["cache.remote.profile"] or None)
    return RemoteSpec(bucket, settings["cache.remote.prefix"], settings["cache.remote.endpoint"],
                      settings["cache.remote.region"], profile, bool(settings["cache.remote.read_only"]),
                      credentials, {} if credentials else credential_files(env))


def credential_files(env: Mapping[str, str]) -> dict[str, str]:
    """Where boto3 reads profiles for a build with this environment: its
    AWS_SHARED_CREDENTIALS_FILE and AWS_CONFIG_FILE, else ``~/.aws/credentials`` and
    ``~/.aws/config`` of its HOME (the daemon's HOME may be another)."""
    home = env.get("HOME") or ""
    defaults = {"credentials_file": ".aws/credentials", "config_file": ".aws/config"}
    out = {}
    for var, name in _FILE_VARIABLES.items():
        path = env.get(var) or (f"{home.rstrip('/')}/{defaults[name]}" if home.startswith("/") else "")
        if path:
            out[name] = path
    return out


def credentials_from_env(env: Mapping[str, str], profile: str | None = None) -> tuple[dict[str, str], str | None]:
    """The credentials and profile an environment gives, in the order of the AWS default
    chain with kache's own first: ``KACHE_S3_*`` keys, then ``profile``
    (``cache.remote.profile``), then ``AWS_*`` keys, then ``AWS_PROFILE``."""
    for key_var, secret_var, token_var in _CREDENTIAL_VARIABLES:
        if profile and key_var.startswith("AWS_"):
            break
        access = (env.get(key_var) or "").strip()
        secret = (env.get(secret_var) or "").strip()
        if access and secret:
            credentials = {"access_key": access, "secret_key": secret}
            token = (env.get(token_var) or "").strip() if token_var else ""
            if token:
                credentials["session_token"] = token
            return credentials, profile
    return {}, profile or (env.get("AWS_PROFILE") or "").strip() or None


def with_access(found: RemoteSpec, env: Mapping[str, str]) -> RemoteSpec:
    """``found`` (a spec kept without credentials) with the credentials ``env`` gives,
    unless it names a profile of its own."""
    if found.credentials or found.profile:
        return found
    credentials, profile = credentials_from_env(env)
    return RemoteSpec(found.bucket, found.prefix, found.endpoint, found.region, profile, found.read_only,
                      credentials, found.files)


def _text(doc: Mapping[str, Any], name: str, *, required: bool = False) -> str | None:
    value = doc.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value or len(value) > _MAX_TEXT or "\0" in value:
        raise SpecError(f"remote.{name} = {json.dumps(value, default=str)[:60]}: expected a non-empty string")
    return value


def from_json(doc: object) -> RemoteSpec:
    """A spec from a request's ``remote`` field or an intent directory's ``remote.json``.

    Raises SpecError naming the field that is wrong.
    """
    if not isinstance(doc, dict):
        raise SpecError(f"remote = {json.dumps(doc, default=str)[:60]}: expected an object with a bucket")
    bucket = _text(doc, "bucket", required=True)
    prefix = doc.get("prefix", "artifacts")
    if not isinstance(prefix, str) or len(prefix) > _MAX_TEXT:
        raise SpecError("remote.prefix: expected a string")
    endpoint = _text(doc, "endpoint")
    if endpoint is not None and not endpoint.startswith(("http://", "https://")):
        raise SpecError(f"remote.endpoint = {endpoint[:60]!r}: expected a URL starting with http:// or https://")
    read_only = doc.get("read_only", False)
    if not isinstance(read_only, bool):
        raise SpecError("remote.read_only: expected true or false")
    credentials: dict[str, str] = {}
    raw = doc.get("credentials")
    if raw is not None:
        if not isinstance(raw, dict) or not all(isinstance(v, str) and len(v) <= _MAX_TEXT for v in raw.values()):
            raise SpecError("remote.credentials: expected an object of strings")
        credentials = {k: raw[k] for k in ("access_key", "secret_key", "session_token") if raw.get(k)}
        if bool(credentials.get("access_key")) != bool(credentials.get("secret_key")):
            raise SpecError("remote.credentials: expected both access_key and secret_key")
    files: dict[str, str] = {}
    raw = doc.get("files")
    if raw is not None:
        if not isinstance(raw, dict) or not all(k in ("credentials_file", "config_file") and isinstance(v, str)
                                                for k, v in raw.items()):
            raise SpecError("remote.files: expected credentials_file and config_file paths")
        files = dict(raw)
    assert bucket is not None
    return RemoteSpec(bucket, prefix, endpoint, _text(doc, "region") or "us-east-1", _text(doc, "profile"),
                      read_only, credentials, files)
