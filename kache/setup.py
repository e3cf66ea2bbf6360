"""``kache init``: the steps that make cargo use kache, each checked before it is changed.

Each :class:`Step` knows whether it is already right and how to make it right, so
``init`` is idempotent (a second run changes nothing and says so) and ``--dry-run``
shows the plan without touching anything. ``kache doctor --fix`` reuses the same steps.
"""

from __future__ import annotations

import os
import textwrap
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from kache import settings as settings_mod

__all__ = ["Step", "cargo_config_path", "wrapper_step", "starter_config_step", "starter_config"]


@dataclass
class Step:
    name: str
    ok: bool
    """Already right: nothing to do."""
    detail: str
    """What is there (when ok) or what would change."""
    apply: Callable[[], None] | None = None


def cargo_home(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    home = env.get("CARGO_HOME")
    return Path(home) if home else Path(env.get("HOME") or os.path.expanduser("~")) / ".cargo"


def cargo_config_path(env: Mapping[str, str] | None = None) -> Path:
    """``$CARGO_HOME/config.toml`` (or the legacy ``config`` when only that exists)."""
    base = cargo_home(env)
    legacy = base / "config"
    return legacy if legacy.is_file() and not (base / "config.toml").exists() else base / "config.toml"


def current_wrapper(path: Path) -> str | None:
    import tomlkit

    if not path.exists():
        return None
    doc = tomlkit.parse(path.read_text(encoding="utf-8"))
    build = doc.get("build")
    value = build.get("rustc-wrapper") if build is not None else None
    return None if value is None else str(value)


def wrapper_step(exe: str, env: Mapping[str, str] | None = None) -> Step:
    """``[build] rustc-wrapper`` in cargo's own config points at kache (tomlkit keeps the rest)."""
    import tomlkit

    path = cargo_config_path(env)
    try:
        now = current_wrapper(path)
    except Exception as e:  # noqa: BLE001 - tomlkit raises several kinds for a broken file
        return Step("cargo wrapper", False, f"{path} cannot be read as TOML ({e}); fix it by hand", None)
    if now is not None and os.path.realpath(os.path.expanduser(now)) == os.path.realpath(exe):
        return Step("cargo wrapper", True, f"{path}: [build] rustc-wrapper = {now!r}")

    def apply() -> None:
        text = path.read_text(encoding="utf-8") if path.exists() else ""
        doc = tomlkit.parse(text)
        if "build" not in doc:
            doc["build"] = tomlkit.table()
        doc["build"]["rustc-wrapper"] = exe  # type: ignore[index]
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".kache-tmp")
        tmp.write_text(tomlkit.dumps(doc), encoding="utf-8")
        os.replace(tmp, path)

    was = "not set" if now is None else f"{now!r}" + (" (sccache)" if "sccache" in now else "")
    return Step("cargo wrapper", False, f"{path}: set [build] rustc-wrapper = {exe!r} (now {was})", apply)


def starter_config(schema_path: str | None = None) -> str:
    """A commented config.toml listing every setting with its default, from the schema."""
    lines = [
        "# kache configuration. Every setting is listed with its default, commented out;",
        "# `kache config` edits this file, `kache config show` shows what is in effect.",
        "# This file overrides the system file (KACHE_CONFIG); KACHE_* variables override it.",
    ]
    current = None
    for s in settings_mod.settings_table(schema_path):
        if s.section != current:
            current = s.section
            lines += ["", f"[{s.section}]"]
        lines.append("")
        for line in textwrap.wrap(s.description, 86):
            lines.append(f"# {line}")
        if s.env:
            lines.append(f"# (environment variable: {s.env})")
        value = s.default if s.default not in (None, {}) else (s.schema.get("examples") or [None])[0]
        if value is None or isinstance(value, dict):
            continue
        lines.append(f"# {s.key.rsplit('.', 1)[1]} = {_toml(value)}")
    return "\n".join(lines) + "\n"


def _toml(value: object) -> str:
    import json

    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value)


def starter_config_step(env: Mapping[str, str] | None = None) -> Step:
    path = settings_mod.user_config_path(env)
    if path.exists():
        return Step("user config", True, f"{path} exists")

    def apply() -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(starter_config(), encoding="utf-8")

    return Step("user config", False, f"write a starter {path} (every setting, commented out)", apply)


def service_step(env: Mapping[str, str] | None = None) -> Step:
    """The daemon as a user service (systemd on Linux, launchd on macOS), where one runs."""
    import shutil

    from kache.daemon import service
    from kache.errors import KacheError

    env = os.environ if env is None else env
    try:
        platform = service.current_platform()
    except KacheError as e:
        return Step("daemon service", True, str(e))
    manager = "systemctl" if platform == "linux" else "launchctl"
    if shutil.which(manager) is None:
        return Step("daemon service", True, f"no {manager} here; builds start the daemon when they need it")
    path = service.unit_path(env) if platform == "linux" else service.plist_path(env)
    store_root = settings_mod.load(env).get("cache.local_store")
    environment, _notes = service.service_environment(env)
    command = service.kache_command()
    wanted = (service.render_unit(command, environment).encode() if platform == "linux"
              else service.render_plist(command, environment, os.path.join(store_root, "daemon.log")))
    if path.exists() and path.read_bytes() == wanted:
        return Step("daemon service", True, f"{path} installed")

    def apply() -> None:
        service.install(platform, activate=True, store_root=store_root, env=env)

    return Step("daemon service", False, f"install and start {path}", apply)
