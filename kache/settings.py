"""The one settings layer, driven by ``schema/config.schema.json``.

Every key, default, environment variable and description is written in the schema and
nowhere else. Layers, lowest first; a higher layer wins key by key:

1. ``default``  the schema's ``default`` of each setting;
2. ``system``   the file named by ``KACHE_CONFIG`` (the Nix module points it at a
                read-only file in the Nix store);
3. ``user``     ``$XDG_CONFIG_HOME/kache/config.toml``, else ``~/.config/kache/config.toml``;
4. ``env``      each setting's environment variable (the schema's ``x-env``).

Reading uses only the standard library (``tomllib``, ``json``), because every rustc call
reads settings. Full validation with jsonschema happens in :func:`validate`, which imports
it inside the function; the wrapper calls :func:`load_checked`, which validates once per
identity of the files and variables and remembers the result in the store.

Schema annotations this module understands:

``x-env``           the environment variable of a setting;
``x-format``        ``size`` (→ bytes), ``duration`` (→ seconds) or ``path`` (``~``/``$VAR``
                    expanded, must be absolute);
``x-default-text``  how to show a ``null`` default that kache computes;
``x-expected``      the words for a ``pattern`` a value must match;
``x-environment``   (top level) settings that only exist as environment variables;
``x-secret``        never shown, logged or put in an error;
``x-if-invalid``    what an invalid value does, on a setting or a table (then it holds for
                    every key below it): absent, the value is ignored and the next lower
                    layer's valid value is used (env > user file > system file > default),
                    with a warning; ``no-cache``, caching is off (every call runs rustc
                    directly), because falling back could mix caches or miss an input
                    (``cache.local_store``, ``key_salt``, ``extra_inputs``); ``no-remote``, the
                    remote is off and local caching goes on (``cache.remote``: falling back
                    from an invalid ``read_only`` would upload to a bucket meant read-only).

Degrading per setting (:func:`load`, :func:`load_checked`): each invalid value is
ignored with one warning naming the file or variable, the key, the value, what was
expected and what is used instead. :func:`validate` is the strict check (``kache config
validate``): every problem, raised.

Where kache cannot know what was meant for a setting that guards correctness or the
bucket, it does not guess the permissive way:

- a config file that cannot be read or parsed, and a ``KACHE_CONFIG`` that is relative
  (after ``~``/``$VAR``; cargo runs rustc in more than one directory) or names no
  readable file, turn caching off (it may hold a salt or extra inputs);
- an unknown key that may be a guarded setting misspelt (:func:`unknown_guard`: near a
  key with an ``x-if-invalid``, or a word of one in its name or the keys inside it) does
  what an invalid value of it would, and any unknown key under ``cache.remote`` turns the
  remote off (``key-salt``, ``[cache.extra.x] env``, ``[s3] read_only``); so does a
  ``KACHE_*`` variable near a guarded one's (``KACHE_REMOTE_READONLY``);
- an object-valued setting (``cache.extra_inputs``) is merged across layers rather
  than replaced: per crate, every layer's entries (more inputs is always safe);
- an env-only boolean (``KACHE_RECACHE``) is set by any value but empty/0/false/no/off;
- when the store is not named safely (``Settings.store_problem``),
  ``Settings.local_store`` raises: no command acts on the default store instead.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False  # typing costs ~11 ms to import; annotations are strings here

from kache import quickjson, units
from kache._record import Record
from kache.errors import SettingsError
from kache.store import layout

if TYPE_CHECKING:  # pathlib, typing and collections.abc stay off the wrapper's path
    from collections.abc import Callable, Collection, Iterator, Mapping
    from pathlib import Path
    from typing import Any, TypeVar

    _T = TypeVar("_T")  # used in annotations only, which are never evaluated

__all__ = [
    "Setting",
    "EnvSetting",
    "Source",
    "Settings",
    "load_schema",
    "settings_table",
    "setting",
    "env_settings",
    "lookup",
    "system_config_path",
    "user_config_path",
    "read",
    "load",
    "load_checked",
    "degrade",
    "validate",
    "validate_file",
    "env_flag",
    "env_flag_problem",
    "nearest_key",
    "shown_value",
]

def cache(fn: Callable[[str | None], _T]) -> Callable[..., _T]:
    """``functools.cache`` for a function of one optional argument (``functools``
    imports ``collections``: a few ms the wrapper's hot path does not need)."""
    memo: dict[str | None, _T] = {}

    def cached(arg: str | None = None) -> _T:
        try:
            return memo[arg]
        except KeyError:
            memo[arg] = value = fn(arg)
            return value

    cached.__doc__, cached.__name__ = fn.__doc__, fn.__name__
    return cached


SCHEMA_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "config.schema.json")

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


# --------------------------------------------------------------------------- schema


@cache
def load_schema(path: str | None = None) -> dict[str, Any]:
    """The schema as a dict (memoised per path)."""
    with open(path or SCHEMA_PATH, "rb") as f:
        schema: dict[str, Any] = quickjson.loads(f.read())
    return schema


class Setting(Record):
    """One leaf of the schema: a key a config file can set.

    ``key`` is the dotted path (``cache.remote.bucket``), ``section`` that of the table
    holding it (``cache.remote``).
    """

    __slots__ = ("key", "schema", "section")
    key: str
    schema: dict[str, Any]
    section: str

    @property
    def env(self) -> str | None:
        return self.schema.get("x-env")

    @property
    def default(self) -> Any:
        return self.schema.get("default")

    @property
    def format(self) -> str | None:
        return self.schema.get("x-format")

    @property
    def description(self) -> str:
        return str(self.schema.get("description", ""))

    @property
    def types(self) -> list[str]:
        t = self.schema.get("type", "string")
        return [t] if isinstance(t, str) else list(t)

    @property
    def default_text(self) -> str:
        """The default as a person reads it (``50GB``, ``true``, ``—``)."""
        if "x-default-text" in self.schema:
            return str(self.schema["x-default-text"])
        return display(self.default)


class EnvSetting(Record):
    """A setting that exists only as an environment variable (``x-environment``)."""

    __slots__ = ("name", "schema")
    name: str
    schema: dict[str, Any]

    @property
    def description(self) -> str:
        return str(self.schema.get("description", ""))

    @property
    def secret(self) -> bool:
        return bool(self.schema.get("x-secret"))

    @property
    def default(self) -> Any:
        return self.schema.get("default")


