"""A hit: find the newest entry whose inputs still match, put its files in place.

:func:`look_up` walks the manifest of the call's cheap key (direct mode, as ccache's)
newest first; :func:`restore` checks every blob, then hardlinks (or copies) them into
the target dir with the kernel's mtime; :func:`replay_texts` gives rustc's recorded
messages with this build's paths put back.
"""

from __future__ import annotations

import os
from stat import S_IMODE as stat_mode

TYPE_CHECKING = False  # typing costs ~11 ms to import; annotations are strings here

from kache import quickjson
from kache.engine import argv as argvmod
from kache.engine import depinfo
from kache.engine.call import OUT_DIR_TOKEN
from kache.store.blobs import copy_file
from kache.store.store import DamagedBlob

if TYPE_CHECKING:
    from typing import Any

    from kache.engine.call import PreparedCall
    from kache.store.store import Entry

__all__ = ["look_up", "restore", "replay_texts", "is_private_output", "write_new", "may_share", "output_mode"]


def look_up(c: PreparedCall) -> Entry | None:
    """The newest recorded compile under the cheap key whose inputs all still match."""
    for key, inputs in c.store.manifest(c.mkey):
        files = inputs.get("files", [])
        real = [c.norm.expand(p) for p, _ in files]
        hashes = c.hasher.hashes(real)
        if any(hashes[r] != h for r, (_, h) in zip(real, files, strict=True)):
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


def _env_value(c: PreparedCall, name: str, normalized: bool) -> str | None:
    value = c.env.get(name)
    if value is None or not normalized:
        return value
    return c.norm.path(value)


# --------------------------------------------------------------------------- restore


def restore(c: PreparedCall, entry: Entry) -> int:
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
    umask = c.build_umask()
    total = 0
    # .rmeta first (cargo's pipelining starts dependents on it), .d last.
    order = sorted(files, key=lambda f: (not f["name"].endswith(".rmeta"), f["kind"] == "depinfo"))
    for f in order:
        dst = os.path.join(c.out_dir, f["name"])
        blob = c.store.blob_path(f["hash"])
        if f["kind"] == "depinfo":
            with open(blob, encoding="utf-8") as fh:
                write_new(dst, expand_depinfo(c, fh.read()).encode("utf-8"), c.umask)
        else:
            _place(blob, dst, umask, executable=f["kind"] == "exec", private=is_private_output(c, f["kind"]))
            c.hasher.remember(dst, f["hash"])
        # The kernel's clock (utimensat with no times), never a Python "now", which can land
        # after files cargo writes later and make cargo rebuild dependents forever.
        os.utime(dst)
        total += f["size"]
    return total


def _tmp_beside(dst: str) -> str:
    return os.path.join(os.path.dirname(dst), f".{os.path.basename(dst)}.kache-{os.getpid()}")


def write_new(dst: str, data: bytes, umask: int | None = None) -> None:
    tmp = _tmp_beside(dst)
    with open(tmp, "wb") as f:
        f.write(data)
    if umask is not None:
        os.chmod(tmp, 0o666 & ~umask)
    os.replace(tmp, dst)


def may_share(mode: int, executable: bool, umask: int) -> bool:
    """Whether a blob of ``mode`` may be the build's output itself (one inode): only when
    it lets group and others do nothing that rustc's own file would not let them under
    ``umask``. Under 022 or 002 a 0644 blob may; under 077 the output is a copy, 0600,
    as rustc makes it (a shared inode's mode is every link's)."""
    return not mode & 0o077 & ~output_mode(executable, umask)


def output_mode(executable: bool, umask: int) -> int:
    """The mode rustc's own output gets under ``umask``."""
    return (0o777 if executable else 0o666) & ~umask


def is_private_output(c: PreparedCall, kind: str) -> bool:
    """Whether an output is the user's own program or library (a bin, dylib, cdylib or
    test harness, cached with ``cache_executables``): never hardlinked to a blob, in
    either direction, so a ``strip`` or a signing tool that rewrites it in place (as
    root) cannot reach the store. Build scripts and proc macros, which only cargo runs,
    share the blob's inode."""
    if kind != "exec":
        return False
    rc = c.rustc
    return not (argvmod.is_build_script(rc) or "proc-macro" in argvmod.effective_crate_types(rc))


def _place(blob: str, dst: str, umask: int, *, executable: bool, private: bool = False) -> None:
    """Hardlink the blob when nothing else links it; else copy (always, when ``private``,
    and when the build's ``umask`` would give others less than the blob does), with the
    mode rustc would give it under ``umask``.

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
    if (not private and st.st_nlink == 1 and (not executable or st.st_mode & 0o111 == 0o111)
            and may_share(stat_mode(st.st_mode), executable, umask)):
        try:
            os.link(blob, tmp)
            linked = os.stat(tmp).st_nlink == 2
            if not linked:  # someone else linked it meanwhile: keep the single-consumer rule
                os.unlink(tmp)
        except OSError:
            linked = False
    if not linked:
        copy_file(blob, tmp)
        os.chmod(tmp, output_mode(executable, umask))
    os.replace(tmp, dst)


def expand_depinfo(c: PreparedCall, text: str) -> str:
    info = depinfo.parse(text)
    info = depinfo.map_paths(info, c.norm.expand)
    info.env = [(name, c.env.get(name)) for name, _ in info.env]
    return depinfo.render(info)


def replay_texts(c: PreparedCall, meta: dict[str, Any]) -> tuple[str, str]:
    """rustc's recorded stdout and stderr, with this build's --out-dir put back and the
    file names of its messages made this machine's (kache.paths: Normalizer.diagnostics)."""
    out_dir = quickjson.quote(c.out_dir)[1:-1]
    return (meta.get("stdout", "").replace(OUT_DIR_TOKEN, out_dir),
            c.norm.diagnostics(meta.get("stderr", "").replace(OUT_DIR_TOKEN, out_dir)))

