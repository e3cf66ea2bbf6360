"""``kache init``: the steps that make cargo use kache, each checked before it is changed.

Each :class:`Step` knows whether it is already right and how to make it right, so
``init`` is idempotent (a second run changes nothing and says so) and ``--dry-run``
shows the plan without touching anything. ``kache doctor --fix`` reuses the same steps.
"""

from __future__ import annotations

import os
import shutil
import textwrap
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from kache import settings as settings_mod
from kache.store import layout

__all__ = ["Step", "WrapperSource", "cargo_home", "cargo_config_path", "current_wrapper", "wrapper_sources",
           "override_advice", "override_step", "wrapper_step", "client_step", "starter_config_step",
           "starter_config", "service_manager", "service_step"]


@dataclass
class Step:
    name: str
    ok: bool
    """Already right: nothing to do."""
    detail: str
    """What is there (when ok) or what would change."""
    apply: Callable[[], None] | None = None
    done: str = ""
    """What is there once ``apply`` ran (default: ``detail``)."""


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


@dataclass(frozen=True)
class WrapperSource:
    """One place that sets cargo's rustc wrapper."""

    value: str
    """What it sets ("" for an environment variable set but empty: no wrapper)."""
    where: str
    """``environment variable RUSTC_WRAPPER`` or the config file's path."""
    kind: str
    """``env``, ``project`` (a .cargo/config.toml from the working directory upward) or
    ``user`` (``$CARGO_HOME/config.toml``, the file ``kache init`` writes)."""


def wrapper_sources(env: Mapping[str, str] | None = None, cwd: str | None = None) -> list[WrapperSource]:
    """Every place that sets cargo's rustc wrapper for a build in ``cwd``, the one cargo
    uses first: RUSTC_WRAPPER, then CARGO_BUILD_RUSTC_WRAPPER (the environment wins over
    every file), then the ``.cargo/config.toml`` (or ``config``) files from ``cwd`` upward,
    then ``$CARGO_HOME/config.toml``. An empty variable means no wrapper to cargo and still
    wins (checked with cargo 1.95). A file that cannot be read is skipped (the wrapper step reports it)."""
    env = os.environ if env is None else env
    out: list[WrapperSource] = []
    if "RUSTC_WRAPPER" in env:
        out.append(WrapperSource(env["RUSTC_WRAPPER"], "environment variable RUSTC_WRAPPER", "env"))
    if "CARGO_BUILD_RUSTC_WRAPPER" in env:
        out.append(WrapperSource(env["CARGO_BUILD_RUSTC_WRAPPER"], "environment variable CARGO_BUILD_RUSTC_WRAPPER",
                                 "env"))
    user = cargo_config_path(env)
    home = os.path.realpath(user.parent)
    d = Path(cwd or os.getcwd()).resolve()
    for parent in [d, *d.parents]:
        if os.path.realpath(parent / ".cargo") == home:
            continue  # $CARGO_HOME's own file: cargo reads it once, last
        for name in ("config.toml", "config"):
            p = parent / ".cargo" / name
            try:
                value = current_wrapper(p) if p.is_file() else None
            except Exception:  # noqa: BLE001 - a broken file is the wrapper step's business
                value = None
            if value:
                out.append(WrapperSource(value, str(p), "project"))
                break
    try:
        value = current_wrapper(user)
    except Exception:  # noqa: BLE001
        value = None
    if value:
        out.append(WrapperSource(value, str(user), "user"))
    return out


def override_advice(source: WrapperSource, exe: str, env: Mapping[str, str] | None = None) -> str:
    """What to do so that cargo stops using ``source`` (one that wins over cargo's own
    config, ``$CARGO_HOME/config.toml``) and runs kache."""
    user = cargo_config_path(env)
    if source.kind == "env":
        var = source.where.rsplit(" ", 1)[-1]
        return (f"unset {var} (set in your environment: check your shell profile) or set it to {exe}; "
                f"while it is set it wins over every cargo config file, {user} included")
    return (f"edit {source.where}: [build] rustc-wrapper = {_toml(source.value)}: set it to {_toml(exe)}, or "
            f"remove it so that {user} applies")


