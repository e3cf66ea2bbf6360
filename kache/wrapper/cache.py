"""One cacheable rustc call: look up, restore on a hit, compile and record on a miss.

The order of a call::

    parse argv ─ not cacheable ─────────────────────────────► exec rustc (passthrough)
        │
    cheap key (args, toolchain, externs, env) ─► manifest ─► inputs still match? ─► restore, replay
        │ no match                                                                    (local_hit)
    lock the cheap key (a twin compile waits here, then finds the twin's entry)
        │
    run rustc (paths remapped; incremental as cache.incremental says), streaming stderr
        │ exit 0
    read the .d, hash inputs and outputs, put blobs, add entry + manifest line (miss / dup)

Nothing here may fail a build: errors before rustc runs end in running rustc plainly;
errors after it ran are reported and rustc's own exit status is returned.
"""

from __future__ import annotations

import fcntl
import os
from stat import S_IMODE as stat_mode
import sys
import time
TYPE_CHECKING = False  # typing costs ~11 ms to import; annotations are strings here

from kache import quickjson
from kache._record import Record
from kache.paths import Normalizer, find_target_dir, resolve
from kache.store import events
from kache.store.blobs import copy_file, hash_file
from kache.store.integrity import DamagedBlob
from kache.store.store import Entry, Store
from kache.wrapper import argv as argvmod
from kache.wrapper import depinfo
from kache.wrapper.envpolicy import key_env
from kache.wrapper.filehash import FileHasher, ThinArchiveError
from kache.wrapper.key import KEY_VERSION, KeyBuilder, env_only_locates_files, full_key
from kache.wrapper.nativelibs import link_inputs, native_inputs
from kache.wrapper.portable import Scanner
from kache.wrapper.toolchain import ToolchainError, identity

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from typing import Any

__all__ = ["Call", "prepare", "look_up", "restore", "record", "run_compiler", "OUT_DIR_TOKEN"]

# Stands for this build's --out-dir in stored stdout/stderr (artifact notifications).
OUT_DIR_TOKEN = "${KACHE_OUT_DIR}"
# How long a second identical compile waits for the first before compiling itself.
LOCK_WAIT_SECS = 600.0


class Call(Record):
    """Everything known about one cacheable call before compiling.

    ``outputs`` are the absolute paths rustc will write (all in out_dir); ``root`` is
    the workspace root, for events and reports.
    """

    __slots__ = ("call", "argv", "env", "cwd", "store", "norm", "hasher", "mkey", "components", "outputs", "root",
                 "stored_key", "keep_incremental", "snapshots", "umask", "missing_inputs")
    _defaults = {"mkey": "", "components": dict, "outputs": list, "root": "", "stored_key": "",
                 "keep_incremental": False, "snapshots": False, "umask": None, "missing_inputs": list}
    call: argvmod.RustcCall
    argv: list[str]
    env: Mapping[str, str]
    cwd: str
    store: Store
    norm: Normalizer
    hasher: FileHasher
    mkey: str
    components: dict[str, str]
    outputs: list[str]
    root: str
    stored_key: str
    keep_incremental: bool  # this compile runs with cargo's -C incremental
    snapshots: bool  # its incremental session is stored with the entry and restored on a hit
    umask: int | None  # the caller's, when it is not this process's (a hit the daemon serves)
    missing_inputs: list[str]  # declared extra input files that are not there (worth a warning)

    @property
    def out_dir(self) -> str:
        return os.path.join(self.cwd, self.call.out_dir or "")

    @property
    def crate(self) -> str:
        return self.call.crate_name or "?"

    def event(self, outcome: str, started: float, **fields: Any) -> None:
        ev = {"t": round(time.time(), 3), "crate": self.crate, "outcome": outcome,
              "ms": round((time.monotonic() - started) * 1000, 1), "root": self.root}
        ev.update({k: v for k, v in fields.items() if v is not None})
        try:
            events.append(self.store.root, ev)
        except OSError:
            pass


def _crate_key(name: str) -> str:
    return name.replace("-", "_")


def _extra_inputs(settings_extra: Mapping[str, Any], crate: str) -> list[tuple[list[str], list[str]]]:
    out = []
    for name, spec in settings_extra.items():
        if name == "*" or _crate_key(name) == _crate_key(crate):
            if isinstance(spec, dict):
                out.append((list(spec.get("env", [])), list(spec.get("files", []))))
    return out


