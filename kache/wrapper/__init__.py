"""Wrapper mode: what runs for every rustc call cargo makes.

``run(argv)`` never lets kache break a build: any problem with kache itself, its
settings or its store ends in running the real compiler exactly as cargo asked, after
at most one warning line on stderr.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from collections.abc import Mapping

__all__ = ["run", "exec_compiler", "warn_once"]

# Calls that never touch settings or the store: cargo's and build scripts' probes.
_PROBE_FLAGS = frozenset({"-vV", "-V", "--version", "-v"})

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


def warn_once(message: str, env: Mapping[str, str] | None = None) -> None:
    """Print ``kache: warning: …`` unless the same warning was printed in the last 10 minutes.

    cargo runs hundreds of rustc calls per build; a broken config should say so once per
    build, not once per crate. The memory of what was said lives in the default cache dir
    (the configured one may be what is broken).
    """
    from kache.settings import default_cache_dir

    env = os.environ if env is None else env
    digest = hashlib.sha256(message.encode()).hexdigest()[:24]
    stamp = os.path.join(default_cache_dir(env), "tmp", "warned", digest)
    try:
        if time.time() - os.stat(stamp).st_mtime < WARN_INTERVAL_SECS:
            return
    except OSError:
        pass
    sys.stderr.write(f"kache: warning: {message}; running rustc directly\n")
    try:
        os.makedirs(os.path.dirname(stamp), mode=0o700, exist_ok=True)
        with open(stamp, "w"):
            pass
    except OSError:
        pass


def run(argv: list[str]) -> int:
    """Handle one compiler call; ``argv`` is ``[compiler, *args]``."""
    if len(argv) > 1 and (argv[1] in _PROBE_FLAGS or "-" in argv[1:]):
        return exec_compiler(argv)
    try:
        from kache.errors import SettingsError
        from kache.settings import env_flag, load_checked

        if env_flag("KACHE_DISABLED"):
            return exec_compiler(argv)
        try:
            load_checked()
        except SettingsError as e:
            warn_once("invalid configuration: " + "; ".join(e.problems))
            return exec_compiler(argv)
    except Exception as e:  # noqa: BLE001 - nothing in kache may break a build
        warn_once(f"internal error ({type(e).__name__}: {e})")
    return exec_compiler(argv)