def _kache_or_client(wrapper: str, exe: str) -> bool:
    name = os.path.basename(os.path.expanduser(wrapper))
    return bool(wrapper) and (_same_file(wrapper, exe) or name.startswith("kache"))


def override_step(exe: str, env: Mapping[str, str] | None = None, cwd: str | None = None) -> Step | None:
    """What wins over ``$CARGO_HOME/config.toml`` (the file the wrapper step writes) here:
    an environment variable or a project's ``.cargo/config.toml``. None when nothing does;
    a failed step (nothing ``init`` may change) when it names another wrapper."""
    sources = wrapper_sources(env, cwd)
    if not sources or sources[0].kind == "user":
        return None
    top = sources[0]
    user = cargo_config_path(env)
    if _kache_or_client(top.value, exe):
        return Step("wrapper in effect", True, f"{top.where} sets {top.value!r}, which wins over {user}: cargo "
                    "runs kache")
    runs = "no wrapper (it is set but empty)" if not top.value else repr(top.value)
    return Step("wrapper in effect", False, f"{top.where} sets {runs}, which wins over {user}: cargo still runs "
                f"{'rustc without kache' if not top.value else top.value}, not kache. To fix: "
                f"{override_advice(top, exe, env)}", None)


def _same_file(a: str, b: str) -> bool:
    return os.path.realpath(os.path.expanduser(a)) == os.path.realpath(os.path.expanduser(b))


def _client_of(wrapper: str, exe: str) -> dict[str, str] | None:
    """What the native client ``wrapper`` was built with, when it is one that hands
    what the daemon does not serve to this kache ``exe``; else None."""
    from kache.native import OUTPUT_NAME, client_info

    if not os.path.basename(wrapper).startswith(OUTPUT_NAME):
        return None
    info = client_info(os.path.expanduser(wrapper))
    return info if info is not None and _same_file(info["kache"], exe) else None


def _set_wrapper(path: Path, wrapper: str) -> None:
    """Write ``[build] rustc-wrapper`` into cargo's config at ``path`` (tomlkit keeps the
    rest, comments included), replacing the file atomically."""
    import tomlkit

    text = path.read_text(encoding="utf-8") if path.exists() else ""
    doc = tomlkit.parse(text)
    if "build" not in doc:
        doc["build"] = tomlkit.table()
    doc["build"]["rustc-wrapper"] = wrapper
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".kache-tmp")
    tmp.write_text(tomlkit.dumps(doc), encoding="utf-8")
    os.replace(tmp, path)


def wrapper_step(exe: str, env: Mapping[str, str] | None = None) -> Step:
    """``[build] rustc-wrapper`` in cargo's own config points at kache, or at a native
    client that hands what the daemon does not serve to this kache (:func:`client_step`)."""
    path = cargo_config_path(env)
    try:
        now = current_wrapper(path)
    except Exception as e:  # noqa: BLE001 - tomlkit raises several kinds for a broken file
        return Step("cargo wrapper", False, f"{path} cannot be read as TOML ({e}); fix it by hand", None)
    if now is not None and _same_file(now, exe):
        return Step("cargo wrapper", True, f"{path}: [build] rustc-wrapper = {now!r}")
    if now is not None and _client_of(now, exe) is not None:
        return Step("cargo wrapper", True, f"{path}: [build] rustc-wrapper = {now!r} (the native client, "
                    "which hands what the daemon does not serve to kache)")

    def apply() -> None:
        _set_wrapper(path, exe)

    was = "not set" if now is None else f"{now!r}" + (" (sccache)" if "sccache" in now else "")
    return Step("cargo wrapper", False, f"{path}: set [build] rustc-wrapper = {exe!r} (it is {was} now)", apply,
                f"{path}: [build] rustc-wrapper was {was}, now {exe!r}")