def prepare(rc: argvmod.RustcCall, argv: list[str], store: Store, env: Mapping[str, str],
            extra_inputs: Mapping[str, Any], salt: str, cwd: str | None = None) -> Call:
    """Compute the cheap key of a cacheable call (made in ``cwd``, default this process's)."""
    for arg in rc.args:
        # A NUL or an undecodable byte cannot be a path SQLite or the kernel takes: rustc decides.
        if "\0" in arg or not arg.isascii() and not events.utf8_encodable(arg):
            raise Uncacheable("unusual-argument")
    cwd = os.getcwd() if cwd is None else cwd
    raw_out_dir = os.path.join(cwd, rc.out_dir or "")
    out_dir = resolve(raw_out_dir)
    target_dir = find_target_dir(out_dir)
    norm = Normalizer.for_call(cwd, raw_out_dir, env, rc.src)
    c = Call(rc, argv, env, cwd, store, norm, FileHasher(store))
    c.root = os.path.dirname(target_dir) if target_dir else cwd
    outputs = [os.path.join(cwd, p) for p in argvmod.expected_outputs(rc)]
    for p in outputs:
        if resolve(os.path.dirname(p)) != out_dir:
            raise Uncacheable("output-path")
    c.outputs = outputs

    kb = KeyBuilder()
    kb.add("version", str(KEY_VERSION))
    chain = [rc.compiler, *rc.compiler_args_prefix]
    try:
        kb.add("toolchain", identity(store, chain, env, cwd))
    except ToolchainError as e:
        raise Uncacheable("compiler-identity") from e
    extern_paths: list[tuple[str, str]] = []
    for tok in argvmod.key_args(rc.args):
        kb.add("args", norm.text(tok))
    for name, path in rc.externs:
        if path:
            extern_paths.append((name, os.path.join(cwd, path)))
    libs, lib_dirs = native_inputs(rc, cwd, target_dir, argvmod.target_family(rc))
    linked = link_inputs(rc, argvmod.effective_crate_types(rc), cwd, env)
    to_hash = [p for _, p in extern_paths]
    if rc.target and rc.target.endswith(".json"):
        to_hash.append(os.path.join(cwd, rc.target))
    hashes = c.hasher.hashes(to_hash)
    # objects and archives, keyed so that a build script's C objects, which hold its
    # machine's paths in their debug strings, match across machines; thin archives by
    # their members
    native = [p for _, p in libs] + [p for _, files in lib_dirs for p in files] + [p for _, p in linked]
    try:
        hashes.update(c.hasher.native_hashes(native, norm))
    except ThinArchiveError as e:
        raise Uncacheable("native-library") from e
    for name, path in extern_paths:
        if hashes[path] is None:
            raise Uncacheable("missing-extern")
        kb.add(f"extern:{name}", hashes[path] or "")
    for spec, path in libs:
        kb.add(f"lib:{spec}", hashes[path] or "missing")
    for d, files in lib_dirs:
        listing = "".join(f"{os.path.basename(p)}\0{hashes[p] or 'unreadable'}\n" for p in files)
        kb.add(f"native-dir:{norm.path(d)}", listing)
    for label, path in linked:
        kb.add(label, hashes[path] or "unreadable")
    if rc.target and rc.target.endswith(".json"):
        kb.add("target-spec", hashes[os.path.join(cwd, rc.target)] or "missing")
    clippy = argvmod.is_clippy(chain)
    for name, value in key_env(env, clippy=clippy):
        kb.add(f"env:{name}", norm.text(value))
    if clippy:
        kb.add("clippy-conf", _clippy_config(c, env))
    kb.add("remap", norm.remap_text())
    if salt:
        kb.add("salt", salt)
    for names, files in _extra_inputs(extra_inputs, c.crate):
        for n in sorted(names):
            kb.add(f"extra-env:{n}", "\0unset" if n not in env else "=" + env[n])
        # Relative to the directory cargo runs rustc in: the workspace root for a member,
        # the package's own root for any other crate. The kernel resolves what is left.
        home = env.get("HOME") or os.path.expanduser("~")
        for f in files:
            path = os.path.join(cwd, home + f[1:] if f == "~" or f.startswith("~/") else f)
            kb.add(f"extra-file:{f}", _extra_file(c, path))
    c.mkey = kb.hexdigest()
    c.components = kb.components
    return c


