"""A miss: run the real rustc, then store what it wrote.

:class:`KeyLock` lets one compile per cheap key run at a time (a twin waits, then takes
the twin's entry); :func:`run_compiler` runs rustc with cargo's file descriptors,
passing its output on as it comes; :func:`record` reads the ``.d``, hashes inputs and
outputs, puts the blobs and adds the entry and its manifest line.

Nothing here may fail a build: errors before rustc runs end in running rustc plainly;
errors after it ran are reported and rustc's own exit status is returned.
"""

from __future__ import annotations

import fcntl
import os
import sys
import time

TYPE_CHECKING = False  # typing costs ~11 ms to import; annotations are strings here

from kache import quickjson
from kache.engine import argv as argvmod
from kache.engine import depinfo
from kache.engine.call import OUT_DIR_TOKEN
from kache.engine.incremental import snapshot_incremental
from kache.engine.key import KEY_VERSION, env_only_locates_files, full_key
from kache.engine.portable import Scanner
from kache.engine.restore import is_private_output, may_share
from kache.paths import find_target_dir
from kache.store import layout
from kache.store.blobs import BLOB_MODE, EXEC_BLOB_MODE
from kache.store.store import Entry

if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from kache.engine.call import PreparedCall
    from kache.store.store import Store

__all__ = ["KeyLock", "run_compiler", "compiler_command", "record"]

# How long a second identical compile waits for the first before compiling itself.
LOCK_WAIT_SECS = 600.0


class KeyLock:
    """An flock on ``locks/<mkey>``: one compile per cheap key at a time, per store.

    The kernel drops the lock when its holder dies, so there are no stale locks.
    """

    def __init__(self, store: Store, mkey: str) -> None:
        self.path = layout.lock_path(store.root, mkey[:32])
        self.fd: int | None = None
        self.waited = False

    def acquire(self, timeout: float = LOCK_WAIT_SECS) -> bool:
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        deadline = time.monotonic() + timeout
        delay = 0.01
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                self.waited = True
                if time.monotonic() > deadline:
                    return False
                time.sleep(delay)
                delay = min(delay * 2, 0.2)

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def run_compiler(cmd: list[str], show_stderr: Callable[[str], str] | None = None) -> tuple[int, str, str]:
    """Run rustc with inherited fds (cargo's jobserver), its stdout and stderr passed on
    as they come and kept for the cache; ``show_stderr`` rewrites each whole line of
    stderr before it is passed on (what is kept is what rustc wrote).

    ``posix_spawn`` and ``poll``, not ``subprocess`` and a thread (~9 ms of imports on
    every miss). Returns (exit status, stdout text, stderr text).
    """
    import _signal  # type: ignore[import-not-found]  # `signal` imports enum
    import select

    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    try:
        # the signals Python ignores go back to their defaults, as subprocess does them
        pid = os.posix_spawnp(cmd[0], cmd, os.environ, file_actions=[
            (os.POSIX_SPAWN_DUP2, out_w, 1), (os.POSIX_SPAWN_DUP2, err_w, 2)],
            setsigdef=(_signal.SIGPIPE, _signal.SIGXFSZ))
    finally:
        os.close(out_w)
        os.close(err_w)
    chunks: dict[int, list[bytes]] = {out_r: [], err_r: []}
    sinks = {out_r: sys.stdout.buffer, err_r: sys.stderr.buffer}
    partial = b""  # stderr after its last newline, held back until the line is whole
    poller = select.poll()
    for fd in chunks:
        poller.register(fd, select.POLLIN)
    open_fds = len(chunks)
    try:
        while open_fds:
            for fd, _event in poller.poll():
                data = os.read(fd, 65536)
                if not data:
                    poller.unregister(fd)
                    open_fds -= 1
                    if fd == err_r and partial:
                        sinks[fd].write(_shown(partial, show_stderr))
                        sinks[fd].flush()
                    continue
                chunks[fd].append(data)
                if fd == err_r and show_stderr is not None:
                    data = partial + data
                    cut = data.rfind(b"\n") + 1
                    partial = data[cut:]
                    data = _shown(data[:cut], show_stderr)
                    if not data:
                        continue
                sinks[fd].write(data)
                sinks[fd].flush()
    finally:
        os.close(out_r)
        os.close(err_r)
    _, status = os.waitpid(pid, 0)
    return (os.waitstatus_to_exitcode(status), b"".join(chunks[out_r]).decode("utf-8", "surrogateescape"),
            b"".join(chunks[err_r]).decode("utf-8", "surrogateescape"))


def _shown(data: bytes, show: Callable[[str], str] | None) -> bytes:
    if show is None or not data:
        return data
    return show(data.decode("utf-8", "surrogateescape")).encode("utf-8", "surrogateescape")


def compiler_command(c: PreparedCall) -> list[str]:
    """The real compile: kache's remap flags, then cargo's arguments (rustc applies the
    last matching remap, so the user's own ``--remap-path-prefix`` wins); ``-C
    incremental`` kept or dropped as ``cache.incremental`` says (it is never part of
    the key: outputs of an incremental compile are as valid as any, only not
    byte-identical)."""
    rc = c.rustc
    args = rc.args if c.keep_incremental else argvmod.without_incremental(rc.args)
    return [rc.compiler, *rc.compiler_args_prefix, *c.norm.remap_flags(), *args]


