"""The native thin client (``client.rs``): built on the user's machine with their rustc.

A hit the daemon serves costs it ~3 ms; what is left of such a hit is the wrapper
process, and a Python one spends ~20-25 ms starting. ``client.rs`` is a small program
(the Rust standard library only) that sends the call to the daemon and prints the
reply. A call the daemon does not serve goes, on Linux and when the daemon offers it, to
the daemon's runner (:mod:`kache.daemon.runner`), with the client's descriptors; else the
client runs the ``kache`` it was built for. Every kache user has a rustc, so kache builds
it there (``kache daemon client``) instead of shipping a binary per platform.

What it needs is compiled in (``env!``): the path of the ``kache`` to fall back to and
the variables of ``cache.daemon_hits`` and ``cache.local_store`` (from the schema). It
finds the daemon's socket at run time from the same layers kache reads (the variable,
the user's file, the system file, the default), so one client serves every user and
store (a package builds it once). The daemon checks every request against the caller's
own settings, so a socket found wrongly is never wrong, only slower (it falls back).

The protocol's constants come from ``wire.rs`` beside it (``mod wire;``), which ``kache dev
gen`` writes from :mod:`kache.daemon.wire`; both files are package data.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass

from kache.daemon.wire import SUN_PATH_MAX
from kache.errors import KacheError

__all__ = ["SOURCE_NAME", "OUTPUT_NAME", "INFO_FLAG", "ClientBuild", "BuildError", "build_client", "client_info",
           "default_output", "rustc_named"]

SOURCE_NAME = "client.rs"
OUTPUT_NAME = "kache-client"
INFO_FLAG = "--kache-client-info"
"""The client's one option: print what it was built with, as JSON."""


def client_info(path: str) -> dict[str, str] | None:
    """What the native client at ``path`` says of itself: the ``kache`` it was built for,
    the ``socket`` it would ask in this process's environment, ``hits_variable``; None
    when it is not one or cannot say."""
    import json

    try:
        out = subprocess.run([path, INFO_FLAG], capture_output=True, timeout=5, check=False, stdin=subprocess.DEVNULL)
        info = json.loads(out.stdout) if out.returncode == 0 else None
    except (OSError, subprocess.TimeoutExpired, ValueError):
        return None
    if not isinstance(info, dict) or not all(isinstance(info.get(k), str) for k in ("kache", "socket")):
        return None
    return info


class BuildError(KacheError):
    """The client could not be built; the text says why and what to do."""


@dataclass(frozen=True)
class ClientBuild:
    path: str
    kache: str
    socket: str
    rustc: str
    bytes: int
    seconds: float

    def to_json(self) -> dict[str, object]:
        return {"path": self.path, "kache": self.kache, "socket": self.socket, "rustc": self.rustc,
                "bytes": self.bytes, "seconds": round(self.seconds, 3)}


def default_output(kache: str) -> str:
    """Beside the ``kache`` it falls back to (a venv's ``bin``): installed and removed with it."""
    return os.path.join(os.path.dirname(os.path.abspath(kache)), OUTPUT_NAME)


def rustc_named(rustc: str | None = None, env: Mapping[str, str] | None = None) -> tuple[str, str | None]:
    """The rustc to build the client with: (what was asked for, its path or None when it
    is not found). ``rustc``, else ``$RUSTC``, else ``rustc``, looked up on ``env``'s PATH."""
    env = os.environ if env is None else env
    compiler = rustc or env.get("RUSTC") or "rustc"
    return compiler, shutil.which(compiler, path=env.get("PATH"))


def build_client(output: str, kache: str, socket: str, rustc: str | None = None) -> ClientBuild:
    """Compile ``client.rs`` into ``output`` (replaced atomically) with ``rustc``
    (:func:`rustc_named`), for the ``kache`` it hands what the daemon does not serve to.
    ``socket`` is the daemon's socket for the settings in effect now (checked to fit in a
    Unix address; the client finds it again at run time)."""
    from kache.settings import setting

    hits_variable = setting("cache.daemon_hits").env
    store_variable = setting("cache.local_store").env
    assert hits_variable and store_variable, "cache.daemon_hits and cache.local_store have variables in the schema"
    kache = os.path.abspath(kache)
    socket = os.path.abspath(socket)
    output = os.path.abspath(output)
    if not (os.path.isfile(kache) and os.access(kache, os.X_OK)):
        raise BuildError(f"cannot build the client: {kache} is not an executable kache to fall back to")
    if len(os.fsencode(socket)) > SUN_PATH_MAX:
        raise BuildError(f"cannot build the client: the daemon's socket path {socket} is longer than a Unix "
                         f"socket address allows ({SUN_PATH_MAX} bytes); set cache.local_store to a "
                         "shorter directory")
    compiler, found = rustc_named(rustc)
    if found is None:
        raise BuildError(f"cannot build the client: no rustc at {compiler!r}; install Rust or pass --rustc")
    directory = os.path.dirname(output)
    if not os.path.isdir(directory):
        raise BuildError(f"cannot build the client: {directory} does not exist; create it or pass another --output")
    if not os.access(directory, os.W_OK):
        raise BuildError(f"cannot build the client: {directory} is not writable; pass --output")
    source = os.path.join(os.path.dirname(__file__), SOURCE_NAME)
    tmp = f"{output}.{os.getpid()}.tmp"
    env = {**os.environ, "KACHE_CLIENT_KACHE": kache, "KACHE_CLIENT_HITS_VARIABLE": hits_variable,
           "KACHE_CLIENT_STORE_VARIABLE": store_variable}
    command = [found, "--edition", "2021", "--crate-name", "kache_client", "--crate-type", "bin",
               "-C", "opt-level=2", "-C", "strip=symbols", "-C", "debuginfo=0", "-o", tmp, source]
    started = time.monotonic()
    try:
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise BuildError(f"cannot build the client: {found} failed (exit {done.returncode}):\n"
                             + done.stderr.strip())
        os.replace(tmp, output)
    except OSError as e:
        raise BuildError(f"cannot build the client: {e}") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return ClientBuild(output, kache, socket, found, os.path.getsize(output), time.monotonic() - started)