def _extra_file(c: Call, path: str) -> str:
    """What a declared extra input holds: a file's blake3; for a directory, every file
    below it; for a glob pattern (``*``, ``?``, ``[``, ``**``), every file it matches; by
    path relative to it and content. "missing" (and a warning) when there is nothing."""
    if any(ch in path for ch in "*?["):
        import glob

        listing = sorted(p for p in glob.glob(path, recursive=True) if os.path.isfile(p))
        base = os.path.dirname(path.split("*")[0].split("?")[0].split("[")[0])
    elif os.path.isdir(path):
        listing = []
        for d, dirs, names in os.walk(path):
            dirs.sort()
            listing.extend(os.path.join(d, n) for n in sorted(names) if os.path.isfile(os.path.join(d, n)))
        base = path
    else:
        digest = c.hasher.hashes([path])[path]
        if digest is None:
            c.missing_inputs.append(path)
        return digest or "missing"
    if not listing:
        c.missing_inputs.append(path)
        return "missing"
    hashes = c.hasher.hashes(listing)
    return "".join(f"{os.path.relpath(p, base)}\0{hashes[p] or 'unreadable'}\n" for p in listing)


def _clippy_config(c: Call, env: Mapping[str, str]) -> str:
    """The clippy.toml clippy-driver would read for this call, by path and content, or
    "none": it looks in ``CLIPPY_CONF_DIR`` (else the package's directory) and each
    directory above, and takes the first ``.clippy.toml`` or ``clippy.toml`` it finds. A
    file clippy read is in the dep-info, but one that appears later would not be seen."""
    start = env.get("CLIPPY_CONF_DIR") or env.get("CARGO_MANIFEST_DIR") or "."
    d = os.path.realpath(os.path.join(c.cwd, start))
    while True:
        found = [os.path.join(d, n) for n in (".clippy.toml", "clippy.toml") if os.path.isfile(os.path.join(d, n))]
        if found:
            hashes = c.hasher.hashes(found)
            return "".join(f"{c.norm.path(p)}\0{hashes[p]}\n" for p in found)
        parent = os.path.dirname(d)
        if parent == d:
            return "none"
        d = parent


class Uncacheable(Exception):
    """Found while preparing: this call cannot be cached; the message is the reason."""


# --------------------------------------------------------------------------- lookup


def look_up(c: Call) -> Entry | None:
    """The newest recorded compile under the cheap key whose inputs all still match."""
    for key, inputs in c.store.manifest(c.mkey):
        files = inputs.get("files", [])
        real = [c.norm.expand(p) for p, _ in files]
        hashes = c.hasher.hashes(real)
        if any(hashes[r] != h for r, (_, h) in zip(real, files)):
            continue
        if not all(_env_value(c, name, normalized) == value for name, value, normalized in inputs.get("env", [])):
            continue
        # Outputs that hold one of this machine's paths were pinned to it when recorded.
        if not all(c.norm.spellings(sentinel) == spellings for sentinel, spellings in inputs.get("local", [])):
            continue
        entry = c.store.get(key)
        if entry is not None:
            return entry
    return None


def _env_value(c: Call, name: str, normalized: bool) -> str | None:
    value = c.env.get(name)
    if value is None or not normalized:
        return value
    return c.norm.path(value)


# --------------------------------------------------------------------------- restore


def restore(c: Call, entry: Entry) -> int:
    """Put the entry's files in place (the caller replays its output). Returns bytes restored.

    Every blob is checked first (a ``stat`` against its stamp; re-hashed when that
    changed): a missing or damaged one raises ``DamagedBlob`` before anything is placed,
    and the caller drops it and compiles. The caller records the blobs' new stamps.
    """
    files = entry.meta["files"]
    damaged = c.store.files_problem(files)
    if damaged is not None:
        raise DamagedBlob(*damaged)
    os.makedirs(c.out_dir, exist_ok=True)
    total = 0
    # .rmeta first (cargo's pipelining starts dependents on it), .d last.
    order = sorted(files, key=lambda f: (not f["name"].endswith(".rmeta"), f["kind"] == "depinfo"))
    for f in order:
        dst = os.path.join(c.out_dir, f["name"])
        blob = c.store.blob_path(f["hash"])
        if f["kind"] == "depinfo":
            with open(blob, encoding="utf-8") as fh:
                _write_new(dst, _expand_depinfo(c, fh.read()).encode("utf-8"), c.umask)
        else:
            _place(blob, dst, executable=f["kind"] == "exec", private=_private(c, f["kind"]))
            c.hasher.remember(dst, f["hash"])
        os.utime(dst)  # the kernel's clock, never a Python "now" (REFERENCE §2)
        total += f["size"]
    return total


