"""Incremental state: snapshots of a workspace crate's session kept with its entry.

rustc keeps a crate's incremental state in <incremental>/<crate>-<hash>/s-<time>-<id>-<svh>/
(with an empty s-<time>-<id>.lock beside it). cargo clean removes it; a hit that restores
the outputs restores the state too, so the first edit after it compiles incrementally,
as with plain cargo. Copies both ways, not hardlinks: rustc links a reused object file
from the session into deps/ as an output, which would give a blob a second link in a
target dir behind kache's back.

Under ``cache.incremental = "drop"`` with ``clean_incremental`` the crate's state is
removed instead (:func:`clean`): kache compiles without it, so it would only go stale.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False  # typing costs ~11 ms to import; annotations are strings here

from kache.store.blobs import copy_file, hash_file

if TYPE_CHECKING:
    from typing import Any

    from kache.engine.call import PreparedCall
    from kache.store.store import Entry

__all__ = ["snapshot_incremental", "restore_incremental", "restore_snapshot", "note", "clean"]

SNAPSHOT_MAX_BYTES = 512 << 20  # a bigger session is not kept (hashing it costs more than it saves)


def snapshot_incremental(c: PreparedCall, started_ns: int) -> dict[str, Any] | None:
    """Ingest (copies) the session rustc finalised during this compile; its
    description for the entry's meta, or None when there is none to take: no session, or
    two (a twin unit of the same crate name compiled meanwhile), or too big."""
    base = os.path.join(c.cwd, c.rustc.incremental or "")
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


def restore_incremental(c: PreparedCall, entry: Entry) -> bool:
    """Put the entry's incremental session in place when the crate has no state of its
    own and this is the checkout that recorded it; True if it did. A damaged or missing
    blob only means no snapshot (gc's repair drops the entry)."""
    snap = entry.meta.get("incremental")
    if not c.rustc.incremental or not isinstance(snap, dict) or snap.get("root") != c.root:
        return False
    crate_dir = os.path.join(c.cwd, c.rustc.incremental, snap["dir"])
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
    umask = c.build_umask()
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


def restore_snapshot(c: PreparedCall, entry: Entry) -> bool:
    """The entry's incremental session, restored beside the outputs (best effort: without
    it the next edit compiles incrementally from scratch, which is only slower)."""
    try:
        return restore_incremental(c, entry)
    except Exception:  # noqa: BLE001
        return False


def note(c: PreparedCall, incremental: str) -> None:
    """Remember an incremental dir, for gc to remove its sessions once they go stale."""
    try:
        c.store.note_incremental(os.path.join(c.cwd, incremental))
    except Exception:  # noqa: BLE001 - bookkeeping for gc only
        pass


def clean(c: PreparedCall, incremental: str) -> None:
    """Remove this crate's incremental state (stale: kache compiles without it)."""
    path = os.path.join(c.cwd, incremental)
    prefix = f"{c.crate}-"
    note(c, incremental)
    try:
        names = os.listdir(path)
    except OSError:
        return
    for name in names:
        if name.startswith(prefix):
            import shutil

            shutil.rmtree(os.path.join(path, name), ignore_errors=True)