def _walk(node: Mapping[str, Any], prefix: str) -> Iterator[Setting]:
    for name, sub in node.get("properties", {}).items():
        key = f"{prefix}.{name}" if prefix else name
        if sub.get("type") == "object" and "properties" in sub:
            yield from _walk(sub, key)
        else:
            yield Setting(key=key, schema=sub, section=prefix)


@cache
def _table(path: str | None) -> tuple[Setting, ...]:
    return tuple(_walk(load_schema(path), ""))


def settings_table(schema_path: str | None = None) -> tuple[Setting, ...]:
    """Every setting of the schema, in schema order."""
    return _table(schema_path)


def setting(key: str, schema_path: str | None = None) -> Setting:
    """The setting ``key`` of the schema (``KeyError`` for a key it does not have)."""
    return _by_key(schema_path)[key]


def sections(schema_path: str | None = None) -> list[tuple[str, dict[str, Any]]]:
    """Every table of the schema (``cache``, ``cache.remote``) with its sub-schema."""
    out: list[tuple[str, dict[str, Any]]] = []

    def walk(node: Mapping[str, Any], prefix: str) -> None:
        for name, sub in node.get("properties", {}).items():
            key = f"{prefix}.{name}" if prefix else name
            if sub.get("type") == "object" and "properties" in sub:
                out.append((key, sub))
                walk(sub, key)

    walk(load_schema(schema_path), "")
    return out


def env_settings(schema_path: str | None = None) -> tuple[EnvSetting, ...]:
    """The env-only settings (``KACHE_DISABLED``, credentials, ...)."""
    env = load_schema(schema_path).get("x-environment", {})
    return tuple(EnvSetting(name, sub) for name, sub in env.items())


def env_flag(name: str, env: Mapping[str, str] | None = None) -> bool:
    """True when an env-only boolean such as ``KACHE_DISABLED`` is set: any non-empty value
    but 0/false/no/off (``KACHE_RECACHE=y`` must not keep the entry it exists to replace;
    :func:`degrade` warns about a spelling that is not 1/true/yes/on)."""
    value = (os.environ if env is None else env).get(name, "").strip().lower()
    return bool(value) and value not in _FALSE


def env_flag_problem(name: str, env: Mapping[str, str] | None = None) -> str | None:
    """The problem with an env-only boolean's spelling (``KACHE_RECACHE=y``), None when
    it is unset, empty or one of the accepted words; :func:`env_flag` takes it as set."""
    raw = (os.environ if env is None else env).get(name)
    text = (raw or "").strip().lower()
    if not text or text in _TRUE | _FALSE:
        return None
    return (f"invalid setting in environment variable {name}: {shown_value(raw)}: "
            "expected 1/true/yes/on or 0/false/no/off")


