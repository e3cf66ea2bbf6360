"""The daemon as a login service: a systemd user unit (Linux) or a launchd agent (macOS).

Both match what ``nix/module.nix`` defines for NixOS and nix-darwin: ``<kache> daemon
run``, restarted on failure only (an idle exit is a success), umask 077, log level
``kache=info``. A service does not see the variables of a login shell, so the ones
that place the store and the system config (``KACHE_CACHE_DIR``, ``KACHE_CONFIG``) are
written into the definition when they are set at install time; the remote belongs in
the config file (a note says so when it is set only in the environment). Credentials
are never written.

``linux``: ``$XDG_CONFIG_HOME/systemd/user/kache.service`` (else ``~/.config/…``), then
``systemctl --user daemon-reload`` and ``systemctl --user enable --now kache.service``.
``macos``: ``~/Library/LaunchAgents/dev.kache.daemon.plist``, then ``launchctl bootstrap
gui/<uid> <plist>``. ``activate=False`` only writes (or removes) the file.
"""

from __future__ import annotations

import os
import plistlib
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kache._record import Record
from kache.errors import KacheError
from kache.store import layout

__all__ = ["PLATFORMS", "LABEL", "UNIT_NAME", "ServiceReport", "current_platform", "kache_command",
           "unit_path", "plist_path", "render_unit", "render_plist", "install", "uninstall", "manager_of_self",
           "restart_argv", "activation_hint", "is_active"]

PLATFORMS = ("linux", "macos")
LABEL = "dev.kache.daemon"
UNIT_NAME = "kache.service"
DOCUMENTATION = "https://github.com/kunobi-ninja/kache"
LOG_LEVEL = "kache=info"


class ServiceReport(Record):
    """What install/uninstall did: the file, the commands run, and notes for the person."""

    __slots__ = ("platform", "path", "changed", "commands", "notes")
    _defaults = {"changed": False, "commands": list, "notes": list}
    platform: str
    path: str
    changed: bool
    commands: list[str]
    notes: list[str]


def current_platform() -> str:
    if sys.platform.startswith("linux"):
        return "linux"
    if sys.platform == "darwin":
        return "macos"
    raise KacheError(f"cannot install the daemon service: {sys.platform}: only Linux (systemd) and macOS "
                     "(launchd) are supported; run `kache daemon start` instead")


def kache_command() -> list[str]:
    """How a service runs this kache: the absolute path of the running ``kache`` script,
    else the one beside this interpreter, else ``<python> -m kache``."""
    argv0 = sys.argv[0] if sys.argv else ""
    if os.path.basename(argv0).startswith("kache") and os.path.isfile(argv0) and os.access(argv0, os.X_OK):
        return [os.path.abspath(argv0)]
    beside = os.path.join(os.path.dirname(sys.executable), "kache")
    if os.path.isfile(beside) and os.access(beside, os.X_OK):
        return [beside]
    return [sys.executable, "-m", "kache"]


def _home(env: Mapping[str, str]) -> str:
    return env.get("HOME") or os.path.expanduser("~")


