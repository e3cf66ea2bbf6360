"""``kache doctor``: one check per line, ok / warn / fail, each with the fix.

Checks are plain functions returning :class:`Check`; ``--fix`` calls a check's ``fix``
when it has one. Nothing here changes anything unless asked to.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from kache import __version__, units
from kache import settings as settings_mod
from kache.store import layout

__all__ = ["Check", "SccacheDir", "inspect_sccache_dir", "run_checks", "sccache_dir", "shell_rc_mentions"]

OK, WARN, FAIL = "ok", "warn", "fail"


@dataclass
class Check:
    name: str
    status: str
    detail: str
    fix_hint: str = ""
    fix: Callable[[], str] | None = None
    """Repairs the problem; returns what it did."""

    def to_json(self) -> dict[str, str]:
        return {"name": self.name, "status": self.status, "detail": self.detail, "fix": self.fix_hint}


def _is_kache(path: str | None) -> bool:
    return bool(path) and os.path.basename(os.path.expanduser(path or "")).startswith("kache")


def check_path(exe: str) -> Check:
    found = shutil.which("kache")
    if found is None:
        return Check("kache on PATH", WARN, f"`kache` is not on PATH (this one is {exe})",
                     f"add {os.path.dirname(exe)} to PATH")
    if os.path.realpath(found) != os.path.realpath(exe):
        return Check("kache on PATH", WARN, f"PATH finds {found}, but this is {exe}",
                     "remove the other installation or reorder PATH")
    return Check("kache on PATH", OK, found)


def effective_wrapper(env: Mapping[str, str], cwd: str) -> tuple[str | None, str]:
    """The RUSTC_WRAPPER cargo will use here, and where it comes from."""
    from kache.init_steps import wrapper_sources

    sources = wrapper_sources(env, cwd)
    if not sources:
        return None, "nowhere"
    return sources[0].value or None, sources[0].where


def check_wrapper(exe: str, env: Mapping[str, str], cwd: str | None = None) -> Check:
    """The wrapper cargo runs for a build in ``cwd``: the first of
    :func:`kache.init_steps.wrapper_sources`. ``--fix`` writes ``$CARGO_HOME/config.toml``
    only when that file is the one cargo reads; what wins over it (an environment
    variable, a project's .cargo/config.toml) is named, with what to do by hand."""
    from kache.init_steps import cargo_config_path, override_advice, wrapper_sources, wrapper_step

    sources = wrapper_sources(env, cwd or os.getcwd())
    user = cargo_config_path(env)
    step = wrapper_step(exe, env)

    def fix() -> str:
        if step.apply is None:
            raise RuntimeError(step.detail)
        step.apply()
        return step.done or step.detail

    if not sources:
        return Check("cargo wrapper", WARN, "cargo runs rustc without a wrapper (RUSTC_WRAPPER is not set)",
                     "run `kache init` or `kache doctor --fix`", fix if not step.ok else None)
    top = sources[0]
    if top.value and _is_kache(top.value):
        return Check("cargo wrapper", OK, f"cargo runs {top.value} (from {top.where})")
    if top.kind == "user":
        kind = "sccache" if "sccache" in top.value else top.value
        return Check("cargo wrapper", FAIL, f"cargo runs {kind} as its wrapper (from {top.where}), not kache",
                     f"`kache doctor --fix` sets {user}: [build] rustc-wrapper = {exe!r}", fix)
    runs = ("rustc without a wrapper: it is set but empty" if not top.value else
            ("sccache" if "sccache" in top.value else top.value) + f" as its wrapper: it sets {top.value!r}")
    hint = override_advice(top, exe, env)
    if not step.ok:
        named = next((s.value for s in sources if s.kind == "user"), None)
        hint += (f"; then `kache doctor --fix` sets {user} too (it names " +
                 (f"{named!r} now)" if named else "no wrapper now)") if step.apply is not None else
                 f"; {step.detail}")
    return Check("cargo wrapper", WARN if not top.value else FAIL,
                 f"cargo runs {runs} (from {top.where}, which wins over {user}), not kache", hint)


def check_config(env: Mapping[str, str]) -> Check:
    from kache.errors import SettingsError

    try:
        s = settings_mod.load(env)
        settings_mod.validate(s)
    except SettingsError as e:
        in_env = any("environment variable" in p for p in e.problems)
        in_file = any("environment variable" not in p for p in e.problems)
        hint = " and ".join(h for h, wanted in (("fix or unset the environment variable named above", in_env),
                                                 ("edit the file named above, or `kache config`", in_file))
                            if wanted)
        off = ("caching is off: " if s.caching_off else "the remote is off: " if s.remote_off else "")
        return Check("config", FAIL, off + "; ".join(e.problems), hint)
    files = [str(f.path) for f in s.files if f.exists]
    return Check("config", OK, "valid" + (f" ({', '.join(files)})" if files else " (defaults)"))


def _existing(path: str) -> str:
    """``path``, or its nearest ancestor that exists."""
    path = os.path.abspath(path)
    while not os.path.exists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    return path


def check_store(root: str) -> list[Check]:
    """Writable, private, on the filesystem of the projects. A store that does not exist
    yet is not created here (the first build creates it, owner-only): its nearest
    existing parent is checked instead."""
    out = []
    exists = os.path.isdir(root)
    if exists:
        old = os.umask(0o077)  # whatever doctor creates in the store is owner-only
        try:
            os.makedirs(layout.tmp_dir(root), mode=0o700, exist_ok=True)
            probe = layout.doctor_probe(root)
            with open(probe, "w") as f:
                f.write("x")
            os.unlink(probe)
            out.append(Check("store writable", OK, root))
        except OSError as e:
            out.append(Check("store writable", FAIL, f"{root}: {e.strerror}",
                             "fix the permissions or set KACHE_CACHE_DIR"))
            return out
        finally:
            os.umask(old)
        out.append(check_private(root))
    else:
        parent = _existing(root)
        if os.path.exists(root) or not os.path.isdir(parent):
            out.append(Check("store writable", FAIL, f"{root} is not a directory: kache cannot keep the store there",
                             "point cache.local_store (KACHE_CACHE_DIR) at a directory"))
            return out
        if not os.access(parent, os.W_OK | os.X_OK):
            out.append(Check("store writable", FAIL, f"{root} does not exist and {parent} is not writable: kache "
                             "cannot create the store there", "fix the permissions or set KACHE_CACHE_DIR"))
            return out
        out.append(Check("store writable", OK, f"{root} does not exist yet: the first build creates it there, "
                         f"owner-only ({parent} is writable)"))
    here = os.getcwd()
    try:
        same = os.stat(_existing(root)).st_dev == os.stat(here).st_dev
    except OSError:
        same = True
    out.append(Check("same filesystem", OK if same else WARN,
                     f"store and {here} share a filesystem (hits are hardlinks)" if same else
                     f"store {root} and {here} are on different filesystems: hits are copies, not hardlinks",
                     "" if same else "put the store (KACHE_CACHE_DIR) on the filesystem of your projects"))
    return out


def check_private(root: str) -> Check:
    """The store is owner-only (stores made by older versions, or by hand, may not be)."""
    try:
        mode = os.stat(root).st_mode & 0o777
    except OSError as e:
        return Check("store private", WARN, f"{root}: {e.strerror}")
    if not mode & 0o077:
        return Check("store private", OK, f"{root} is mode {mode:04o} (only you can read it)")

    def fix() -> str:
        os.chmod(root, 0o700)
        for name in layout.PRIVATE_FILES:
            try:
                os.chmod(os.path.join(root, name), 0o600)
            except FileNotFoundError:
                pass
        return f"made {root} owner-only (0700; index, events and log 0600)"

    return Check("store private", WARN, f"{root} is mode {mode:04o}: other local users can read your cache",
                 "`kache doctor --fix` makes it 0700", fix)


def check_index(root: str, *, verify: bool = False) -> Check:
    from kache.store.store import Store

    if not os.path.exists(layout.index_path(root)):
        return Check("store index", OK, "empty store (no builds yet)")
    def rebuild() -> str:
        s = Store(root)  # opening for writing moves an index that cannot open aside
        try:
            s.open()
            if not s.recovered:
                s.recover_if_corrupt()  # one that opens but is damaged inside
            return f"moved the corrupt index aside to {s.recovered}" if s.recovered else "index opens again"
        finally:
            s.close()

    store = Store(root, create=False)
    try:
        problems = store.check(verify_hashes=verify)
    except Exception as e:  # noqa: BLE001 - StoreError, sqlite's DatabaseError and friends
        return Check("store index", FAIL, f"{layout.index_path(root)}: {e}", "`kache doctor --fix` rebuilds it", rebuild)
    finally:
        store.close()
    if any(p.startswith(f"{layout.INDEX}: ") for p in problems):
        return Check("store index", FAIL, f"{root}/{problems[0]}", "`kache doctor --fix` rebuilds it", rebuild)
    if not problems:
        return Check("store index", OK, "index and blobs consistent")
    return _index_problems(root, problems, verify)


def _index_problems(root: str, problems: list[str], verify: bool = False) -> Check:
    from kache.store.store import Store

    broken = [p for p in problems if not p.endswith("orphan blob(s) no entry uses")]

    def fix() -> str:
        s = Store(root)
        try:
            entries, damaged = s.integrity.repair(rehash=verify)
            # Blobs younger than 10 minutes may belong to a compile that is recording.
            count, freed = s.remove_orphans(s.integrity.orphan_blobs(older_than=600), older_than=600)
            return (f"removed {damaged} damaged blobs, the {entries} entries that used them, and {count} "
                    f"orphan blobs ({units.format_size(freed)})")
        finally:
            s.close()

    status = FAIL if broken else WARN
    return Check("store index", status, "; ".join(problems[:5]) + (" …" if len(problems) > 5 else ""),
                 "`kache doctor --fix` removes broken entries and orphan blobs", fix)


def check_disk(root: str, max_bytes: int) -> Check:
    from kache.store.stats import store_totals

    try:
        free = shutil.disk_usage(_existing(root)).free
    except OSError as e:
        return Check("free disk", WARN, f"{root}: {e.strerror}")
    used = store_totals(root).get("physical_bytes", 0)
    room = free + used
    if room < max_bytes:
        return Check("free disk", WARN, f"{units.format_size(free)} free, but local_max_size is "
                     f"{units.format_size(max_bytes)} (store holds {units.format_size(used)})",
                     "lower cache.local_max_size or free disk space")
    return Check("free disk", OK, f"{units.format_size(free)} free; store {units.format_size(used)} of "
                 f"{units.format_size(max_bytes)}")


def check_native_client(wrapper: tuple[str | None, str], root: str) -> Check | None:
    """When cargo's wrapper (``wrapper``: :func:`effective_wrapper`) is the native client:
    does it ask this store's daemon, and can it run the kache it hands the rest to?"""
    from kache.native import OUTPUT_NAME, client_info

    value, where = wrapper
    if not value or not os.path.basename(value).startswith(OUTPUT_NAME):
        return None
    path = os.path.expanduser(value)
    info = client_info(path)
    if info is None:
        return Check("native client", WARN, f"{path} (from {where}) does not say what it was built with",
                     "`kache daemon client` builds it again")
    kache, socket = info["kache"], info["socket"]
    if not (os.path.isfile(kache) and os.access(kache, os.X_OK)):
        return Check("native client", FAIL, f"{path} hands what the daemon does not serve to {kache}, which is not "
                     "there: those calls run rustc without the cache", "`kache daemon client` builds it again")
    wanted = layout.socket_path(root)
    if socket != wanted:
        return Check("native client", WARN, f"{path} asks the daemon at {socket or 'no socket'}, but the store is "
                     f"{root}: it hands every call to kache (slower, still right)",
                     "`kache daemon client` builds it again (an older client had its socket built in); it reads "
                     "cache.local_store as a one-line string under [cache], or KACHE_CACHE_DIR")
    return Check("native client", OK, f"{path} asks the daemon at {socket}, else runs {kache}")


def check_daemon(root: str, remote_configured: bool, wrapper: tuple[str | None, str] = (None, "nowhere")) -> Check:
    """``wrapper``: :func:`effective_wrapper`. The daemon is needed with a remote (it
    uploads and fetches) and with the native client as cargo's wrapper (it serves the
    client's hits: without it the client hands every call to kache)."""
    from kache.native import OUTPUT_NAME

    try:
        from kache.daemon import client
    except ImportError:
        return Check("daemon", WARN, "this kache has no daemon")
    status = client.request(root, {"v": 1, "op": "status"}, timeout=0.5)
    if status is None or not status.get("ok"):
        from kache.daemon import control

        pid = control.running_pid(root)
        if pid is not None:  # holds the pid file, does not answer
            if control.stopped_by_signal(pid):
                return Check("daemon", WARN, f"stopped: pid {pid} was sent SIGSTOP or is under a debugger; builds "
                             "do not ask it (a call that finds it so waits once, then 30 s go without it)",
                             control.stopped_fix(pid))
            return Check("daemon", WARN, f"not answering: pid {pid} holds the pid file (starting, or wedged)",
                         "see `kache daemon log`; `kache daemon restart` replaces it")
        start = "start it with `kache daemon start` or install the service (`kache daemon install`)"
        value, where = wrapper
        if value and os.path.basename(value).startswith(OUTPUT_NAME):
            return Check("daemon", WARN, f"not running: {OUTPUT_NAME}, cargo's wrapper (from {where}), hands every "
                         "call to kache (slower hits)" + ("; and nothing uploads to or fetches from the remote"
                                                           if remote_configured else ""), start)
        if remote_configured:
            return Check("daemon", WARN, "not running: nothing uploads to or fetches from the remote", start)
        return Check("daemon", OK, "not running (needed only with a remote or the native client)")
    version = status.get("version")
    if version != __version__:
        return Check("daemon", WARN, f"running version {version}, this is {__version__}", "`kache daemon stop`; "
                     "it restarts with this version")
    return Check("daemon", OK, f"running, pid {status.get('pid')}, version {version}")


def check_remote(settings: settings_mod.Settings) -> Check | None:
    if not settings["cache.remote.bucket"]:
        return None
    try:
        from kache.remote.s3 import Remote

        remote = Remote.from_settings(settings)
        if remote is None:
            return None
        detail = remote.check()
    except ImportError:
        return Check("remote", WARN, "this kache cannot talk to S3")
    except Exception as e:  # noqa: BLE001 - RemoteError, credentials, network
        return Check("remote", FAIL, str(e), "check endpoint, bucket and credentials (`kache config show`)")
    return Check("remote", OK, detail)


def check_rustc() -> Check:
    rustc = shutil.which("rustc")
    if rustc is None:
        return Check("rustc", FAIL, "rustc is not on PATH", "install Rust (https://rustup.rs)")
    try:
        version = subprocess.run([rustc, "-V"], capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.TimeoutExpired) as e:
        return Check("rustc", FAIL, f"{rustc}: {e}")
    return Check("rustc", OK, f"{version} ({rustc})")


def sccache_dir(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    if env.get("SCCACHE_DIR"):
        return Path(env["SCCACHE_DIR"])
    base = env.get("XDG_CACHE_HOME") or os.path.join(env.get("HOME") or os.path.expanduser("~"), ".cache")
    return Path(base) / "sccache"


_HEX = frozenset("0123456789abcdef")
_SCCACHE_TMP = ".sccachetmp"  # sccache's lru_disk_cache writes entries as temp files of this prefix first


@dataclass
class SccacheDir:
    """What :func:`inspect_sccache_dir` found at sccache's local disk cache."""

    path: Path
    files: int = 0
    bytes: int = 0
    unexpected: list[str] | None = None
    """Entries sccache does not make (relative paths, the first few); None: none."""
    problem: str = ""
    """Why it cannot be deleted at all (missing, a symbolic link, unreadable)."""


def inspect_sccache_dir(path: Path) -> SccacheDir:
    """Is ``path`` recognisably sccache's local disk cache, and how big is it?

    sccache's disk cache (src/cache/disk.rs, lru_disk_cache) keeps each entry at
    ``<k0>/<k1>/<key>``, sharded by the first two hex digits of its hex key; the
    preprocessor cache (C/C++ direct mode) the same way under ``preprocessor/``; entries
    being written are ``.sccachetmp*`` files at the top. Anything else (another file or
    directory name, a symbolic link, a special file) is unexpected: the directory is
    then not sccache's alone. Symbolic links are never followed."""
    found = SccacheDir(path)
    if path.is_symlink():
        found.problem = f"{path} is a symbolic link (to {os.readlink(path)}): kache does not follow it"
        return found
    if not path.is_dir():
        found.problem = f"no cache directory at {path}"
        return found
    unexpected: list[str] = []

    def walk(d: Path, rel: str, depth: int, root_level: bool) -> None:
        try:
            entries = list(os.scandir(d))
        except OSError as err:
            unexpected.append(f"{rel or '.'} (cannot be read: {err.strerror})")
            return
        for e in entries:
            name = f"{rel}/{e.name}" if rel else e.name
            if e.is_symlink():
                unexpected.append(f"{name} (a symbolic link)")
            elif e.is_dir(follow_symlinks=False):
                if depth < 2 and e.name in _HEX:
                    walk(Path(e.path), name, depth + 1, False)
                elif depth == 0 and root_level and e.name == "preprocessor":
                    walk(Path(e.path), name, 0, False)
                else:
                    unexpected.append(f"{name}/")
            elif e.is_file(follow_symlinks=False) and (
                    (depth == 2 and set(e.name) <= _HEX) or (depth == 0 and e.name.startswith(_SCCACHE_TMP))):
                found.files += 1
                found.bytes += e.stat(follow_symlinks=False).st_size
            else:
                unexpected.append(name)

    walk(path, "", 0, True)
    if unexpected:
        found.unexpected = sorted(unexpected)
    return found


def shell_rc_mentions(env: Mapping[str, str] | None = None) -> list[str]:
    """``file:line: text`` of shell start-up lines that set RUSTC_WRAPPER to sccache."""
    env = os.environ if env is None else env
    home = Path(env.get("HOME") or os.path.expanduser("~"))
    out = []
    for rc in (".bashrc", ".bash_profile", ".profile", ".zshrc", ".zprofile", ".config/fish/config.fish"):
        p = home / rc
        try:
            lines = p.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            continue
        for n, line in enumerate(lines, 1):
            if re.search(r"RUSTC_WRAPPER", line) and "sccache" in line:
                out.append(f"{p}:{n}: {line.strip()}")
    return out


def run_checks(env: Mapping[str, str] | None = None, *, verify: bool = False) -> list[Check]:
    from kache.selfexec import kache_executable

    env = os.environ if env is None else env
    exe = kache_executable()
    wrapper = effective_wrapper(env, os.getcwd())
    checks = [check_path(exe), check_wrapper(exe, env), check_config(env)]
    try:
        settings = settings_mod.load(env)
        if settings.store_problem:  # the store is not named safely: the default is not it
            return checks + [Check("store", FAIL, "not checked: caching is off (the config problem above), and kache "
                                   "does not check the default store in its place",
                                   "fix the setting named above"),
                             check_rustc()]
        root = settings.converted("cache.local_store")
        max_bytes = settings.converted("cache.local_max_size")
    except Exception:  # noqa: BLE001 - reported by the config check
        return checks + [check_rustc()]
    checks += check_store(root)
    checks.append(check_index(root, verify=verify))
    checks.append(check_disk(root, max_bytes))
    checks.append(check_daemon(root, bool(settings["cache.remote.bucket"]), wrapper))
    native = check_native_client(wrapper, os.path.abspath(root))
    if native is not None:
        checks.append(native)
    remote = check_remote(settings)
    if remote is not None:
        checks.append(remote)
    checks.append(check_rustc())
    for line in shell_rc_mentions(env):
        checks.append(Check("shell start-up", WARN, f"{line}", "remove or change this line by hand "
                            "(kache does not edit shell files)"))
    return checks

