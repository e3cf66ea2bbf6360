"""``kache config …``: show, validate, path, schema (bare ``kache config`` is the editor)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import click

from kache import settings as settings_mod
from kache.cli.output import echo_json, echo_table, warn
from kache.errors import KacheError

__all__ = ["COMMANDS"]


@click.group(invoke_without_command=True)
@click.pass_context
def config(ctx: click.Context) -> None:
    """Open the configuration editor, or show, check and locate the settings.

    With no subcommand, opens the editor: every setting of the schema with its help and
    where its value comes from; ctrl+s saves into your own config file.

    \b
    Example:
      kache config
      kache config show
      KACHE_COMPRESSION_LEVEL=7 kache config show --json
    """
    if ctx.invoked_subcommand is None:
        from kache.cli.tui import run_editor

        run_editor()


def _load() -> settings_mod.Settings:
    """The effective settings, each problem said as a warning (never an error: ``show``
    shows what a build would use)."""
    s = settings_mod.load()
    for w in s.warnings:
        warn(w)
    return s


def _shown(value: Any) -> Any:
    return settings_mod.mask_url_credentials(value) if isinstance(value, str) else value


def _where(src: settings_mod.Source, env: Any) -> str:
    if src.kind == "env":
        return f"env {src.where}"
    return f"{src.kind} file {settings_mod.shown_path(src.where, env)}"


def _notes(s: settings_mod.Settings, key: str) -> list[str]:
    """What was wrong with ``key``: each invalid value, its problem, what it did."""
    notes = [f"{_where(src, s.env)}: {settings_mod.shown_value(value)} is invalid, {why}; {effect}"
             for value, src, why, effect in s.rejected.get(key, [])]
    if key == "cache.remote.bucket" and s.remote_off and not s.rejected.get(key):
        notes.append("the remote is off (an invalid cache.remote setting, warned above)")
    return notes


@config.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def show(as_json: bool) -> None:
    """Show every effective setting and where its value came from.

    Sources are: default, system file (KACHE_CONFIG), user file, env. An invalid value
    is shown beside the value used instead (a lower layer's, or the default), or as
    having turned caching or the remote off. A table of entries (cache.extra_inputs)
    set by more than one layer is merged: every layer's entries, each source named.

    \b
    Example:
      kache config show --json
    """
    s = _load()
    env_only = settings_mod.env_settings()
    if as_json:
        settings_doc: dict[str, Any] = {}
        for key in s.values:
            item: dict[str, Any] = {"value": _shown(s.values[key]), "source": s.sources[key].kind,
                                    **({"where": s.sources[key].where} if s.sources[key].where else {})}
            if key in s.merged:  # an object-valued setting: every layer's entries, joined
                item["merged_from"] = [{"source": src.kind, "where": src.where} for src in s.merged[key]]
            if s.rejected.get(key):
                item["invalid"] = [{"value": _shown(value), "source": src.kind, "where": src.where,
                                    "problem": why, "effect": effect}
                                   for value, src, why, effect in s.rejected[key]]
            settings_doc[key] = item
        echo_json({
            "settings": settings_doc,
            "caching": "off" if s.caching_off else "on",
            "remote": "off" if s.remote_off else "on" if s.values["cache.remote.bucket"] else "none",
            "problems": s.caching_off + s.remote_off,
            "warnings": s.warnings,
            "environment": {
                e.name: ({"set": e.name in s.env} if e.secret
                         else {"value": s.env.get(e.name, e.default), "set": e.name in s.env})
                for e in env_only
            },
            "files": [{"role": f.role, "path": str(f.path), "exists": f.exists,
                       **({"error": f.error} if f.error else {})} for f in s.files],
        })
        return
    rows = []
    for key in s.values:
        value = settings_mod.setting(key).default_text if s.values[key] is None else settings_mod.display(s.values[key])
        notes = _notes(s, key)
        source = (f"merged: {' + '.join(_where(src, s.env) for src in s.merged[key])}" if key in s.merged
                  else str(s.sources[key]))
        rows.append([key, value, source + "".join(f" (but {n})" for n in notes)])
    echo_table(["setting", "value", "source"], rows)
    if s.caching_off:
        click.echo("\ncaching is off: every rustc call runs directly until the problem above is fixed")
    click.echo()
    env_rows = []
    for e in env_only:
        if e.secret:
            value = "(set, hidden)" if e.name in s.env else "(unset)"
        else:
            value = s.env.get(e.name) or f"{settings_mod.display(e.default)} (unset)"
        env_rows.append([e.name, value])
    echo_table(["environment", "value"], env_rows)


@config.command()
@click.argument("file", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--strict", is_flag=True, help="Fail on warnings too (unknown keys).")
def validate(file: Path | None, strict: bool) -> None:
    """Check the settings (or one FILE) against the schema.

    Without FILE, checks the system file, the user file and the KACHE_* variables. An
    invalid value fails (exit 1); an unknown key is a warning (exit 0), a failure with
    --strict.

    \b
    Example:
      kache config validate ~/.config/kache/config.toml
      kache config validate --strict
    """
    if file is not None:
        warnings = settings_mod.validate_file(file)
        what = settings_mod.shown_path(file, os.environ)
    else:
        raw = settings_mod.read()
        warnings = raw.warnings
        read = [settings_mod.shown_path(f.path, raw.env) for f in raw.files if f.exists]
        what = "settings"
    for w in warnings:
        warn(w)
    if file is None:
        settings_mod.validate(raw)
    if warnings and strict:
        raise KacheError(f"{what}: {len(warnings)} warning{'s' if len(warnings) != 1 else ''} "
                         "(--strict fails on warnings)")
    said = f", with {len(warnings)} warning{'s' if len(warnings) != 1 else ''}" if warnings else ""
    if file is not None:
        click.echo(f"ok: {file} is valid{said}")
    else:
        click.echo(f"ok: settings are valid{said}" + (f" ({', '.join(read)})" if read else
                                                        " (no config file; defaults)"))


def _writable(path: Path) -> bool:
    if path.exists():
        return os.access(path, os.W_OK)
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    return os.access(parent, os.W_OK)


@config.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def path(as_json: bool) -> None:
    """Show where the config files are, which exist and which kache can write.

    \b
    Example:
      kache config path
    """
    system = settings_mod.system_config_path()
    user = settings_mod.user_config_path()
    for f in settings_mod.read().files:
        if f.role == "system" and f.error:  # relative, missing, unreadable: caching is off
            warn(f"caching is off: {f.error}")
    entries = []
    if system is not None:
        entries.append({"role": "system", "path": str(system), "exists": system.exists(),
                        "writable": _writable(system), "set_by": "KACHE_CONFIG"})
    entries.append({"role": "user", "path": str(user), "exists": user.exists(), "writable": _writable(user)})
    if as_json:
        echo_json({"files": entries})
        return
    if system is None:
        click.echo("system: (none; KACHE_CONFIG is not set)")
    for e in entries:
        state = ("exists" if e["exists"] else "missing") + (", writable" if e["writable"] else ", read-only")
        click.echo(f"{e['role']}: {e['path']} ({state})")


@config.command()
def schema() -> None:
    """Print the JSON Schema that defines every setting.

    \b
    Example:
      kache config schema | jq '.properties.cache.properties | keys'
    """
    click.echo(json.dumps(settings_mod.load_schema(), indent=2))


COMMANDS = [config]