def _tmp_beside(dst: str) -> str:
    return os.path.join(os.path.dirname(dst), f".{os.path.basename(dst)}.kache-{os.getpid()}")


def _write_new(dst: str, data: bytes, umask: int | None = None) -> None:
    tmp = _tmp_beside(dst)
    with open(tmp, "wb") as f:
        f.write(data)
    if umask is not None:
        os.chmod(tmp, 0o666 & ~umask)
    os.replace(tmp, dst)


def _private(c: Call, kind: str) -> bool:
    """Whether an output is the user's own program or library (a bin, dylib, cdylib or
    test harness, cached with ``cache_executables``): never hardlinked to a blob, in
    either direction, so a ``strip`` or a signing tool that rewrites it in place (as
    root) cannot reach the store. Build scripts and proc macros, which only cargo runs,
    share the blob's inode."""
    if kind != "exec":
        return False
    rc = c.call
    return not (argvmod.is_build_script(rc) or "proc-macro" in argvmod.effective_crate_types(rc))


def _place(blob: str, dst: str, *, executable: bool, private: bool = False) -> None:
    """Hardlink the blob when nothing else links it; else copy (always, when ``private``).

    One link per blob: two target dirs sharing an inode would share its mtime, and the
    ``utime`` of one restore could make the other's stale output look fresh to cargo. An
    executable is linked only when its blob carries the exec bits (0444 blobs written
    by older versions get a private 0755 copy). A linked blob gets its owner's write bit
    (read-only blobs of older versions): rustc without kache refuses to compile over an
    output it may not write.
    """
    st = os.stat(blob)
    if not private and not st.st_mode & 0o200:
        os.chmod(blob, stat_mode(st.st_mode) | 0o200)
    try:
        here = os.stat(dst, follow_symlinks=False)
        if (here.st_dev, here.st_ino) == (st.st_dev, st.st_ino) and not private:
            return  # already this blob (cargo re-ran a unit whose inputs did not change)
    except OSError:
        pass
    tmp = _tmp_beside(dst)
    if os.path.lexists(tmp):
        os.unlink(tmp)
    linked = False
    if not private and st.st_nlink == 1 and (not executable or st.st_mode & 0o111 == 0o111):
        try:
            os.link(blob, tmp)
            linked = os.stat(tmp).st_nlink == 2
            if not linked:  # someone else linked it meanwhile: keep the single-consumer rule
                os.unlink(tmp)
        except OSError:
            linked = False
    if not linked:
        copy_file(blob, tmp)
        os.chmod(tmp, 0o755 if executable else 0o644)
    os.replace(tmp, dst)


def _expand_depinfo(c: Call, text: str) -> str:
    info = depinfo.parse(text)
    info = depinfo.map_paths(info, c.norm.expand)
    info.env = [(name, c.env.get(name)) for name, _ in info.env]
    return depinfo.render(info)


def replay_texts(c: Call, meta: dict[str, Any]) -> tuple[str, str]:
    """rustc's recorded stdout and stderr, with this build's --out-dir put back and the
    file names of its messages made this machine's (kache.paths: Normalizer.diagnostics)."""
    out_dir = quickjson.quote(c.out_dir)[1:-1]
    return (meta.get("stdout", "").replace(OUT_DIR_TOKEN, out_dir),
            c.norm.diagnostics(meta.get("stderr", "").replace(OUT_DIR_TOKEN, out_dir)))


# --------------------------------------------------------------------------- miss


class KeyLock:
    """An flock on ``locks/<mkey>``: one compile per cheap key at a time, per store.

    The kernel drops the lock when its holder dies, so there are no stale locks.
    """

    def __init__(self, store: Store, mkey: str) -> None:
        self.path = os.path.join(store.root, "locks", mkey[:32])
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


def unlink_shared_outputs(paths: list[str]) -> None:
    """Remove outputs that share an inode with a blob before rustc writes over them.

    rustc rewrites some outputs in place; a hardlinked output would carry that write
    into the store. Plain (unshared) outputs are left for rustc and cargo.
    """
    for p in paths:
        try:
            if os.lstat(p).st_nlink > 1:
                os.unlink(p)
        except FileNotFoundError:
            pass


