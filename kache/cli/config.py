"""``kache config …``: show, validate, path, schema (bare ``kache config`` is the editor)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

from kache import settings as settings_mod
from kache.cli.output import echo_json, echo_table, warn
from kache.errors import SettingsError

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


def _load_or_fail() -> settings_mod.Settings:
    s = settings_mod.load()
    for w in s.warnings:
        warn(w)
    return s


@config.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def show(as_json: bool) -> None:
    """Show every effective setting and where its value came from.

    Sources are: default, system file (KACHE_CONFIG), user file, env.

    \b
    Example:
      kache config show --json
    """
    s = _load_or_fail()
    try:
        settings_mod.validate(s)
    except SettingsError as err:
        for line in err.problems:
            warn(line)
    env_only = settings_mod.env_settings()
    if as_json:
        echo_json({
            "settings": {
                key: {"value": settings_mod.mask_url_credentials(s.values[key]) if isinstance(s.values[key], str)
                      else s.values[key], "source": s.sources[key].kind,
                      **({"where": s.sources[key].where} if s.sources[key].where else {})}
                for key in s.values
            },
            "environment": {
                e.name: ({"set": e.name in s.env} if e.secret
                         else {"value": s.env.get(e.name, e.default), "set": e.name in s.env})
                for e in env_only
            },
            "files": [{"role": f.role, "path": str(f.path), "exists": f.exists} for f in s.files],
        })
        return
    rows = [[key, settings_mod.setting(key).default_text if s.values[key] is None else settings_mod.display(s.values[key]),
             str(s.sources[key])] for key in s.values]
    echo_table(["setting", "value", "source"], rows)
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
def validate(file: Path | None) -> None:
    """Check the settings (or one FILE) against the schema.

    Without FILE, checks the system file, the user file and the KACHE_* variables.

    \b
    Example:
      kache config validate ~/.config/kache/config.toml
    """
    if file is not None:
        for w in settings_mod.validate_file(file):
            warn(w)
        click.echo(f"ok: {file} is valid")
        return
    s = _load_or_fail()
    settings_mod.validate(s)
    read = [str(f.path) for f in s.files if f.exists]
    click.echo("ok: settings are valid" + (f" ({', '.join(read)})" if read else " (no config file; defaults)"))


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
