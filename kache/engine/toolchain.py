"""The identity of the compiler chain, memoised: probing it costs 20–40 ms, a memo lookup ~0.1 ms.

The chain is every program between cargo and the compile: the compiler cargo named
(``RUSTC``: rustc itself, a script around it, a rustup proxy) and, before it, a
workspace wrapper (``clippy-driver``, ``sccache``, any program). Each is identified by
its content (blake3), so an edited ``RUSTC`` script is another toolchain even when
``-vV`` prints the same; the chain as a whole by what ``<chain> -vV`` prints (the
commit of the rustc it ends in) and by its sysroot's target libraries (names and
sizes, from ``<chain> --print sysroot``), so a re-installed std changes it too.

The memo is keyed on each program's resolved path, device, inode, size, mtime and
ctime, and on what decides which toolchain a program picks that its file does not
show: ``RUSTUP_TOOLCHAIN`` and ``RUSTUP_HOME``; ``PATH`` when a program is not rustc or
clippy-driver itself (a script finds ``rustc`` there); for a rustup proxy, rustup's
settings file and the ``rust-toolchain`` file that applies to the working directory. No
memo is written for a program changed in the last two seconds (a second write within
the filesystem's timestamp granularity would not move its stat).

What a script reads besides its own text (a variable, a file) is not seen: declare it
in ``cache.extra_inputs`` or ``KACHE_RECACHE=1`` once.
"""

from __future__ import annotations

import os
import time

TYPE_CHECKING = False  # typing costs ~11 ms to import; annotations are strings here

from blake3 import blake3

from kache.errors import KacheError
from kache.paths import which
from kache.store.store import Store

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["identity", "ToolchainError", "MIN_AGE_SECS"]

MIN_AGE_SECS = 2.0
_PROBE_TIMEOUT_SECS = 60.0
_OWN_NAMES = ("rustc", "clippy-driver")


class ToolchainError(KacheError):
    """The compiler chain cannot be identified (a program is missing, a probe failed)."""


def _resolve(program: str, env: Mapping[str, str], cwd: str) -> str:
    """The file a program name runs, as ``execvp`` finds it (symlinks kept)."""
    if os.sep in program:
        return os.path.join(cwd, program)
    found = which(program, env.get("PATH", os.defpath), cwd)
    if found is None:
        raise ToolchainError(f"{program}: not found on PATH")
    return found


def _stat_id(path: str, real: str, now_ns: int) -> tuple[str, bool]:
    """(stat text of the file a path ends in, whether it is old enough to memoise)."""
    st = os.stat(real)
    fresh = now_ns - max(st.st_mtime_ns, st.st_ctime_ns) < MIN_AGE_SECS * 1e9
    return f"{path}\0{real}\0{st.st_dev}\0{st.st_ino}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ctime_ns}", not fresh


def _rustup_state(env: Mapping[str, str], cwd: str) -> str:
    """What a rustup proxy reads to pick a toolchain: its settings file (default and
    directory overrides) and the nearest ``rust-toolchain(.toml)`` above ``cwd``."""
    home = env.get("RUSTUP_HOME") or os.path.join(env.get("HOME") or os.path.expanduser("~"), ".rustup")
    settings = os.path.join(home, "settings.toml")
    try:
        st = os.stat(settings)
        parts = [f"{settings}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}"]
    except OSError:
        parts = [f"{settings}:-"]
    d = cwd
    while True:
        found = False
        for name in ("rust-toolchain", "rust-toolchain.toml"):
            path = os.path.join(d, name)
            try:
                st = os.stat(path)
            except OSError:
                continue
            parts.append(f"{path}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}")
            found = True
            break
        parent = os.path.dirname(d)
        if found or parent == d:
            break
        d = parent
    return "\0".join(parts)


def _sysroot_digest(sysroot: str) -> str:
    """Names and sizes of the target libraries of a sysroot."""
    rustlib = os.path.join(sysroot, "lib", "rustlib")
    h = blake3()
    try:
        targets = sorted(os.listdir(rustlib))
    except OSError:
        return "no-sysroot"
    for t in targets:
        lib = os.path.join(rustlib, t, "lib")
        try:
            names = sorted(os.listdir(lib))
        except OSError:
            continue
        for name in names:
            try:
                size = os.stat(os.path.join(lib, name)).st_size
            except OSError:
                continue
            h.update(f"{t}/{name}:{size}\n".encode())
    return h.hexdigest()


def _probe(chain: list[str], env: Mapping[str, str], cwd: str, *args: str) -> str:
    import subprocess

    try:
        out = subprocess.run([*chain, *args], capture_output=True, text=True, env=dict(env), cwd=cwd,
                             timeout=_PROBE_TIMEOUT_SECS, check=False)
    except (OSError, subprocess.SubprocessError) as e:
        raise ToolchainError(f"{' '.join(chain)} {' '.join(args)}: {e}") from e
    if out.returncode != 0:
        raise ToolchainError(f"{' '.join(chain)} {' '.join(args)} exited with {out.returncode}")
    return out.stdout


def identity(store: Store, chain: list[str], env: Mapping[str, str], cwd: str | None = None) -> str:
    """Text that names the compiler chain exactly.

    ``chain`` is the compiler plus what comes before rustc's own arguments:
    ``[rustc]``, ``[clippy-driver, rustc]``, ``[sccache, rustc]``, ``[script]``.
    Raises ToolchainError when a program is missing or the chain cannot be probed.
    """
    cwd = os.getcwd() if cwd is None else cwd
    now_ns = time.time_ns()
    paths = [_resolve(p, env, cwd) for p in chain]
    reals = [os.path.realpath(p) for p in paths]
    ids = []
    memoise = True
    try:
        for path, real in zip(paths, reals, strict=True):
            text, old = _stat_id(path, real, now_ns)
            ids.append(text)
            memoise = memoise and old
    except OSError as e:
        raise ToolchainError(f"{e.filename}: {e.strerror}") from e
    selectors = [f"{k}={env[k]}" for k in ("RUSTUP_TOOLCHAIN", "RUSTUP_HOME") if k in env]
    if any(not os.path.basename(p).startswith(_OWN_NAMES) for p in paths):
        selectors.append("PATH=" + env.get("PATH", ""))
    # rustup's proxies are links to rustup itself, which picks the toolchain at run time
    if any(os.path.basename(r).startswith("rustup") for r in reals) and "RUSTUP_TOOLCHAIN" not in env:
        selectors.append(_rustup_state(env, cwd))
    memo_id = "chain\0" + "\0\0".join(ids) + "\0\0" + "\0".join(selectors)
    # A memo for a stat that a fresh file has now cannot exist: it is written only for old files.
    value = store.tool_memo(memo_id)
    if value is None:
        parts = []
        for path in paths:
            try:
                with open(path, "rb") as f:
                    digest = blake3(f.read()).hexdigest()
            except OSError as e:
                raise ToolchainError(f"{path}: {e.strerror}") from e
            parts.append(f"program:{os.path.basename(path)}:{digest}")
        # Run as cargo runs it: a rustup proxy picks its toolchain by the name it is called by.
        version = _probe(paths, env, cwd, "-vV")
        sysroot = _probe(paths, env, cwd, "--print", "sysroot").strip()
        value = "\n".join(parts) + "\n" + version + "\0sysroot:" + _sysroot_digest(sysroot)
        if memoise:
            store.set_tool_memo(memo_id, value)
    return value
