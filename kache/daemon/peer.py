"""What the daemon may do for the process at the other end of its sockets (Linux, /proc).

The daemon restores a hit into the paths a client names, and its runner compiles a
client's call: both only for a client that sees the files the daemon sees (the same
mount namespace and root directory, the working directory it names), and the runner only
for one that runs with what the runner's children would run with (privileges,
sandboxing): a call must not compile other files than the client's, nor escape the
restrictions its build runs under.
"""

from __future__ import annotations

import os
import socket
import struct

__all__ = ["credentials", "peer_pid", "elsewhere", "unlike"]

_PRIVILEGES = (b"Groups:", b"NoNewPrivs:", b"Seccomp:", b"CapInh:", b"CapPrm:", b"CapEff:", b"CapBnd:", b"CapAmb:")
"""The lines of /proc/<pid>/status a compile's rights depend on."""


def credentials(conn: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of the process at the other end of a Unix socket (``SO_PEERCRED``).
    Raises ``OSError``, or ``AttributeError`` where there is no ``SO_PEERCRED``."""
    pid, uid, gid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                        struct.calcsize("3i")))
    return pid, uid, gid


def peer_pid(conn: socket.socket) -> int | None:
    """The pid of the process at the other end of a Unix socket (None: not known)."""
    try:
        pid, _, _ = credentials(conn)
    except (OSError, AttributeError, struct.error):
        return None
    return pid if pid > 0 else None


def elsewhere(pid: int, cwd: str | None = None) -> str | None:
    """Why process ``pid`` does not see the files this process sees (another mount
    namespace or root directory: a container, a chroot; with ``cwd``, a working directory
    that is not ``cwd``), or None."""
    try:
        for link in ("ns/mnt", "root"):
            theirs, ours = os.stat(f"/proc/{pid}/{link}"), os.stat(f"/proc/self/{link}")
            if (theirs.st_dev, theirs.st_ino) != (ours.st_dev, ours.st_ino):
                return "another mount namespace" if link == "ns/mnt" else "another root directory"
        if cwd is None:
            return None
        theirs, ours = os.stat(f"/proc/{pid}/cwd"), os.stat(cwd)
    except OSError:
        return "cannot see the client"
    if (theirs.st_dev, theirs.st_ino) != (ours.st_dev, ours.st_ino):
        return "another working directory"
    return None


_NAMESPACES = ("cgroup", "ipc", "mnt", "net", "pid", "time", "user", "uts")
"""The namespaces a compile runs in (/proc/<pid>/ns; those this kernel lacks are skipped)."""


def unlike(pid: int) -> str | None:
    """Why a child of this process would not run as process ``pid`` runs: in other
    namespaces (a network or hostname sandbox, a container), or with other rights
    (groups, no_new_privs, seccomp, capabilities, personality); None when alike."""
    for ns in _NAMESPACES:
        try:
            own = os.stat(f"/proc/self/ns/{ns}")
        except OSError:
            continue  # not on this kernel
        try:
            other = os.stat(f"/proc/{pid}/ns/{ns}")
        except OSError:
            return "cannot see the client"
        if (other.st_dev, other.st_ino) != (own.st_dev, own.st_ino):
            return f"another {ns} namespace"
    try:
        theirs, ours = _rights(f"/proc/{pid}"), _rights("/proc/self")
    except OSError:
        return "cannot see the client"
    for name, value in theirs.items():
        if ours.get(name) != value:
            return f"other rights ({name.decode().rstrip(':')})"
    return None


def _rights(proc: str) -> dict[bytes, bytes]:
    with open(f"{proc}/status", "rb") as f:
        status = f.read()
    out = {}
    for line in status.splitlines():
        name, _, value = line.partition(b"\t")
        if name in _PRIVILEGES:
            out[name] = value.strip()
    with open(f"{proc}/personality", "rb") as f:
        out[b"personality"] = f.read().strip()
    return out