def run_compiler(cmd: list[str], show_stderr: Callable[[str], str] | None = None) -> tuple[int, str, str]:
    """Run rustc with inherited fds (cargo's jobserver), its stdout and stderr passed on
    as they come and kept for the cache; ``show_stderr`` rewrites each whole line of
    stderr before it is passed on (what is kept is what rustc wrote).

    ``posix_spawn`` and ``poll``, not ``subprocess`` and a thread (~9 ms of imports on
    every miss). Returns (exit status, stdout text, stderr text).
    """
    import select

    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    try:
        pid = os.posix_spawnp(cmd[0], cmd, os.environ, file_actions=[
            (os.POSIX_SPAWN_DUP2, out_w, 1), (os.POSIX_SPAWN_DUP2, err_w, 2)])
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


def compiler_command(c: Call) -> list[str]:
    """The real compile: kache's remap flags, then cargo's arguments (rustc applies the
    last matching remap, so the user's own ``--remap-path-prefix`` wins); ``-C
    incremental`` kept or dropped as ``cache.incremental`` says (it is never part of
    the key: outputs of an incremental compile are as valid as any, only not
    byte-identical)."""
    rc = c.call
    args = rc.args if c.keep_incremental else argvmod.without_incremental(rc.args)
    return [rc.compiler, *rc.compiler_args_prefix, *c.norm.remap_flags(), *args]


def record(c: Call, started_ns: int, stdout: str, stderr: str, compile_ms: int) -> tuple[str, int]:
    """Store the outputs of a successful compile. Returns (outcome, bytes), where the
    outcome is ``miss`` (new data), ``dup`` (every blob was there) or ``skip:<why>``.
    """
    rc = c.call
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
            added = c.store.put_blob_file(p, digest, link=not _private(c, kind), executable=kind == "exec")
            c.hasher.remember(p, digest)
        new_blobs += added
        total += size
        stored.append({"name": name, "hash": digest, "size": size, "kind": kind})
    out_dir_text = quickjson.quote(c.out_dir)[1:-1]
    stdout, stderr = stdout.replace(out_dir_text, OUT_DIR_TOKEN), stderr.replace(out_dir_text, OUT_DIR_TOKEN)
    for text in (stdout, stderr):  # replayed messages are outputs too
        scanner.search(text.encode("utf-8", "surrogateescape"))
    # An output that holds a path of this machine pins the entry to it (kache.wrapper.portable).
    local = [(sentinel, c.norm.spellings(sentinel)) for sentinel in sorted(scanner.found)]
    key, source_components = full_key(c.mkey, files, [(n, v) for n, v, _ in env_entries], local)
    meta = {
        "files": stored,
        "stdout": stdout,
        "stderr": stderr,
        "emit": sorted(rc.emit),
        "components": {**c.components, **{k: v for k, v in source_components.items() if k != "mkey"}},
        "target_dir": bool(target_dir),
    }
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


# --------------------------------------------------------------------------- incremental snapshots
#
# rustc keeps a crate's incremental state in <incremental>/<crate>-<hash>/s-<time>-<id>-<svh>/
# (with an empty s-<time>-<id>.lock beside it). cargo clean removes it; a hit that restores
# the outputs restores the state too, so the first edit after it compiles incrementally,
# as with plain cargo. Copies both ways, not hardlinks: rustc links a reused object file
# from the session into deps/ as an output, which would give a blob a second link in a
# target dir behind kache's back.

SNAPSHOT_MAX_BYTES = 512 << 20  # a bigger session is not kept (hashing it costs more than it saves)


