"""The compiler's identity, memoised: ``rustc -vV`` costs 10–20 ms, a memo lookup ~0.1 ms.

The memo is keyed on more than the path: the binary's resolved path, device, inode,
size and mtime, and the rustup selectors (``RUSTUP_TOOLCHAIN``), since a rustup proxy
keeps its path across toolchains. The identity also covers the sysroot's target
libraries (names and sizes), so a re-installed std changes it.
"""

from __future__ import annotations

import os
TYPE_CHECKING = False  # typing costs ~11 ms to import; annotations are strings here

from blake3 import blake3

from kache.store.index import Store

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["identity"]


def _stat_id(path: str) -> str:
    st = os.stat(path)
    return f"{path}\0{st.st_dev}\0{st.st_ino}\0{st.st_size}\0{st.st_mtime_ns}"


def _resolve(compiler: str, env: Mapping[str, str]) -> str:
    if os.sep in compiler:
        return os.path.realpath(compiler)
    for d in env.get("PATH", os.defpath).split(os.pathsep):
        candidate = os.path.join(d, compiler)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return os.path.realpath(candidate)
    raise FileNotFoundError(compiler)


def _sysroot_digest(rustc_path: str) -> str:
    """Names and sizes of the target libraries next to a toolchain's rustc."""
    sysroot = os.path.dirname(os.path.dirname(rustc_path))
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


def identity(store: Store, compiler_argv: list[str], env: Mapping[str, str]) -> str:
    """Text that names the toolchain (and, under clippy, the driver) exactly.

    ``compiler_argv`` is the compiler plus its prefix: ``[rustc]`` or
    ``[clippy-driver, rustc]``.
    """
    parts = []
    selectors = "\0".join(f"{k}={env[k]}" for k in ("RUSTUP_TOOLCHAIN", "RUSTUP_HOME") if k in env)
    for exe in compiler_argv:
        path = _resolve(exe, env)
        memo_id = "vV\0" + _stat_id(path) + "\0" + selectors
        value = store.tool_memo(memo_id)
        if value is None:
            import subprocess

            out = subprocess.run([path, "-vV"], capture_output=True, text=True, env=dict(env), check=True)
            value = out.stdout + "\0sysroot:" + _sysroot_digest(path)
            store.set_tool_memo(memo_id, value)
        parts.append(value)
    return "\n".join(parts)