def record(c: PreparedCall, started_ns: int, stdout: str, stderr: str, compile_ms: int) -> tuple[str, int]:
    """Store the outputs of a successful compile. Returns (outcome, bytes), where the
    outcome is ``miss`` (new data), ``dup`` (every blob was there) or ``skip:<why>``.
    """
    rc = c.rustc
    dfile = next((p for p in c.outputs if p.endswith(".d")), None)
    if dfile is None or "dep-info" not in rc.emit:
        return "skip:no-dep-info", 0
    with open(dfile, encoding="utf-8") as fh:
        info = depinfo.parse(fh.read())
    outputs = {os.path.normpath(p) for p in c.outputs}
    inputs = []
    for p in info.files:
        # As rustc opened it: relative to the directory it ran in, and `..` after a
        # symlink left to the kernel (src/linked/../data.txt is not src/data.txt).
        path = os.path.join(c.cwd, p)
        if os.path.normpath(path) not in outputs:
            inputs.append(path)
    hashes = c.hasher.hashes(inputs)
    for p in inputs:
        if hashes[p] is None:
            return "skip:input-missing", 0
        # ctime: every write moves it, and unlike mtime nobody can set it to the future.
        if os.stat(p).st_ctime_ns >= started_ns:
            return "skip:input-changed-during-compile", 0
    files = [(c.norm.path(p), hashes[p] or "") for p in inputs]
    target_dir = find_target_dir(c.out_dir)
    env_entries: list[tuple[str, str | None, bool]] = []
    for name, value in info.env:
        normalized = False
        keyed = value
        if value is not None and os.path.isabs(value):
            n = c.norm.path(value)
            if n != value and env_only_locates_files(name, inputs):
                normalized, keyed = True, n
        env_entries.append((name, keyed, normalized))

    # Outputs: what rustc said it would write, plus anything else with the crate's stem.
    produced = [p for p in c.outputs if os.path.exists(p)]
    if len(produced) != len(c.outputs):
        return "skip:output-missing", 0
    stored = []
    new_blobs = 0
    total = 0
    scanner = Scanner(c.norm)
    umask = c.build_umask()
    for p in produced:
        name = os.path.basename(p)
        if p == dfile:
            # Absolute paths with this machine's prefixes as placeholders; relative ones
            # (relative to where rustc runs) as they are, `..` and all.
            norm_info = depinfo.map_paths(info, lambda q: c.norm.path(q) if os.path.isabs(q) else q)
            # env-dep values are rewritten from the build's environment on restore; stored
            # with this machine's paths normalised, one key gives one .d blob everywhere.
            norm_info.env = [(n, c.norm.path(v) if v is not None and os.path.isabs(v) else v)
                             for n, v in norm_info.env]
            data = depinfo.render(norm_info).encode("utf-8")
            digest, added = c.store.put_blob_bytes(data)
            size = len(data)
            kind = "depinfo"
        else:
            digest, size = scanner.hash_file(p)
            st = os.stat(p)
            kind = "exec" if (st.st_mode & 0o111 or name.endswith((".so", ".dylib", ".dll"))) else "link"
            executable = kind == "exec"
            # Linked, rustc's output takes the blob's mode: only where the umask allows it.
            link = not is_private_output(c, kind) and may_share(EXEC_BLOB_MODE if executable else BLOB_MODE,
                                                                executable, umask)
            added = c.store.put_blob_file(p, digest, link=link, executable=executable)
            c.hasher.remember(p, digest)
        new_blobs += added
        total += size
        stored.append({"name": name, "hash": digest, "size": size, "kind": kind})
    out_dir_text = quickjson.quote(c.out_dir)[1:-1]
    stdout, stderr = stdout.replace(out_dir_text, OUT_DIR_TOKEN), stderr.replace(out_dir_text, OUT_DIR_TOKEN)
    for text in (stdout, stderr):  # replayed messages are outputs too
        scanner.search(text.encode("utf-8", "surrogateescape"))
    # An output that holds a path of this machine pins the entry to it (kache.engine.portable).
    local = [(sentinel, c.norm.spellings(sentinel)) for sentinel in sorted(scanner.found)]
    key, source_components = full_key(c.mkey, files, [(n, v) for n, v, _ in env_entries], local)
    meta = {
        "files": stored,
        "stdout": stdout,
        "stderr": stderr,
        "emit": sorted(rc.emit),
        "args": c.key_args,  # why-miss names the flags that differ
        "components": {**c.components, **{k: v for k, v in source_components.items() if k != "mkey"}},
        "target_dir": bool(target_dir),
    }
    if c.package:
        meta["package"] = c.package  # display only (build scripts are shown by it); not keyed
    now = time.time()
    codegen = dict(x.partition("=")[::2] for x in rc.codegen)
    profile = "dev" if codegen.get("opt-level", "0") == "0" else "release"
    if c.keep_incremental and c.snapshots:
        snapshot = snapshot_incremental(c, started_ns)
        if snapshot is not None:
            meta["incremental"] = snapshot
    entry = Entry(key=key, crate_name=c.crate, crate_types=",".join(argvmod.effective_crate_types(rc)),
                  target=rc.target or "", profile=profile, size=total, created=now, last_used=now, hits=0,
                  compile_ms=compile_ms, key_version=KEY_VERSION, mkey=c.mkey, meta=meta)
    line: dict[str, Any] = {"files": files, "env": env_entries}
    if local:
        line["local"] = local
    c.store.add(entry, line)
    c.stored_key = key
    return ("miss" if new_blobs else "dup"), total