def snapshot_incremental(c: Call, started_ns: int) -> dict[str, Any] | None:
    """Ingest (copies) the session rustc finalised during this compile; its
    description for the entry's meta, or None when there is none to take: no session, or
    two (a twin unit of the same crate name compiled meanwhile), or too big."""
    base = os.path.join(c.cwd, c.call.incremental or "")
    found = []
    try:
        for crate_dir in os.scandir(base):
            if not crate_dir.name.startswith(f"{c.crate}-") or not crate_dir.is_dir(follow_symlinks=False):
                continue
            for session in os.scandir(crate_dir.path):
                if (session.name.startswith("s-") and not session.name.endswith("-working")
                        and session.is_dir(follow_symlinks=False)
                        and session.stat(follow_symlinks=False).st_ctime_ns >= started_ns):
                    found.append((crate_dir.name, session.name, session.path))
    except OSError:
        return None
    if len(found) != 1:
        return None
    crate_dir_name, session_name, path = found[0]
    stats = []
    total = 0
    for entry in os.scandir(path):
        st = entry.stat(follow_symlinks=False)
        if not entry.is_file(follow_symlinks=False):
            return None  # rustc writes plain files only: anything else is not a session we know
        stats.append((entry.name, st))
        total += st.st_size
        if total > SNAPSHOT_MAX_BYTES:
            return None
    # What rustc reuses from the previous session it hardlinks into the new one: a file
    # whose inode, size and mtime match the memo, and whose blob is intact, is that blob
    # (no hashing, no copy). rustc writes new files for everything else.
    memo_dir = os.path.join(base, crate_dir_name)
    memo = c.store.incremental_files(memo_dir)
    stamps = c.store.blob_stamps({m[2] for m in memo.values()})
    files, rows = [], []
    for name, st in sorted(stats):
        p = os.path.join(path, name)
        known = memo.get((st.st_dev, st.st_ino))
        if (known is not None and known[0] == st.st_size and known[1] == st.st_mtime_ns
                and c.store.blob_problem(known[2], st.st_size, stamps.get(known[2]), stamp_known=True) is None):
            digest, size = known[2], st.st_size
        else:
            digest, size = hash_file(p)
            c.store.put_blob_file(p, digest, link=False)
        files.append({"name": name, "hash": digest, "size": size})
        rows.append((st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, digest))
    c.store.set_incremental_files(memo_dir, rows)
    return {"root": c.root, "dir": crate_dir_name, "session": session_name, "files": files}


def restore_incremental(c: Call, entry: Entry) -> bool:
    """Put the entry's incremental session in place when the crate has no state of its
    own and this is the checkout that recorded it; True if it did. A damaged or missing
    blob only means no snapshot (gc's repair drops the entry)."""
    snap = entry.meta.get("incremental")
    if not c.call.incremental or not isinstance(snap, dict) or snap.get("root") != c.root:
        return False
    crate_dir = os.path.join(c.cwd, c.call.incremental, snap["dir"])
    session = snap["session"]
    if os.sep in snap["dir"] or os.sep in session or not session.startswith("s-") or session.count("-") < 3:
        return False
    try:
        if any(name.startswith("s-") for name in os.listdir(crate_dir)):
            return False  # rustc's own state is newer than any snapshot
    except FileNotFoundError:
        pass
    files = snap["files"]
    if c.store.files_problem(files) is not None:
        return False
    umask = c.umask
    if umask is None:
        umask = os.umask(0o022)
        os.umask(umask)
    # rustc's modes under the caller's umask (the daemon's own is 077), the owner's
    # write bit always: rustc must be able to replace what it finds there.
    dir_mode, file_mode = (0o777 & ~umask) | 0o700, (0o666 & ~umask) | 0o600
    if not os.path.isdir(crate_dir):
        os.makedirs(crate_dir, exist_ok=True)
        os.chmod(crate_dir, dir_mode)
    tmp = os.path.join(crate_dir, f".kache-{os.getpid()}")
    rows = []
    try:
        os.mkdir(tmp)
        os.chmod(tmp, dir_mode)
        for f in files:
            if os.sep in f["name"] or f["name"] in (".", ".."):
                raise ValueError("not a session file name")
            dst = os.path.join(tmp, f["name"])
            copy_file(c.store.blob_path(f["hash"]), dst)
            os.chmod(dst, file_mode)
            st = os.stat(dst)
            rows.append((st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, f["hash"]))
        # the lock file rustc keeps beside a session (s-<time>-<id>.lock), then the session
        lock = os.path.join(crate_dir, "-".join(session.split("-")[:3]) + ".lock")
        os.close(os.open(lock, os.O_WRONLY | os.O_CREAT, 0o600))
        os.chmod(lock, file_mode)
        os.rename(tmp, os.path.join(crate_dir, session))
    except (OSError, ValueError):
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
        return False
    try:  # the next session hardlinks these copies: its snapshot need not hash them
        c.store.set_incremental_files(crate_dir, rows)
    except Exception:  # noqa: BLE001 - only a memo: the next snapshot hashes instead
        pass
    return True
