"""Wrapper mode: what runs for every rustc call cargo makes.

``run(argv)`` never lets kache break a build: any problem with kache itself, its
settings or its store ends in running the real compiler exactly as cargo asked, after
at most one warning line on stderr. Once the real compiler has run, its exit status
is what cargo gets, whatever happens while recording.
"""

from __future__ import annotations

import os
import sys
import time
TYPE_CHECKING = False  # typing costs ~11 ms to import; annotations are strings here

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["run", "exec_compiler", "warn_once", "write_replay", "LOG_NAME"]

WARN_INTERVAL_SECS = 600.0


def exec_compiler(argv: list[str]) -> int:
    """Replace this process with the real compiler (fds, the jobserver's too, stay open)."""
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execvp(argv[0], argv)
    except OSError as e:
        sys.stderr.write(f"kache: error: cannot run {argv[0]}: {e.strerror}\n")
        return 127
    raise AssertionError("unreachable")


def write_replay(stdout: str, stderr: str) -> None:
    """Pass rustc's recorded messages on to cargo, as rustc would have printed them."""
    if stdout:
        sys.stdout.buffer.write(stdout.encode("utf-8", "surrogateescape"))
        sys.stdout.flush()
    if stderr:
        sys.stderr.buffer.write(stderr.encode("utf-8", "surrogateescape"))
        sys.stderr.flush()


LOG_NAME = "kache.log"
LOG_MAX_BYTES = 1 << 20


def warn_once(message: str, env: Mapping[str, str] | None = None, *, suffix: str = "; running rustc directly",
              store: str | None = None) -> None:
    """Say ``kache: warning: …`` unless the same warning was said in the last 10 minutes.

    Never on rustc's stderr: cargo keeps what a unit printed and replays it on every later
    build that finds the unit fresh, so a warning said there would outlive its cause. It
    goes to the terminal (``/dev/tty``, when the build has one) and to ``kache.log`` in
    the store (``store``, else the default cache dir). cargo runs hundreds of rustc calls
    per build; a broken config should say so once per build, not once per crate. The
    memory of what was said lives in the default cache dir (the configured one may be
    what is broken).
    """
    from blake3 import blake3

    from kache.settings import default_cache_dir

    env = os.environ if env is None else env
    digest = blake3(message.encode()).hexdigest()[:24]
    default = default_cache_dir(env)
    stamp = os.path.join(default, "tmp", "warned", digest)
    if not _claim(stamp):
        return
    line = f"kache: warning: {message}{suffix}\n"
    if not (store and _log(store, line)):
        _log(default, line)
    try:
        fd = os.open("/dev/tty", os.O_WRONLY | os.O_NOCTTY)
    except OSError:
        return  # no terminal (CI, an IDE): the log has it
    try:
        os.write(fd, line.encode("utf-8", "replace"))
    except OSError:
        pass
    finally:
        os.close(fd)


def _log(directory: str, line: str) -> bool:
    """Append a line to ``<directory>/kache.log`` (kept under 1 MiB: the old half moves to
    ``kache.log.1``); False if it could not. Never raises."""
    path = os.path.join(directory, LOG_NAME)
    try:
        old = os.umask(0o077)
        try:
            os.makedirs(directory, mode=0o700, exist_ok=True)
        finally:
            os.umask(old)
        try:
            if os.stat(path).st_size > LOG_MAX_BYTES:
                os.replace(path, path + ".1")
        except FileNotFoundError:
            pass
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime())
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, f"{stamp} {line}".encode("utf-8", "replace"))
        finally:
            os.close(fd)
    except OSError:
        return False
    return True


def _claim(stamp: str) -> bool:
    """Atomically claim the right to print (parallel rustc calls race for it)."""
    for _ in range(2):
        try:
            os.close(os.open(stamp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            return True
        except FileExistsError:
            try:
                if time.time() - os.stat(stamp).st_mtime < WARN_INTERVAL_SECS:
                    return False
                os.unlink(stamp)
            except OSError:
                return False
        except OSError:
            old = os.umask(0o077)  # it may create the default cache dir: owner-only
            try:
                os.makedirs(os.path.dirname(stamp), mode=0o700, exist_ok=True)
            except OSError:
                return True  # nowhere to remember: better to warn than to stay silent
            finally:
                os.umask(old)
    return False


def run(argv: list[str]) -> int:
    """Handle one compiler call; ``argv`` is ``[compiler, *args]``."""
    started = time.monotonic()
    try:
        from kache.wrapper import argv as argvmod

        call = argvmod.parse(argv)
        reason = argvmod.passthrough_reason(call)
    except Exception:  # noqa: BLE001 - an argv kache cannot read is rustc's business
        return exec_compiler(argv)
    # cargo's probes (-vV, --print, stdin) never touch settings or the store.
    if reason in ("version", "print", "stdin", "help", "no-source", "probe", "explain"):
        return exec_compiler(argv)
    store: str | None = None
    try:
        from kache.errors import SettingsError
        from kache.settings import env_flag, load_checked

        if env_flag("KACHE_DISABLED"):
            unlink_shared_outputs_quietly(call)
            return exec_compiler(argv)
        try:
            settings = load_checked()
        except SettingsError as e:
            warn_once("invalid configuration: " + "; ".join(e.problems), store=_store_anyway())
            unlink_shared_outputs_quietly(call)
            return exec_compiler(argv)
        store = settings.converted("cache.local_store")
        if settings["cache.daemon_hits"]:
            from kache.wrapper.daemon_hit import served_by_daemon

            if served_by_daemon(argv, settings, started):
                return 0
        from kache.wrapper.main import handle

        return handle(call, argv, settings, started)
    except Exception as e:  # noqa: BLE001 - nothing in kache may break a build
        warn_once(f"internal error ({type(e).__name__}: {e})", store=store)
        unlink_shared_outputs_quietly(call)
    return exec_compiler(argv)


def _store_anyway() -> str | None:
    """The store a configuration names even when another of its settings is invalid (where
    kache.log goes), or None."""
    try:
        from kache.settings import load

        path = load().converted("cache.local_store")
    except Exception:  # noqa: BLE001 - the default cache dir takes the warning
        return None
    return path if isinstance(path, str) and os.path.isabs(path) else None


def unlink_shared_outputs_quietly(call: object) -> None:
    """Before rustc runs as if kache were absent: unlink its expected outputs that share an
    inode with a store blob (rustc may rewrite outputs in place). Never raises."""
    try:
        from kache.wrapper import argv as argvmod
        from kache.wrapper.cache import unlink_shared_outputs

        unlink_shared_outputs([os.path.abspath(p) for p in argvmod.expected_outputs(call)])  # type: ignore[arg-type]
    except Exception:  # noqa: BLE001
        pass
