"""Running this kache again: the daemon a build or ``kache daemon start`` launches, and
the daemon's re-execution of itself after an upgrade or a config change; and the path of
the ``kache`` program itself, which cargo's config and the native client name.

``<this python> -m kache`` alone is not enough: a launcher may add kache's directory
and its dependencies' at run time, inside the script — nixpkgs' Python applications
do (``site.addsitedir`` in ``.kache-wrapped``), so do pipx-style and hand-made
wrappers — and the bare interpreter then finds no ``kache``. ``PYTHONPATH`` would not
do either: it skips the ``.pth`` files of those directories (an editable install's
import hook, namespace packages). So the child runs a two-line bootstrap that does
what the launcher did: ``site.addsitedir`` on every directory this process imports
from (passed in ``_KACHE_SITE_DIRS``, removed from the environment before kache
starts), then kache's own entry point.

Standard library only: the wrapper calls this when it starts a daemon.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["command", "environ", "kache_executable", "spawn_detached", "SITE_DIRS_VARIABLE"]

SITE_DIRS_VARIABLE = "_KACHE_SITE_DIRS"

_BOOTSTRAP = (
    "import os, site, sys\n"
    f"for d in os.environ.pop({SITE_DIRS_VARIABLE!r}, '').split(os.pathsep):\n"
    "    d and site.addsitedir(d)\n"
    "from kache.__main__ import main\n"
    "sys.argv[0] = 'kache'\n"
    "sys.exit(main())\n"
)


def command(*args: str) -> list[str]:
    """The argv that runs ``kache ARGS`` with this interpreter; its environment must
    come from :func:`environ`."""
    return [sys.executable, "-c", _BOOTSTRAP, *args]


def environ(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """``env`` (default: this process's) plus the directories this process imports from."""
    out = dict(os.environ if env is None else env)
    out[SITE_DIRS_VARIABLE] = os.pathsep.join(dict.fromkeys(p for p in sys.path if p and os.path.isabs(p)))
    return out


def spawn_detached(args: list[str], env: Mapping[str, str] | None = None) -> bool:
    """Run ``kache ARGS`` with this interpreter and import path, detached (new session, no
    inherited descriptors, cwd ``/``, no output), not waiting for it. True when the
    process was launched."""
    import subprocess

    try:
        subprocess.Popen(command(*args), env=environ(env), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, close_fds=True, start_new_session=True, cwd="/")
    except OSError:
        return False
    return True


def kache_executable() -> str:
    """The path of the ``kache`` program running now (what ``RUSTC_WRAPPER`` should name):
    ``argv[0]`` when it is kache, else the ``kache`` beside this interpreter, else the one
    on ``PATH``. Raises :class:`~kache.errors.ProgramNotFound` when there is none."""
    argv0 = sys.argv[0] if sys.argv else ""
    if os.path.basename(argv0).startswith("kache") and os.path.isfile(argv0):
        return os.path.abspath(argv0)
    beside = os.path.join(os.path.dirname(sys.executable), "kache") if sys.executable else ""
    if beside and os.path.isfile(beside):
        return beside
    import shutil

    found = shutil.which("kache")
    if found is None:
        from kache.errors import ProgramNotFound

        raise ProgramNotFound("cannot find the `kache` program on PATH; install kache first")
    return found