def display(value: Any) -> str:
    """A value as TOML would spell it (``true``, ``"50GB"`` shown as ``50GB``, ``—`` for none),
    credentials in a URL masked."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "true" if value else "false"
    return mask_url_credentials(str(value))


def mask_url_credentials(text: str) -> str:
    """``http://user:secret@host`` → ``http://***@host``: a URL's credentials are never
    shown, even in the message that refuses them."""
    if "@" not in text:
        return text
    import re

    return re.sub(r"(?i)\b(https?://)[^/@\s\"']+@", r"\1***@", text)


# --------------------------------------------------------------------------- files


def system_config_path(env: Mapping[str, str] | None = None) -> Path | None:
    """The file named by ``KACHE_CONFIG`` (``~`` and ``$VAR`` expanded), if set."""
    from pathlib import Path

    path = _system_file(os.environ if env is None else env)
    return None if path is None else Path(path)


def user_config_path(env: Mapping[str, str] | None = None) -> Path:
    """``$XDG_CONFIG_HOME/kache/config.toml``, else ``~/.config/kache/config.toml``."""
    from pathlib import Path

    return Path(_user_file(os.environ if env is None else env))


def _system_file(env: Mapping[str, str]) -> str | None:
    raw = env.get("KACHE_CONFIG", "").strip()
    return _expand(raw, env) if raw else None


def _user_file(env: Mapping[str, str]) -> str:
    base = env.get("XDG_CONFIG_HOME", "").strip()
    if not base or not os.path.isabs(base):  # the XDG spec says to ignore relative values
        base = os.path.join(_home(env), ".config")
    return os.path.join(base, "kache", "config.toml")


def default_cache_dir(env: Mapping[str, str] | None = None) -> str:
    env = os.environ if env is None else env
    base = env.get("XDG_CACHE_HOME", "").strip()
    if not base or not os.path.isabs(base):
        base = os.path.join(_home(env), ".cache")
    return os.path.join(base, "kache")


def _home(env: Mapping[str, str]) -> str:
    return env.get("HOME") or os.path.expanduser("~")


def _expand(raw: str, env: Mapping[str, str]) -> str:
    if raw == "~" or raw.startswith("~/"):
        raw = _home(env) + raw[1:]
    if "$" in raw:
        saved = os.environ
        # expandvars reads os.environ; point it at the env we were given, for this call only.
        try:
            # os.environ is typed _Environ[str]; a plain dict is all expandvars reads
            os.environ = dict(env)  # type: ignore[assignment]  # noqa: B003 - put back in finally
            raw = os.path.expandvars(raw)
        finally:
            os.environ = saved  # noqa: B003 - the real os.environ again
    return raw


def shown_path(path: Path | str, env: Mapping[str, str]) -> str:
    """A path as an error shows it: ``~/.config/kache/config.toml``."""
    text = str(path)
    home = _home(env).rstrip("/")
    if home and (text == home or text.startswith(home + "/")):
        return "~" + text[len(home):]
    return text


# --------------------------------------------------------------------------- the layers


class Source(Record):
    """Where a value came from: ``default``, ``system`` or ``user`` file, or ``env``.

    ``where`` is the file's path or the variable's name.
    """

    __slots__ = ("kind", "where")
    _defaults = {"where": ""}
    kind: str
    where: str

    def __str__(self) -> str:
        if self.kind == "default":
            return "default"
        if self.kind == "env":
            return f"env {self.where}"
        return f"{self.kind} file {self.where}"


class ConfigFile(Record):
    """A config file that was looked for; ``role`` is "system" or "user"."""

    __slots__ = ("role", "path", "exists", "data", "error")
    _defaults = {"data": dict, "error": None}
    role: str
    path: str
    exists: bool
    data: dict[str, Any]
    error: str | None


class Settings(Record):
    """Effective settings: one value and one source per key, plus what was ignored.

    ``extras`` holds keys no schema entry knows, with where they were set (kept, not used).
    ``formats`` (from the wrapper's memo) saves reading the schema to convert values.
    ``warnings``: one line per problem, to say once per build. ``rejected``: key → the
    invalid values ignored for it, as ``(value, source, why, effect)``, effect one of
    ``ignored``, ``caching is off``, ``the remote is off``. ``caching_off`` and
    ``remote_off``: the problems that turned caching or the remote off (``x-if-invalid``);
    empty when they are on.
    """

    __slots__ = ("values", "sources", "files", "env", "schema_path", "warnings", "extras", "formats",
                 "rejected", "caching_off", "remote_off", "unsafe_unknown", "merged", "store_problem")
    _defaults = {"schema_path": None, "warnings": list, "extras": dict, "formats": None, "rejected": dict,
                 "caching_off": list, "remote_off": list, "unsafe_unknown": list, "merged": dict,
                 "store_problem": None}
    values: dict[str, Any]
    sources: dict[str, Source]
    files: list[ConfigFile]
    env: Mapping[str, str]
    schema_path: str | None
    warnings: list[str]
    extras: dict[str, tuple[Any, Source]]
    formats: dict[str, str] | None
    rejected: dict[str, list[tuple[Any, Source, str, str]]]
    caching_off: list[str]
    remote_off: list[str]
    unsafe_unknown: list[tuple[str, str, str]]
    """Unknown keys that turn caching or the remote off: ``(x-if-invalid, problem, nearest key)``."""
    merged: dict[str, list[Source]]
    """Object-valued settings (``cache.extra_inputs``) set by more than one layer: their sources."""
    store_problem: str | None
    """Why the store cannot be named safely (an invalid ``cache.local_store``, a config file
    that may hold one): commands that open the store refuse rather than use the default."""

    def __getitem__(self, key: str) -> Any:
        """The value as written (``"50GB"``, ``"~/cache"``); :meth:`converted` is the value for use."""
        return self.values[key]

    def source(self, key: str) -> Source:
        return self.sources[key]

    def converted(self, key: str) -> Any:
        """The value converted for use: sizes in bytes, durations in seconds, paths expanded
        (``settings[key]`` is the value as written)."""
        value = self.values[key]
        if self.formats is not None:
            fmt = self.formats.get(key)
        else:
            fmt = _by_key(self.schema_path)[key].format
        try:
            return _convert(fmt, key, value, self.env)
        except units.UnitError as e:
            raise SettingsError([_problem(self.sources[key], key, value, str(e), self.env)]) from None

    @property
    def local_store(self) -> Path:
        """The store's directory; raises :class:`SettingsError` when the settings do not name
        it safely (``store_problem``): a command must not act on the default store instead."""
        from pathlib import Path

        if self.store_problem:
            raise SettingsError([self.store_problem])
        return Path(self.converted("cache.local_store"))


@cache
def _by_key(schema_path: str | None) -> dict[str, Setting]:
    return {s.key: s for s in _table(schema_path)}


def _convert(fmt: str | None, key: str, value: Any, env: Mapping[str, str]) -> Any:
    if fmt == "size" and value is not None:
        return units.parse_size(value)
    if fmt == "duration" and value is not None:
        return units.parse_duration(value)
    if fmt == "path":
        if value is None and key == "cache.local_store":
            return default_cache_dir(env)
        return None if value is None else os.path.normpath(_expand(str(value), env))
    return value


def _read_file(role: str, path: str | Path, env: Mapping[str, str], strict: bool = True) -> ConfigFile:
    """The file parsed. A file that cannot be read raises :class:`SettingsError` when
    ``strict``; else it comes back with its ``error`` (and no data). A missing user file
    is no error; a missing system file is (``KACHE_CONFIG`` names it)."""
    import tomllib

    path = str(path)
    error: str | None = None
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        if role != "system":
            return ConfigFile(role, path, exists=False)
        error = (f"cannot read config file: {path}: it does not exist (named by KACHE_CONFIG); "
                 "point KACHE_CONFIG at an existing file or unset it")
        if strict:
            raise SettingsError([error]) from None
        return ConfigFile(role, path, exists=False, error=error)
    except tomllib.TOMLDecodeError as e:
        error = f"cannot read config file: {shown_path(path, env)}: invalid TOML: {e}"
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        error = f"cannot read config file: {shown_path(path, env)}: {reason}"
    except RecursionError:
        error = f"cannot read config file: {shown_path(path, env)}: invalid TOML: nested too deeply"
    except ValueError as e:  # e.g. an integer of more than 4300 digits
        error = f"cannot read config file: {shown_path(path, env)}: invalid TOML: {_shorten(str(e))}"
    if error is not None:
        if role == "system":
            error += " (named by KACHE_CONFIG); fix it, point KACHE_CONFIG at a readable file or unset it"
        if strict:
            raise SettingsError([error])
        return ConfigFile(role, path, exists=True, error=error)
    return ConfigFile(role, path, exists=True, data=data)


def lookup(doc: Mapping[str, Any], key: str) -> tuple[bool, Any]:
    """(found, value) of a dotted ``key`` (``cache.remote.bucket``) in a parsed TOML document."""
    node: Any = doc
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return False, None
        node = node[part]
    return True, node


def _unknown_items(doc: Mapping[str, Any], node: Mapping[str, Any], prefix: str) -> Iterator[tuple[str, Any]]:
    """(dotted key, value) of every key of ``doc`` the schema ``node`` does not know (the
    value read where it is: a quoted key holding a dot is not split again)."""
    props = node.get("properties", {})
    for name, value in doc.items():
        key = f"{prefix}.{name}" if prefix else name
        sub = props.get(name)
        if sub is None:
            yield key, value
        elif sub.get("type") == "object" and "properties" in sub and isinstance(value, dict):
            yield from _unknown_items(value, sub, key)


def unknown_key_warning(key: str, shown_file: str, schema_path: str | None = None) -> str:
    """``unknown key `bukket` in ~/.config/kache/config.toml (cache.remote.bukket), did you
    mean `bucket`?``: the nearest known key of the same table, when one is near."""
    import difflib

    section, _, name = key.rpartition(".")
    node: Mapping[str, Any] = load_schema(schema_path)
    for part in section.split(".") if section else []:
        node = node.get("properties", {}).get(part, {})
    near = difflib.get_close_matches(name, list(node.get("properties", {})), n=1, cutoff=0.75)
    hint = f", did you mean `{near[0]}`?" if near else " (ignored; `kache config schema` lists the known keys)"
    where = f" ({key})" if section else ""  # a top-level key is its own name
    return f"unknown key `{name}` in {shown_file}{where}{hint}"


def nearest_key(key: str, schema_path: str | None = None, cutoff: float = 0.6) -> str | None:
    """The known key or table nearest to an unknown dotted ``key``: the whole key against
    every known one, and its last part against every known key's last part, ``-`` read
    as ``_``, case-insensitive (``cache.extra_input``, ``key-salt``, ``remote`` →
    ``cache.extra_inputs``, ``cache.key_salt``, ``cache.remote``); None when none is as
    near as ``cutoff`` (difflib's ratio)."""
    import difflib

    known = [s.key for s in settings_table(schema_path)] + [k for k, _ in sections(schema_path)]

    def norm(text: str) -> str:
        return text.lower().replace("-", "_")

    def below_shared(a: list[str], b: list[str]) -> tuple[str, str]:
        while a and b and a[0] == b[0]:  # `cache.foo` is not near `cache.key_salt` for its `cache.`
            a, b = a[1:], b[1:]
        return ".".join(a), ".".join(b)

    parts, leaf = norm(key).split("."), norm(key).rpartition(".")[2]
    best: tuple[float, int, str] | None = None
    for n, k in enumerate(known):
        mine, theirs = below_shared(parts, norm(k).split("."))
        score = max(difflib.SequenceMatcher(None, mine, theirs).ratio() if mine and theirs else 0.0,
                    difflib.SequenceMatcher(None, leaf, norm(k).rpartition(".")[2]).ratio())
        if score >= cutoff and (best is None or (score, -n) > (best[0], best[1])):
            best = (score, -n, k)
    return None if best is None else best[2]


# An unknown key is taken as a guarded setting misspelt (x-if-invalid: kache cannot know
# what it meant, so it does not guess the permissive way) when it is this near a guarded
# key (or its variable's name: `cache_dir`), or when a word of its name, or of a key
# inside it (an unknown table or list of tables: `[cache.foo.util] env = [...]`,
# `[s3] read_only = true`), is one of these, unless it is as near an unguarded key
# (`store_executables`). Far, plain words (`note`, `version`, `[tooling] name`) stay
# warnings. Variables are judged by nearness and the plainest words only: wrappers and
# test harnesses set KACHE_ENV, KACHE_PREFIX and the like.
GUARD_NEAR = 0.75
_NO_CACHE_WORDS = frozenset({"salt", "salts", "keysalt", "namespace", "seed", "extra", "input", "inputs", "store",
                             "untracked", "env", "environment", "vars", "files", "dirs"})
_NO_REMOTE_WORDS = frozenset({"remote", "s3", "bucket", "endpoint", "url", "prefix", "region", "read", "readonly",
                              "rdonly", "ro", "only", "upload", "uploads", "publish", "push", "pull", "write",
                              "writable", "writes", "dry"})
_COMMON_NO_CACHE_WORDS = frozenset({"input", "env", "environment", "vars", "files", "dirs"})
"""Words of :data:`_NO_CACHE_WORDS` that other programs' settings use as much: inside an
unknown table far from kache's, they do not count for a single value (a string, number
or boolean) unless its key names kache's; for a list or a table they do."""
_ENV_NO_CACHE_WORDS = frozenset({"salt", "salts", "keysalt", "namespace"})
_ENV_NO_REMOTE_WORDS = frozenset({"readonly", "rdonly", "ro", "bucket", "endpoint", "publish", "upload", "uploads",
                                  "noupload", "pull", "push", "nopush", "write"})


def _words(text: str) -> set[str]:
    """The words of a key or variable name: split at `.`, `_`, `-`, blanks and camelCase."""
    import re

    return set(re.split(r"[._\-\s]+", re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", text).lower())) - {""}


def unknown_guard(name: str, inner: list[str], schema_path: str | None = None,
                  known_near: Mapping[str, str] | None = None,
                  scalars: Collection[str] = ()) -> tuple[str, str | None]:
    """``(x-if-invalid, nearest known key)`` of an unknown config key (dotted; ``inner``:
    the keys inside it when it is a table or a list of tables, ``scalars`` those of them
    that hold one string, number or boolean) or ``KACHE_*`` variable name without
    ``KACHE_`` (``known_near``: every known variable's, with its annotation):
    ``no-cache``, ``no-remote`` or ``""`` (only a warning)."""
    import difflib

    policy = if_invalid(schema_path)
    foreign = known_near is None and "." not in name and bool(inner) \
        and nearest_key(name, schema_path, GUARD_NEAR) is None
    words = _words(name)
    for text in inner:
        said = _words(text)
        if (foreign and text in scalars and "cache" not in said
                and nearest_key(text, schema_path, GUARD_NEAR) is None):
            # In a table of its own (`[ui]`, `[team]`), a single value under a word other
            # programs' settings use too does not count: `[ui] input_mode = "vim"` warns;
            # `[my_macros] env = ["DATABASE_URL"]` (an extra_inputs entry's shape), `[team]
            # salt`, `[local] store`, `[build] extra_inputs` still turn caching off.
            said -= _COMMON_NO_CACHE_WORDS
        words |= said
    if known_near is None:
        near = nearest_key(name, schema_path, GUARD_NEAR)
        kind = policy.get(near, "") if near else ""
        leaf = name.rpartition(".")[2].lower().replace("-", "_")
        by_variable = {s.env[len("KACHE_"):].lower(): s.key for s in settings_table(schema_path) if s.env}
        named = difflib.get_close_matches(leaf, list(by_variable), n=1, cutoff=GUARD_NEAR)
        if named and policy.get(by_variable[named[0]]) and not kind:  # `cache_dir` is KACHE_CACHE_DIR's
            near, kind = by_variable[named[0]], policy[by_variable[named[0]]]
        no_cache, no_remote = words & _NO_CACHE_WORDS, words & _NO_REMOTE_WORDS
    else:
        found = difflib.get_close_matches(name, list(known_near), n=1, cutoff=GUARD_NEAR)
        near = found[0] if found else None
        kind = known_near[near] if near else ""
        no_cache = words & _ENV_NO_CACHE_WORDS
        no_remote = words & _ENV_NO_REMOTE_WORDS or ({"read", "only"} & words if {"read", "only"} <= words else set())
    under_remote = name.startswith("cache.remote.")
    if near is not None and not kind and not under_remote:
        return "", near  # as near an unguarded key: `store_executables`, `s3_concurency`
    if no_cache:
        kind = "no-cache"
    elif (no_remote or under_remote) and kind != "no-cache":
        kind = "no-remote"
    return kind, near


def unknown_value_guard(key: str, value: Any, schema_path: str | None = None) -> tuple[str, str | None]:
    """:func:`unknown_guard` of an unknown config key with the value it holds (the keys
    inside it, and which of them hold a single value, read from it)."""
    inner = list(_items({"": value}))[1:]
    return unknown_guard(key, [path for path, _ in inner], schema_path,
                         scalars={path for path, v in inner if isinstance(v, (str, int, float, bool))})


def _items(table: Mapping[str, Any], depth: int = 0) -> Iterator[tuple[str, Any]]:
    """Every dotted key inside a parsed TOML table, with its value (arrays of tables too;
    64 levels at most)."""
    for name, value in table.items():
        yield str(name), value
        subs = [value] if isinstance(value, dict) else [v for v in value if isinstance(v, dict)] \
            if isinstance(value, list) else []
        for sub in subs:
            if depth < 64:
                yield from ((f"{name}.{inner}", v) for inner, v in _items(sub, depth + 1))


def _unknown_key_problems(f: ConfigFile, env: Mapping[str, str], schema_path: str | None
                          ) -> tuple[list[str], list[tuple[str, str, str]]]:
    """The unknown keys of one file: plain warnings, and those that turn caching or the
    remote off as ``(x-if-invalid, problem, nearest key)`` (:func:`unknown_guard`)."""
    shown = shown_path(f.path, env)
    plain: list[str] = []
    unsafe: list[tuple[str, str, str]] = []
    for key, value in _unknown_items(f.data, load_schema(schema_path), ""):
        kind, near = unknown_value_guard(key, value, schema_path)
        if not kind:
            plain.append(unknown_key_warning(key, shown, schema_path))
            continue
        near = near or nearest_key(key, schema_path, 0.75)
        hint = (f", did you mean `{near}`?" if near else " (not a cache.remote setting):"
                if key.startswith("cache.remote.") else ":")
        effect = "caching is off" if kind == "no-cache" else "the remote is off"
        unsafe.append((kind, f"unknown key `{key}` in {shown}{hint} {effect} until it is fixed", near or ""))
    return plain, unsafe


def _unknown_env_problems(env: Mapping[str, str], schema_path: str | None) -> list[tuple[str, str, str]]:
    """``KACHE_*`` variables kache does not know whose name is near a guarded setting's
    variable or holds one of its words (``KACHE_REMOTE_READONLY``, ``KACHE_SALT``): as
    :func:`_unknown_key_problems` (other unknown variables are not said: test harnesses
    and wrappers set their own)."""
    policy = if_invalid(schema_path)
    known = {s.env for s in settings_table(schema_path) if s.env} | {e.name for e in env_settings(schema_path)}
    annotated = {s.env: policy.get(s.key, "") for s in settings_table(schema_path) if s.env}
    # a misspelt KACHE_CONFIG (its file unread), KACHE_DISABLED or KACHE_RECACHE: caching off
    # is what the second two ask for, and safe for the first
    annotated.update({e.name: "no-cache" if e.name == "KACHE_CONFIG" or e.schema.get("type") == "boolean" else ""
                      for e in env_settings(schema_path)})
    # A guarded setting's own name as a variable (KACHE_LOCAL_STORE, KACHE_EXTRA_INPUTS):
    # what it was meant for is plain; the hint names the real variable, or the key.
    by_name = {f"KACHE_{s.key.rpartition('.')[2].upper()}": s for s in settings_table(schema_path)
               if policy.get(s.key)}
    by_name = {k: s for k, s in by_name.items() if k not in annotated}
    annotated.update({k: policy[s.key] for k, s in by_name.items()})
    out: list[tuple[str, str, str]] = []
    for name in sorted(env):
        if not name.startswith("KACHE_") or name in known:
            continue
        kind, near = unknown_guard(name[len("KACHE_"):], [], schema_path,
                                   {k[len("KACHE_"):]: v for k, v in annotated.items()})
        if not kind:
            continue
        meant = by_name.get(f"KACHE_{near}") if near else None
        if meant is not None and meant.env is None:
            hint = f", did you mean `{meant.key}` (a config file's, it has no variable)?"
        else:
            hint = f", did you mean `{meant.env if meant is not None else 'KACHE_' + str(near)}`?" if near else ":"
        effect = "caching is off" if kind == "no-cache" else "the remote is off"
        out.append((kind, f"unknown environment variable {name}{hint} {effect} until it is fixed or unset",
                    ""))
    return out


def _env_value(setting: Setting, raw: str) -> tuple[bool, Any]:
    """Turn an environment variable's text into the type the schema wants.

    Returns ``(False, None)`` for an empty variable of a setting that cannot be empty
    (treated as unset). Text that does not fit is returned as is for validation to
    reject with the schema's words.
    """
    text = raw.strip()
    types = setting.types
    if text == "":
        return ("null" in types, None)
    if "boolean" in types:
        low = text.lower()
        if low in _TRUE:
            return True, True
        if low in _FALSE:
            return True, False
        return True, text
    digits = text[1:] if text[:1] == "-" else text
    if "integer" in types and digits.isascii() and digits.isdigit():
        return True, int(text)
    return True, text


def read(env: Mapping[str, str] | None = None, *, schema_path: str | None = None,
         strict: bool = False) -> Settings:
    """Read the layers without jsonschema: defaults, system file, user file, environment.

    Values are not validated here (:func:`load` and :func:`load_checked` give the
    effective ones). A file that cannot be read is kept with its ``error``, or raises
    :class:`SettingsError` when ``strict`` (the config editor must not save over it).
    """
    env = dict(os.environ) if env is None else env
    table = settings_table(schema_path)
    schema = load_schema(schema_path)
    values: dict[str, Any] = {s.key: s.default for s in table}
    sources: dict[str, Source] = {s.key: Source("default") for s in table}
    files: list[ConfigFile] = []
    warnings: list[str] = []
    extras: dict[str, tuple[Any, Source]] = {}

    unsafe: list[tuple[str, str, str]] = []

    sys_path = _system_file(env)
    if sys_path is not None and not os.path.isabs(sys_path):
        # cargo runs rustc in the workspace root for members but in the package's own
        # directory for a path dependency outside it: a relative path names two files.
        error = (f"invalid setting in environment variable KACHE_CONFIG: {shown_value(env['KACHE_CONFIG'])}: "
                 "expected an absolute path (after ~ and $VAR expansion; rustc runs in more than one "
                 "directory); give the full path or unset KACHE_CONFIG")
        if strict:
            raise SettingsError([error])
        files.append(ConfigFile("system", sys_path, exists=False, error=error))
    elif sys_path is not None:
        files.append(_read_file("system", sys_path, env, strict))
    files.append(_read_file("user", _user_file(env), env, strict))

    for f in files:
        if not f.exists or f.error:
            continue
        src = Source(f.role, str(f.path))
        for s in table:
            found, value = lookup(f.data, s.key)
            if found:
                values[s.key], sources[s.key] = value, src
        plain, risky = _unknown_key_problems(f, env, schema_path)
        for key, value in _unknown_items(f.data, schema, ""):
            extras[key] = (value, src)
        warnings += plain
        unsafe += risky

    for s in table:
        if s.env and s.env in env:
            found, value = _env_value(s, env[s.env])
            if found:
                values[s.key], sources[s.key] = value, Source("env", s.env)
    unsafe += _unknown_env_problems(env, schema_path)

    return Settings(values, sources, files, env, schema_path, warnings, extras, unsafe_unknown=unsafe)


# --------------------------------------------------------------------------- validation


def _expected(error: Any, sub: Mapping[str, Any], key: str = "") -> str:
    """What the schema wanted, in words, from a jsonschema ValidationError; an error
    inside a table's value names the place (``cache.extra_inputs.util.files: …``)."""
    path = list(error.absolute_path)
    if not path:
        return _expected_here(error, sub)
    where = key
    for part in path:
        where += f"[{part}]" if isinstance(part, int) else (f".{part}" if where else str(part))
    return f"{where}: {_expected_here(error, error.schema)}"


def _expected_here(error: Any, sub: Mapping[str, Any]) -> str:
    kind = error.validator
    if kind == "type":
        names = {"string": "text", "integer": "an integer", "boolean": "true or false",
                 "null": "nothing", "object": "a table", "array": "a list", "number": "a number"}
        plural = {"string": "strings", "integer": "integers", "boolean": "true or false values",
                  "object": "tables", "array": "lists", "number": "numbers"}
        wanted = sub.get("type", error.validator_value)
        wanted = [wanted] if isinstance(wanted, str) else wanted
        if wanted == ["array"] and isinstance(sub.get("items"), dict) and sub["items"].get("type") in plural:
            example = sub.get("examples", [None])[0]
            eg = f", e.g. {_toml_repr(example)}" if example is not None else ""
            return f"expected a list of {plural[sub['items']['type']]}{eg}"
        fmt = sub.get("x-format")
        if fmt == "size":
            return f"expected {units.SIZE_EXPECTED}"
        if fmt == "duration":
            return f"expected {units.DURATION_EXPECTED}"
        return "expected " + " or ".join(names.get(w, w) for w in wanted if w != "null")
    if kind in ("minimum", "maximum"):
        lo, hi = sub.get("minimum"), sub.get("maximum")
        if lo is not None and hi is not None:
            return f"must be between {lo} and {hi}"
        return f"must be at least {lo}" if lo is not None else f"must be at most {hi}"
    if kind == "enum":
        import json

        return "must be one of " + ", ".join(json.dumps(v) for v in error.validator_value)
    if kind == "format":
        if error.validator_value == "size":
            return f"expected {units.SIZE_EXPECTED}"
        if error.validator_value == "duration":
            return f"expected {units.DURATION_EXPECTED}"
    if kind == "pattern":
        return str(sub.get("x-expected") or f"must match the pattern {error.validator_value}")
    if kind == "minLength":
        return f"must be at least {error.validator_value} characters long"
    if kind == "maxLength":
        return f"must be at most {error.validator_value} characters long"
    return str(error.message)


def _problem(source: Source, key: str, value: Any, why: str, env: Mapping[str, str]) -> str:
    where = {
        "env": f"environment variable {source.where}",
        "default": "the schema's default",
    }.get(source.kind, shown_path(source.where, env))
    return f"invalid setting in {where}: {key} = {shown_value(value)}: {why}"


def _shorten(text: str, limit: int = 200, length: int | None = None) -> str:
    """At most ``limit`` characters of a value shown in a message (a 10 MB value must
    not become a 10 MB error line); ``length``: the length to state (the value's own,
    when ``text`` is its quoted form)."""
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text) if length is None else length} characters)"


def shown_value(value: Any) -> str:
    """A value as TOML spells it (``"true"`` for a string, quotes and all), shortened,
    with the length of the value itself (not of its quotes)."""
    return _shorten(_toml_repr(value), length=len(value) if isinstance(value, str) else None)




def _toml_repr(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    import json

    if isinstance(value, str):
        return json.dumps(mask_url_credentials(value))
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(value, default=str)


def _why(sub: Mapping[str, Any], value: Any, env: Mapping[str, str], key: str = "") -> str | None:
    """What is wrong with one value against its sub-schema (the first thing), or None."""
    from jsonschema import Draft202012Validator, FormatChecker

    checker = FormatChecker()
    # jsonschema takes a falsy result for "invalid": a size of "0" parses to 0
    checker.checks("size", raises=units.UnitError)(lambda v: units.parse_size(v) is not None)
    checker.checks("duration", raises=units.UnitError)(lambda v: units.parse_duration(v) is not None)
    check_schema = dict(sub)
    if sub.get("x-format") in ("size", "duration"):
        check_schema["format"] = sub["x-format"]
    validator = Draft202012Validator(check_schema, format_checker=checker)
    for error in sorted(validator.iter_errors(value), key=lambda e: e.validator):
        return _expected(error, sub, key)  # one line per key: the first thing that is wrong
    if sub.get("x-format") == "path" and value is not None:
        expanded = _expand(str(value), env)
        if not os.path.isabs(expanded):
            return "expected an absolute path (after ~ and $VAR expansion)"
    return None


def value_problems(
    sub: Mapping[str, Any], key: str, value: Any, source: Source, env: Mapping[str, str]
) -> list[str]:
    """Validate one value against its sub-schema; return problem lines."""
    why = _why(sub, value, env, key)
    return [] if why is None else [_problem(source, key, value, why, env)]


_STRICTNESS = {"": 0, "no-remote": 1, "no-cache": 2}


@cache
def if_invalid(schema_path: str | None = None) -> dict[str, str]:
    """Key or table → its ``x-if-invalid`` (``""``: fall back to the next layer). A table
    inherits down to its keys; a table itself (written as a plain value, it hides every
    key below) takes the strictest of the keys below it."""
    out: dict[str, str] = {}

    def walk(node: Mapping[str, Any], prefix: str, inherited: str) -> str:
        strictest = inherited
        for name, sub in node.get("properties", {}).items():
            key = f"{prefix}.{name}" if prefix else name
            own = str(sub.get("x-if-invalid", inherited))
            if sub.get("type") == "object" and "properties" in sub:
                own = walk(sub, key, own)
            out[key] = own
            strictest = max(strictest, own, key=_STRICTNESS.__getitem__)
        return strictest

    walk(load_schema(schema_path), "", "")
    return out


def _layers(settings: Settings) -> list[tuple[Source, dict[str, Any]]]:
    """What each layer sets, lowest first: the readable files, then each variable."""
    table = settings_table(settings.schema_path)
    layers: list[tuple[Source, dict[str, Any]]] = []
    for f in settings.files:
        if f.exists and not f.error:
            layers.append((Source(f.role, str(f.path)),
                           {s.key: v for s in table for found, v in [lookup(f.data, s.key)] if found}))
    for s in table:
        if s.env and s.env in settings.env:
            found, value = _env_value(s, settings.env[s.env])
            if found:
                layers.append((Source("env", s.env), {s.key: value}))
    return layers


def _using(setting: Setting, value: Any, source: Source, env: Mapping[str, str]) -> str:
    """``using 3 (the default)``, ``using "drop" (from ~/.config/kache/config.toml)``."""
    if source.kind == "default":
        if value is None:
            text = setting.schema.get("x-default-text")
            return f"using {text} (the default)" if text else "leaving it unset (the default)"
        return f"using {_toml_repr(value)} (the default)"
    where = f"environment variable {source.where}" if source.kind == "env" else shown_path(source.where, env)
    return f"using {shown_value(value)} (from {where})"


def _examine(raw: Settings) -> tuple[Settings, list[str]]:
    """The effective settings of ``raw`` (each invalid value ignored, as ``x-if-invalid``
    says) and every problem, as :func:`validate` lists them."""
    table = settings_table(raw.schema_path)
    policy = if_invalid(raw.schema_path)
    env = raw.env
    values: dict[str, Any] = {s.key: s.default for s in table}
    sources: dict[str, Source] = {s.key: Source("default") for s in table}
    problems: list[str] = []
    warnings: list[str] = []
    caching_off: list[str] = []
    remote_off: list[str] = []
    rejected: dict[str, list[tuple[Any, Source, str, str]]] = {}

    store_problems: list[str] = []

    def refuse(kind: str, problem: str, said: str | None = None) -> None:
        if kind == "no-cache":
            caching_off.append(problem)
            warnings.append(said or f"caching is off: {problem}; every rustc call runs directly until it is fixed")
        else:
            remote_off.append(problem)
            warnings.append(said or f"the remote is off: {problem}; local caching goes on")

    for f in raw.files:
        if f.error:
            problems.append(f.error)
            if f.exists or f.role == "system":
                # there and unreadable, or the system file KACHE_CONFIG names is not there:
                # it may hold a salt, extra inputs or the store
                refuse("no-cache", f.error)
                store_problems.append(f.error)
            else:
                warnings.append(f"{f.error} (going on without it)")
    warnings += raw.warnings  # unknown keys
    for kind, problem, near in raw.unsafe_unknown:  # a misspelt salt, extra input, read_only...
        problems.append(problem)
        refuse(kind, problem, problem + (" (every rustc call runs directly)" if kind == "no-cache"
                                         else " (local caching goes on)"))
        if near == "cache.local_store":
            store_problems.append(problem)

    candidates: dict[str, list[tuple[int, Source, Any]]] = {}
    for n, (src, layer) in enumerate(_layers(raw)):
        for key, value in layer.items():
            candidates.setdefault(key, []).append((n, src, value))
    by_layer: list[tuple[int, int, str]] = []  # listed layer by layer, as written
    merged: dict[str, list[Source]] = {}
    for k, s in enumerate(table):
        bad: list[tuple[int, Source, Any, str]] = []
        effective = -1
        merges = s.types == ["object"]  # per crate, the union of every layer's inputs
        for n, src, value in candidates.get(s.key, []):
            why = _why(s.schema, value, env, s.key)
            if why is None:
                if merges and effective >= 0:
                    values[s.key] = _merge_inputs(values[s.key], value)
                    merged.setdefault(s.key, [sources[s.key]]).append(src)
                else:
                    values[s.key] = value
                sources[s.key], effective = src, n
            else:
                bad.append((n, src, value, why))
        for i, src, value, why in bad:
            problem = _problem(src, s.key, value, why, env)
            by_layer.append((i, k, problem))
            effect = "ignored"
            # it would be in effect, were it valid (a merged setting: every layer is)
            if (merges or i > effective) and policy.get(s.key):
                refuse(policy[s.key], problem)
                if s.key == "cache.local_store":
                    store_problems.append(problem + (": fix it or unset it" if src.kind == "env"
                                                     else ": fix it in that file or remove it"))
                effect = "caching is off" if policy[s.key] == "no-cache" else "the remote is off"
            rejected.setdefault(s.key, []).append((value, src, why, effect))
            if effect == "ignored":
                warnings.append(f"{problem}; {_using(s, values[s.key], sources[s.key], env)}")
    problems += [p for _, _, p in sorted(by_layer)]
    for f in raw.files:
        if f.exists and not f.error:
            for key, problem in _section_type_problems(f, raw):
                problems.append(problem)
                if policy.get(key):
                    refuse(policy[key], problem)
                else:
                    warnings.append(f"{problem}; the keys below it are not read")
    for e in env_settings(raw.schema_path):
        flag = env_flag_problem(e.name, env) if e.schema.get("type") == "boolean" else None
        if flag:
            problems.append(flag)
            warnings.append(f"{flag}; taken as set (true), as any value but 0/false/no/off")
    if remote_off:
        values["cache.remote.bucket"] = None  # every user of the remote starts from the bucket
    out = Settings(values, sources, raw.files, env, raw.schema_path, warnings, raw.extras,
                   rejected=rejected, caching_off=caching_off, remote_off=remote_off, merged=merged,
                   unsafe_unknown=raw.unsafe_unknown,
                   store_problem=store_problems[0] if store_problems else None)
    return out, problems


def _merge_inputs(low: Any, high: Mapping[str, Any]) -> dict[str, Any]:
    """Two layers' ``cache.extra_inputs``: per crate, every entry of both, lists joined
    without repeats (more inputs is always safe; a user file must not drop the inputs an
    administrator declared in the system file)."""
    out: dict[str, Any] = {crate: dict(spec) for crate, spec in (low or {}).items()}
    for crate, spec in high.items():
        entry = out.setdefault(crate, {})
        for field, items in spec.items():
            entry[field] = list(dict.fromkeys([*entry.get(field, []), *items]))
    return out


def degrade(raw: Settings) -> Settings:
    """The effective settings of what :func:`read` read: each invalid value ignored for
    the next lower layer's valid one (finally the default), or caching or the remote
    turned off where the schema's ``x-if-invalid`` says; one warning per problem."""
    return _examine(raw)[0]


def load(env: Mapping[str, str] | None = None, *, schema_path: str | None = None) -> Settings:
    """The effective settings (:func:`read`, then :func:`degrade`): never raises for a
    setting; what was wrong is in ``warnings`` (CLI, daemon; the wrapper's memoised
    form is :func:`load_checked`)."""
    return degrade(read(env, schema_path=schema_path))


def validate(settings: Settings) -> None:
    """Check every value against the schema; raise :class:`SettingsError` listing all problems.

    Each layer is checked on its own, so a problem names the file or variable it came
    from, even where a higher layer hides it: a bad system file is a bad system file.
    """
    problems = _examine(settings)[1]
    if problems:
        raise SettingsError(problems)


def _section_type_problems(f: ConfigFile, settings: Settings) -> list[tuple[str, str]]:
    """A section written as a plain value (``cache = 3``) hides every key below it."""
    out = []
    for key, _sub in sections(settings.schema_path):
        found, value = lookup(f.data, key)
        if found and not isinstance(value, dict):
            out.append((key, _problem(Source(f.role, str(f.path)), key, value, "expected a table", settings.env)))
    return out


def validate_file(path: Path, env: Mapping[str, str] | None = None,
                  schema_path: str | None = None) -> list[str]:
    """Problems of one file alone (``kache config validate FILE``): raises
    :class:`SettingsError` for invalid values; returns the warnings (unknown keys)."""
    env = dict(os.environ) if env is None else env
    f = _read_file("user", path, env)
    if not f.exists:
        raise SettingsError([f"cannot read config file: {path}: it does not exist"])
    table = settings_table(schema_path)
    values = {s.key: s.default for s in table}
    sources = {s.key: Source("default") for s in table}
    for s in table:
        found, value = lookup(f.data, s.key)
        if found:
            values[s.key], sources[s.key] = value, Source("user", str(path))
    plain, unsafe = _unknown_key_problems(f, env, schema_path)
    settings = Settings(values, sources, [f], {k: v for k, v in env.items() if k == "HOME"}, schema_path,
                        unsafe_unknown=unsafe)
    validate(settings)
    return plain


# --------------------------------------------------------------------------- wrapper path


def _identity(files: list[str], env: Mapping[str, str], schema_path: str | None) -> str:
    """A digest of everything the effective settings depend on: kache's version, the
    schema and config files (by stat), the environment variables the schema names."""
    from blake3 import blake3

    from kache import __version__

    parts = [__version__]
    for path in [schema_path or SCHEMA_PATH, *files]:
        try:
            st = os.stat(path)
            parts.append(f"{path}\0{st.st_dev}\0{st.st_ino}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ctime_ns}")
        except OSError:
            parts.append(f"{path}\0-")
    names = ("HOME", "XDG_CONFIG_HOME", "XDG_CACHE_HOME")
    parts += [f"{k}={env[k]}" for k in sorted(env) if k.startswith("KACHE_") or k in names]
    return blake3("\n".join(parts).encode("utf-8", "surrogateescape")).hexdigest()[:32]


def _memo_check(body: dict[str, Any]) -> str:
    """A checksum over a memo's content: only a memo kache wrote whole is ever used."""
    from blake3 import blake3

    return blake3(quickjson.dumps(body, sort_keys=True).encode()).hexdigest()


_MEMO_FIELDS = ("values", "sources", "files", "formats", "warnings", "caching_off", "remote_off", "store_problem")


def load_checked(env: Mapping[str, str] | None = None) -> Settings:
    """Settings for the wrapper, the daemon and commands that only use them: :func:`load`
    once per identity, then memoised, with the warnings (a memo hit says them too; the
    wrapper says each once per build) and whether caching or the remote is off. Never
    raises for a setting.

    The first call after a config file or a ``KACHE_*`` variable changes reads the TOML
    and pays for jsonschema (~80 ms); later calls read one small JSON file (no tomllib,
    no jsonschema). The memo lives in the default cache dir (the configured store may be
    what a broken config names).
    """
    env = os.environ if env is None else env
    system = _system_file(env)
    files = ([system] if system else []) + [_user_file(env)]
    memo = os.path.join(layout.tmp_path(default_cache_dir(env), layout.SETTINGS), _identity(files, env, None) + ".json")
    try:
        with open(memo, encoding="utf-8") as f:
            data = quickjson.loads(f.read())
        body = {k: data[k] for k in _MEMO_FIELDS}
        if data.get("check") != _memo_check(body):
            raise ValueError("not a memo kache wrote")  # damaged or written by something else
        return Settings(
            body["values"], {k: Source(*v) for k, v in body["sources"].items()},
            [ConfigFile(role, path, exists) for role, path, exists in body["files"]], env,
            formats=dict(body["formats"]), warnings=list(body["warnings"]),
            caching_off=list(body["caching_off"]), remote_off=list(body["remote_off"]),
            store_problem=body["store_problem"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError):
        pass
    settings = load(env)
    try:
        # Often the first thing to create the default cache dir (and so the store in it):
        # every directory it makes is owner-only, whatever the umask.
        old = os.umask(0o077)
        try:
            os.makedirs(os.path.dirname(memo), mode=0o700, exist_ok=True)
        finally:
            os.umask(old)
        tmp = f"{memo}.{os.getpid()}"
        with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600), "w",
                  encoding="utf-8") as f:
            body = {"values": settings.values,
                    "sources": {k: [v.kind, v.where] for k, v in settings.sources.items()},
                    "files": [[c.role, c.path, c.exists] for c in settings.files],
                    "formats": {s.key: s.format for s in settings_table() if s.format},
                    "warnings": settings.warnings, "caching_off": settings.caching_off,
                    "remote_off": settings.remote_off, "store_problem": settings.store_problem}
            f.write(quickjson.dumps({**body, "check": _memo_check(quickjson.loads(quickjson.dumps(body)))}))
        os.replace(tmp, memo)
    except OSError:
        pass  # nowhere to remember: validation simply repeats
    return settings