def unit_path(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    base = env.get("XDG_CONFIG_HOME", "").strip()
    if not base or not os.path.isabs(base):
        base = os.path.join(_home(env), ".config")
    return Path(base, "systemd", "user", UNIT_NAME)


def plist_path(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    return Path(_home(env), "Library", "LaunchAgents", f"{LABEL}.plist")


def service_environment(env: Mapping[str, str]) -> tuple[dict[str, str], list[str]]:
    """Variables to write into the definition, and notes about the ones left out."""
    from kache.settings import setting, settings_table, user_config_path

    out = {"KACHE_LOG": LOG_LEVEL}
    for name in ("KACHE_CONFIG", setting("cache.local_store").env):
        if name and env.get(name, "").strip():
            out[name] = env[name].strip()
    notes = []
    remote_vars = [s.env for s in settings_table() if s.key.startswith("cache.remote.") and s.env and s.env in env]
    if remote_vars:
        notes.append(f"the service does not see {', '.join(remote_vars)} from this shell: put the remote in "
                     f"{user_config_path(env)} ([cache.remote]) so the daemon uses it")
    return out, notes


def _systemd_quote(word: str) -> str:
    text = word.replace("%", "%%").replace("$", "$$")
    if any(c in text for c in " \t\"'\\;") or not text:
        text = '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return text


def render_unit(command: list[str], environment: Mapping[str, str]) -> str:
    """The text of ``kache.service`` for ``command`` (the kache executable's argv prefix)."""
    exec_start = " ".join(_systemd_quote(w) for w in [*command, "daemon", "run", "--service"])
    env_lines = [f"Environment={_systemd_quote(f'{k}={v}')}" for k, v in environment.items()]
    return "\n".join([
        "# Written by `kache daemon install`; `kache daemon uninstall` removes it.",
        "[Unit]",
        "Description=kache build cache daemon",
        f"Documentation={DOCUMENTATION}",
        # --service exits 0 only when asked to stop; one that cannot start (a bad config)
        # is retried five times, not forever
        "StartLimitIntervalSec=120",
        "StartLimitBurst=5",
        "",
        "[Service]",
        "Type=simple",
        f"ExecStart={exec_start}",
        "Restart=on-failure",
        "RestartSec=5s",
        "UMask=0077",
        # the runner's calls (builds' compiles) finish when the daemon stops; they run
        # with the builds' rights, so no sandboxing (NoNewPrivileges= would refuse them all)
        "KillMode=process",
        *env_lines,
        "",
        "[Install]",
        "WantedBy=default.target",
        "",
    ])


def render_plist(command: list[str], environment: Mapping[str, str], log_path: str) -> bytes:
    """The launchd agent ``dev.kache.daemon`` as an XML plist."""
    doc: dict[str, Any] = {
        "Label": LABEL,
        "ProgramArguments": [*command, "daemon", "run", "--service"],
        "EnvironmentVariables": dict(environment),
        "RunAtLoad": True,
        "KeepAlive": {"SuccessfulExit": False},
        "ProcessType": "Background",
        "ThrottleInterval": 5,
        "StandardOutPath": log_path,
        "StandardErrorPath": log_path,
    }
    return plistlib.dumps(doc, fmt=plistlib.FMT_XML, sort_keys=False)


def _run(argv: list[str], report: ServiceReport, *, check: bool = True) -> subprocess.CompletedProcess[str]:
    report.commands.append(" ".join(argv))
    out = subprocess.run(argv, capture_output=True, text=True)
    if check and out.returncode != 0:
        why = (out.stderr or out.stdout).strip().splitlines()
        raise KacheError(f"`{' '.join(argv)}` failed: exit status {out.returncode}: "
                         f"{why[-1] if why else 'no output'}")
    return out


def _need(tool: str, path: Path, fix: str) -> str:
    found = shutil.which(tool)
    if found is None:
        raise KacheError(f"cannot activate the daemon service: {tool} not found, so {path} was not written; "
                         f"{fix}, or rerun with --no-activate to write the file only")
    return found


def _write(path: Path, data: bytes) -> bool:
    """Write ``path`` atomically; False when it already held exactly this."""
    try:
        if path.read_bytes() == data:
            return False
    except OSError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
    return True


class _Before:
    """What was at a service file's path before an install wrote it."""

    def __init__(self, path: Path) -> None:
        try:
            self.data: bytes | None = path.read_bytes()
        except OSError:
            self.data = None
        self.missing_dirs = [d for d in [path.parent, *path.parent.parents] if not d.exists()]
        """Directories the write creates, deepest first."""


def _put_back(path: Path, before: _Before) -> str:
    """Undo :func:`_write` after a failed activation: remove the file (and the
    directories) it created, or restore the one it replaced. Says what it did."""
    previous = before.data
    try:
        if previous is None:
            _remove(path)
            for d in before.missing_dirs:
                try:
                    d.rmdir()
                except OSError:
                    break
            return f"{path} was removed again"
        if not _write(path, previous):
            return f"{path} is as it was before"
        return f"{path} was put back as it was"
    except OSError as e:
        return f"{path} is left behind ({e.strerror or e}): remove it by hand"


_NO_BUS = ("Failed to connect to bus", "DBUS_SESSION_BUS_ADDRESS", "XDG_RUNTIME_DIR", "No medium found")


def activation_hint(platform: str, error: str, env: Mapping[str, str] | None = None) -> str:
    """What to do after the service manager refused (``error``: its last line)."""
    env = os.environ if env is None else env
    if platform == "linux" and any(s in error for s in _NO_BUS):
        runtime = env.get("XDG_RUNTIME_DIR")
        where = f"no {runtime}/bus" if runtime else "XDG_RUNTIME_DIR is not set"
        return (f"systemctl --user is not available here: there is no user session bus ({where}): is this a "
                "container, or an ssh session of a user without lingering? Try `loginctl enable-linger $USER` "
                "and log in again; or run `kache daemon start` (with a remote, builds also start it when they need it)")
    if platform == "linux":
        return ("see `systemctl --user status kache.service` and `journalctl --user -u kache.service`; or run "
                "`kache daemon start` (with a remote, builds also start it when they need it)")
    return ("launchctl needs the GUI session of the logged-in user (not an ssh or sudo session); or run "
            "`kache daemon start` (with a remote, builds also start it when they need it)")


def _activate(platform: str, path: Path, before: _Before, report: ServiceReport,
              commands: list[tuple[list[str], bool]]) -> None:
    """Run the manager's ``commands`` (argv, checked); on a failure put the file back as
    it was before this install and raise a KacheError with what to do."""
    for argv, check in commands:
        try:
            _run(argv, report, check=check)
        except KacheError as e:
            undone = _put_back(path, before)
            raise KacheError(f"cannot install the daemon service: {e}\n{activation_hint(platform, str(e))}\n"
                             f"{undone}") from None


def install(platform: str, *, activate: bool = True, store_root: str,
            command: list[str] | None = None, env: Mapping[str, str] | None = None) -> ServiceReport:
    """Write the service definition and, with ``activate``, enable and start it.

    ``store_root`` is the local store (the launchd agent logs there). When activation
    fails, the file is removed again (or the one it replaced put back) and a
    KacheError says why and what to do.
    """
    env = os.environ if env is None else env
    command = command or kache_command()
    environment, notes = service_environment(env)
    if platform == "linux":
        path = unit_path(env)
        report = ServiceReport(platform, str(path), notes=notes)
        fix = "run `systemctl --user daemon-reload && systemctl --user enable --now kache.service` where " \
              "systemd runs"
        systemctl = _need("systemctl", path, fix) if activate else ""
        before = _Before(path)
        report.changed = _write(path, render_unit(command, environment).encode())
        if activate:
            steps = [([systemctl, "--user", "daemon-reload"], True),
                     ([systemctl, "--user", "enable", "--now", UNIT_NAME], True)]
            if report.changed:  # an upgrade in place: run the new definition now
                steps.append(([systemctl, "--user", "restart", UNIT_NAME], True))
            _activate(platform, path, before, report, steps)
        return report
    if platform == "macos":
        path = plist_path(env)
        report = ServiceReport(platform, str(path), notes=notes)
        log = layout.log_path(store_root)
        launchctl = _need("launchctl", path, f"run `launchctl bootstrap gui/{os.getuid()} {path}` on the Mac") \
            if activate else ""
        old = os.umask(0o077)  # the store and any parent it makes are owner-only
        try:
            os.makedirs(store_root, mode=0o700, exist_ok=True)
        finally:
            os.umask(old)
        before = _Before(path)
        report.changed = _write(path, render_plist(command, environment, log))
        if activate:
            _activate(platform, path, before, report, [
                ([launchctl, "bootout", f"gui/{os.getuid()}/{LABEL}"], False),
                ([launchctl, "bootstrap", f"gui/{os.getuid()}", str(path)], True)])
        return report
    raise KacheError(f"cannot install the daemon service: {platform}: expected one of {', '.join(PLATFORMS)}")


def is_active(platform: str) -> bool:
    """Whether the service manager runs the installed service now (False when it cannot
    be asked: no manager, no session)."""
    if platform == "linux":
        tool = shutil.which("systemctl")
        argv = [tool, "--user", "is-active", "--quiet", UNIT_NAME] if tool else None
    else:
        tool = shutil.which("launchctl")
        argv = [tool, "print", f"gui/{os.getuid()}/{LABEL}"] if tool else None
    if argv is None:
        return False
    try:
        return subprocess.run(argv, capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def uninstall(platform: str, *, activate: bool = True, env: Mapping[str, str] | None = None) -> ServiceReport:
    """Stop and disable the service (with ``activate``), then remove its file."""
    env = os.environ if env is None else env
    if platform == "linux":
        path = unit_path(env)
        report = ServiceReport(platform, str(path))
        tool = shutil.which("systemctl") if activate else None
        if tool and path.exists():
            _run([tool, "--user", "disable", "--now", UNIT_NAME], report, check=False)
        report.changed = _remove(path)
        if tool and report.changed:
            _run([tool, "--user", "daemon-reload"], report, check=False)
        if activate and tool is None and report.changed:
            report.notes.append("systemctl not found: if the service still runs, stop it with "
                                "`systemctl --user disable --now kache.service`")
        return report
    if platform == "macos":
        path = plist_path(env)
        report = ServiceReport(platform, str(path))
        tool = shutil.which("launchctl") if activate else None
        if tool and path.exists():
            _run([tool, "bootout", f"gui/{os.getuid()}/{LABEL}"], report, check=False)
        report.changed = _remove(path)
        return report
    raise KacheError(f"cannot remove the daemon service: {platform}: expected one of {', '.join(PLATFORMS)}")


def manager_of_self(env: Mapping[str, str] | None = None, cgroup: str = "/proc/self/cgroup") -> dict[str, str] | None:
    """The service manager running this process, for the daemon's ``status``: systemd
    (it sets ``INVOCATION_ID``; the unit is the last ``*.service`` of the process's
    cgroup, else kache.service) or launchd (it sets ``XPC_SERVICE_NAME`` to the job's
    label: dev.kache.daemon, or org.nixos.kache under nix-darwin). None otherwise."""
    env = os.environ if env is None else env
    if env.get("INVOCATION_ID"):
        unit = UNIT_NAME
        try:
            with open(cgroup, encoding="utf-8") as f:
                for line in f:
                    parts = [p for p in line.strip().rpartition(":")[2].split("/") if p.endswith(".service")]
                    parts = [p for p in parts if not p.startswith("user@")]
                    if parts:
                        unit = parts[-1]
                        break
        except OSError:
            pass
        return {"kind": "systemd", "name": unit}
    label = env.get("XPC_SERVICE_NAME", "")
    if label and label != "0":
        return {"kind": "launchd", "name": label}
    return None


def restart_argv(manager: Mapping[str, str] | None, uid: int | None = None) -> list[str]:
    """How to restart the daemon through its service manager (``manager`` as the
    daemon's status gives it; None: unknown, kache's own systemd unit on Linux and
    launchd agent on macOS are assumed)."""
    kind = (manager or {}).get("kind") or ("launchd" if sys.platform == "darwin" else "systemd")
    if kind == "launchd":
        label = (manager or {}).get("name") or LABEL
        return ["launchctl", "kickstart", "-k", f"gui/{os.getuid() if uid is None else uid}/{label}"]
    return ["systemctl", "--user", "restart", (manager or {}).get("name") or UNIT_NAME]


def _remove(path: Path) -> bool:
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    return True


def read_environment_file(path: str) -> dict[str, str]:
    """``NAME=value`` lines, as systemd's ``EnvironmentFile=`` reads them (the part kache's
    services need): blank lines and ``#`` / ``;`` comments skipped, an optional
    ``export``, the value trimmed and, when quoted, unquoted (``"…"`` with ``\\"`` and
    ``\\\\`` escapes, ``'…'`` as is). Never run as shell code: ``$``, ``;`` and spaces are
    part of the value. Raises KacheError naming the file and line."""
    import re

    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise KacheError(f"cannot read the environment file {path}: {getattr(e, 'strerror', None) or e}") from None
    out: dict[str, str] = {}
    for number, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("export "):
            line = line[len("export "):].lstrip()
        name, eq, value = line.partition("=")
        name, value = name.strip(), value.strip()
        if not eq or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise KacheError(f"{path}:{number}: expected NAME=value, got {raw.strip()[:60]!r}")
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = re.sub(r'\\(["\\])', r"\1", value[1:-1])
        elif len(value) >= 2 and value[0] == value[-1] == "'":
            value = value[1:-1]
        out[name] = value
    return out
