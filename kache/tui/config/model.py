"""The config editor's state, without textual: layers, edits, checks, and the save.

Everything comes from :mod:`kache.settings`: the table of settings (so a key added to the
schema is a field with no other change), the layers (default, system file, user file,
environment) and the checks, whose messages are the ones ``kache config validate``
prints. The editor writes only the user's own file, with tomlkit, so comments, order
and keys kache does not know survive; the system file (``KACHE_CONFIG``, read-only in
the Nix store) is never written: a change to one of its values becomes a user override.

An edit of an empty text field means "not set in my file" (TOML has no null): the key is
removed from the user file and the lower layers apply again, as with :meth:`reset`.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kache import settings as settings_mod
from kache.errors import SettingsError

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

__all__ = ["EditorState", "Layer", "SaveResult", "kind_of", "text_of", "RESET"]


class _Reset:
    def __repr__(self) -> str:
        return "RESET"


RESET: Any = _Reset()
"""A pending edit that removes the key from the user file."""


def kind_of(setting: settings_mod.Setting) -> str:
    """The field for a setting: ``bool``, ``enum``, ``integer``, ``number``, ``size``,
    ``duration``, ``path``, ``json`` (tables and lists) or ``string``."""
    schema, types = setting.schema, setting.types
    if "enum" in schema:
        return "enum"
    if setting.format in ("size", "duration", "path"):
        return str(setting.format)
    if "boolean" in types:
        return "bool"
    if "object" in types or "array" in types:
        return "json"
    if "integer" in types:
        return "integer"
    if "number" in types:
        return "number"
    return "string"


def text_of(setting: settings_mod.Setting, value: Any) -> str:
    """A value as its text field shows it (``""`` for none)."""
    if value is None:
        return ""
    if kind_of(setting) == "json":
        return json.dumps(value, indent=2)
    return settings_mod.display(value)


@dataclass(frozen=True)
class Layer:
    """Where a field's value comes from now.

    ``kind`` is ``default``, ``system``, ``user``, ``edited`` (changed here, not saved)
    or ``env``; ``where`` the file or the variable.
    """

    kind: str
    where: str
    value: Any


@dataclass(frozen=True)
class SaveResult:
    """What a save wrote: the file, the keys set or removed, those that override the
    system file, and those an environment variable still overrides."""

    path: str
    written: list[str]
    overrides_system: list[str]
    env_wins: list[str]


def _same(a: Any, b: Any) -> bool:
    """Equal and of one type (``True`` is not ``1``, ``"5"`` is not ``5``)."""
    return type(a) is type(b) and a == b


class EditorState:
    """The settings being edited.

    Args:
        env: the environment (default ``os.environ``); it names the files and may
            override values.
        schema_path: the schema (default: the one kache ships).

    Raises:
        SettingsError: a config file cannot be read or is not TOML.
    """

    def __init__(self, env: Mapping[str, str] | None = None, schema_path: str | None = None) -> None:
        self.env: dict[str, str] = dict(os.environ if env is None else env)
        self.schema_path = schema_path
        self.table = settings_mod.settings_table(schema_path)
        self.by_key = {s.key: s for s in self.table}
        self.user_path: Path = settings_mod.user_config_path(self.env)
        self.system_path: Path | None = settings_mod.system_config_path(self.env)
        self.pending: dict[str, Any] = {}
        """Edits not saved yet: key → value, or :data:`RESET`."""
        self.problems: dict[str, str] = {}
        """Keys whose candidate value was rejected → the schema's message."""
        self._reload()

    def _reload(self) -> None:
        import tomlkit

        self.settings = settings_mod.read(self.env, schema_path=self.schema_path, strict=True)
        files = {f.role: f for f in self.settings.files}
        system = files.get("system")
        self.system_data: dict[str, Any] = system.data if system is not None and system.exists else {}
        user = files["user"]
        self.user_exists = user.exists
        self.user_data: dict[str, Any] = user.data if user.exists else {}
        text = self.user_path.read_text(encoding="utf-8") if user.exists else ""
        try:
            self.doc = tomlkit.parse(text)
        except tomlkit.exceptions.TOMLKitError as e:
            raise SettingsError([f"cannot read config file: {self.shown(self.user_path)}: {e}"]) from None

    # ------------------------------------------------------------------ reading

    def shown(self, path: Path | str) -> str:
        """A path as messages show it (``~/.config/kache/config.toml``)."""
        return settings_mod.shown_path(path, self.env)

    def env_var(self, key: str) -> str | None:
        """The variable that overrides ``key`` now, if one does."""
        source = self.settings.sources[key]
        return source.where if source.kind == "env" else None

    def file_layer(self, key: str) -> Layer:
        """The value the files (and pending edits) give, ignoring the environment."""
        edit = self.pending.get(key)
        if key in self.pending and edit is not RESET:
            return Layer("edited", str(self.user_path), edit)
        if edit is not RESET:
            found, value = settings_mod.lookup(self.user_data, key)
            if found:
                return Layer("user", str(self.user_path), value)
        found, value = settings_mod.lookup(self.system_data, key)
        if found:
            return Layer("system", str(self.system_path), value)
        return Layer("default", "", self.by_key[key].default)

    def layer(self, key: str) -> Layer:
        """The value in effect and where it comes from: an env variable beats the files."""
        var = self.env_var(key)
        if var is not None:
            return Layer("env", var, self.settings.values[key])
        return self.file_layer(key)

    def in_system_file(self, key: str) -> bool:
        return settings_mod.lookup(self.system_data, key)[0]

    def check(self, key: str, value: Any, kind: str = "user") -> str | None:
        """The schema's message for ``value`` of ``key`` (None: valid), worded as
        ``kache config validate`` words it for the user file (or ``kind``'s layer)."""
        if kind == "env":
            source = settings_mod.Source("env", self.env_var(key) or "")
        elif kind == "system":
            source = settings_mod.Source("system", str(self.system_path))
        elif kind == "default":
            source = settings_mod.Source("default")
        else:
            source = settings_mod.Source("user", str(self.user_path))
        problems = settings_mod.value_problems(self.by_key[key].schema, key, value, source, self.env)
        return problems[0] if problems else None

    def initial_problems(self) -> dict[str, str]:
        """Problems of the values as loaded (a bad file or variable shows on its field)."""
        out = {}
        for s in self.table:
            layer = self.layer(s.key)
            if layer.kind in ("user", "system", "env"):
                problem = self.check(s.key, layer.value, layer.kind)
                if problem:
                    out[s.key] = problem
        return out

    # ------------------------------------------------------------------ editing

    def set(self, key: str, value: Any) -> str | None:
        """Stage ``value`` for ``key``; returns the schema's message when it is invalid
        (the edit is then not staged, and saving is refused until it is fixed)."""
        problem = self.check(key, value)
        if problem:
            self.problems[key] = problem
            return problem
        self.problems.pop(key, None)
        found, saved = settings_mod.lookup(self.user_data, key)
        if found and _same(saved, value):
            self.pending.pop(key, None)  # back to what the file says
        elif not found and _same(value, self.layer_without_edit(key).value):
            self.pending.pop(key, None)  # back to what it was: nothing to write
        else:
            self.pending[key] = value
        return None

    def layer_without_edit(self, key: str) -> Layer:
        edit = self.pending.pop(key, None)
        try:
            return self.layer(key)
        finally:
            if edit is not None:
                self.pending[key] = edit

    def reset(self, key: str) -> Layer:
        """Remove ``key`` from the user file (on save); returns what applies then."""
        self.problems.pop(key, None)
        if settings_mod.lookup(self.user_data, key)[0]:
            self.pending[key] = RESET
        else:
            self.pending.pop(key, None)
        return self.layer(key)

    def discard(self, key: str) -> None:
        """Forget an invalid candidate (the field shows the saved value again)."""
        self.problems.pop(key, None)

    @property
    def dirty(self) -> bool:
        return bool(self.pending)

    # ------------------------------------------------------------------ saving

    def save(self) -> SaveResult:
        """Write the pending edits into the user file, keeping everything else in it.

        The new text is checked with :func:`kache.settings.validate_file` before it
        replaces the file (atomically), so a save never leaves a file that ``kache config
        validate`` rejects.

        Raises:
            SettingsError: a value is invalid (the schema's messages), or the file
                cannot be written.
        """
        import tomlkit

        if self.problems:
            raise SettingsError(list(self.problems.values()))
        keys = [s.key for s in self.table if s.key in self.pending]
        created: list[Any] = []  # tables made here, innermost of each key, to end with a blank line
        for key in keys:
            value = self.pending[key]
            *parents, leaf = key.split(".")
            node: Any = self.doc
            for i, part in enumerate(parents):
                if part not in node:
                    if value is RESET:
                        break
                    node[part] = tomlkit.table()
                    if i == len(parents) - 1:
                        created.append(node[part])
                node = node[part]
                if not isinstance(node, dict):
                    section = ".".join(parents[:i + 1])
                    raise SettingsError([(f"cannot save {key}: {self.shown(self.user_path)} sets {section} "
                                          "to a value, not a table; fix that line by hand")])
            else:
                if value is RESET:
                    node.pop(leaf, None)
                else:
                    node[leaf] = value
        for table in {id(t): t for t in created}.values():
            table.add(tomlkit.nl())  # a blank line before whatever table follows
        text = tomlkit.dumps(self.doc)
        if created:
            text = text.rstrip("\n") + "\n"  # no blank line at the very end
        path = self.user_path
        try:
            old = os.umask(0o077)  # a config dir kache creates is owner-only
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            finally:
                os.umask(old)
            fd, tmp = tempfile.mkstemp(prefix=".config.toml.", dir=path.parent)
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as f:
                    f.write(text)
                if path.exists():
                    os.chmod(tmp, path.stat().st_mode & 0o777)
                else:
                    os.chmod(tmp, 0o600)
                problems = []
                try:
                    settings_mod.validate_file(tmp, self.env, self.schema_path)  # type: ignore[arg-type]
                except SettingsError as e:
                    problems = [p.replace(self.shown(tmp), self.shown(path)) for p in e.problems]
                if problems:
                    raise SettingsError(problems)
                os.replace(tmp, path)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
        except OSError as e:
            why = e.strerror or str(e)
            raise SettingsError([f"cannot write config file: {self.shown(path)}: {why}"]) from None
        result = SaveResult(
            path=str(path), written=keys,
            overrides_system=[k for k in keys if self.pending[k] is not RESET and self.in_system_file(k)],
            env_wins=[k for k in keys if self.env_var(k)],
        )
        self.pending.clear()
        self._reload()
        return result