def client_step(exe: str, env: Mapping[str, str] | None = None, output: str | None = None) -> Step:
    """The native thin client (``kache.native``) as cargo's wrapper in place of kache, for
    when a daemon runs: built with the user's rustc at ``output`` (default: beside kache),
    then written into cargo's config. It runs after :func:`wrapper_step` and replaces
    only kache (or an older client of it) there: skipped or failed, kache stays."""
    from kache.native import default_output, rustc_named

    env = os.environ if env is None else env
    output = os.path.abspath(output or default_output(exe))
    loaded = settings_mod.load(env)
    socket = layout.socket_path(loaded.local_store)
    path = cargo_config_path(env)
    name = "native client"
    if not loaded["cache.daemon_hits"]:
        where = loaded.sources["cache.daemon_hits"].where or "default"
        return Step(name, True, f"cache.daemon_hits is off ({where}): the daemon serves no hits, kache stays "
                    "cargo's wrapper")
    rustc, found = rustc_named(env=env)
    if found is None:
        return Step(name, True, f"no rustc to build it with ({rustc!r} is not on PATH): kache stays cargo's wrapper")
    if not os.access(os.path.dirname(output), os.W_OK):
        return Step(name, True, f"{os.path.dirname(output)} is not writable: kache stays cargo's wrapper "
                    "(`kache daemon client --output PATH` builds it elsewhere)")
    try:
        now = current_wrapper(path)
    except Exception:  # noqa: BLE001 - the wrapper step reports a broken file
        now = None
    info = _client_of(now, exe) if now is not None else None
    if info is not None and info["socket"] == socket:
        return Step(name, True, f"{path}: [build] rustc-wrapper = {now!r} asks the daemon at {socket}")

    def apply() -> None:
        from kache.native import build_client

        current = current_wrapper(path)
        if current is None or not (_same_file(current, exe) or _client_of(current, exe) is not None):
            raise RuntimeError(f"cargo's wrapper is {current or 'not set'} ({path}), not kache: left as it is")
        build_client(output, exe, socket, found)
        _set_wrapper(path, output)

    return Step(name, False, f"build {output} with {found} (a few seconds) and make it cargo's wrapper: it asks "
                "the daemon without starting Python and hands everything else to kache", apply,
                f"built {output} with {found}; it is cargo's wrapper now ({path}): it asks the daemon at {socket} "
                "and hands everything else to kache")


_MANAGERS = {"linux": "systemctl", "macos": "launchctl"}


def service_manager() -> str | None:
    """The service manager the daemon service is installed with here (``systemctl``,
    ``launchctl``), when it is on PATH; else None."""
    from kache.daemon import service
    from kache.errors import KacheError

    try:
        manager = _MANAGERS[service.current_platform()]
    except KacheError:
        return None
    return manager if shutil.which(manager) is not None else None


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
        old = os.umask(0o077)  # the config dir and file kache creates are owner-only
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(starter_config(), encoding="utf-8")
        finally:
            os.umask(old)

    return Step("user config", False, f"write a starter {path} (every setting, commented out)", apply,
                f"wrote a starter {path} (every setting, commented out)")


def service_step(env: Mapping[str, str] | None = None) -> Step:
    """The daemon as a user service (systemd on Linux, launchd on macOS), where one runs."""
    from kache.daemon import service
    from kache.errors import KacheError

    env = os.environ if env is None else env
    try:
        platform = service.current_platform()
    except KacheError as e:
        return Step("daemon service", True, str(e))
    manager = _MANAGERS[platform]
    if shutil.which(manager) is None:
        return Step("daemon service", True, f"no {manager} here; with a remote, builds start the daemon when they "
                    "need it (`kache daemon start` starts it by hand)")
    path = service.unit_path(env) if platform == "linux" else service.plist_path(env)
    store_root = settings_mod.load(env).converted("cache.local_store")
    environment, _notes = service.service_environment(env)
    command = service.kache_command()
    wanted = (service.render_unit(command, environment).encode() if platform == "linux"
              else service.render_plist(command, environment, layout.log_path(store_root)))
    installed = path.exists() and path.read_bytes() == wanted
    if installed and service.is_active(platform):
        return Step("daemon service", True, f"{path} installed and running")

    def apply() -> None:
        service.install(platform, activate=True, store_root=store_root, env=env)

    if installed:
        return Step("daemon service", False, f"{path} is installed but {manager} does not run it: enable and "
                    "start it", apply, f"{path} installed and started")
    return Step("daemon service", False, f"install and start {path}", apply, f"{path} installed and started")
