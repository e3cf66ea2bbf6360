"""Content-addressed blobs: ``store/<hash[:2]>/<hash>``, written atomically.

A blob's name is the blake3 of its bytes (64 hex digits). Blobs are put with a temp
file in ``tmp/`` and ``rename`` (same filesystem), so a reader never sees half a
blob; a crash leaves at worst a temp file or an orphan blob that gc removes. Blobs
are mode 0644 (0755 for build scripts and proc-macro libraries), private by their
0700 directories. Their owner may write them: a blob hardlinked into a target dir is
the file cargo sees there, and rustc refuses to compile over an output it may not
write ("output file … is not writeable"), which would break a build of that target
dir without kache (an IDE, kache switched off). rustc replaces its outputs (a new
file, renamed into place), never writes them in place, and kache unlinks hardlinked
outputs before it compiles. Whatever rewrites one anyway moves its stamp, and the blob
is re-hashed before its next use (``Store.blob_problem``).
"""

from __future__ import annotations

import errno
import os

from blake3 import blake3

from kache.store import layout

__all__ = ["BLOB_MODE", "EXEC_BLOB_MODE", "hash_file", "blob_path", "put_file", "put_bytes", "copy_file",
           "is_hash"]

BLOB_MODE = 0o644
EXEC_BLOB_MODE = 0o755

_CHUNK = 1 << 20
_HEX = frozenset("0123456789abcdef")


def is_hash(text: str) -> bool:
    return len(text) == 64 and not set(text) - _HEX


def hash_file(path: str) -> tuple[str, int]:
    """(blake3 hex, size) of a file."""
    h = blake3()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


def hash_bytes(data: bytes) -> str:
    return blake3(data).hexdigest()


def blob_path(root: str, digest: str) -> str:
    return layout.blob_path(root, digest)


def _tmp_name(root: str) -> str:
    os.makedirs(layout.tmp_dir(root), mode=0o700, exist_ok=True)
    return layout.put_path(root, os.urandom(6).hex())


def put_file(root: str, src: str, digest: str, *, link: bool, executable: bool = False) -> bool:
    """Make ``src`` (whose hash is ``digest``) a blob. Returns False if it was there already.

    ``link`` ingests by hardlink (no copy): for outputs nothing rewrites in place
    (.rlib/.rmeta, build-script executables, proc-macro libraries), which then share the
    blob's inode. ``executable`` blobs are 0755, so a restore can link them too.
    """
    dst = blob_path(root, digest)
    if os.path.exists(dst):
        return False
    os.makedirs(os.path.dirname(dst), mode=0o700, exist_ok=True)
    tmp = _tmp_name(root)
    try:
        done = False
        if link:
            try:
                os.link(src, tmp)
                done = True
            except OSError:
                pass
        if not done:
            copy_file(src, tmp)
        os.chmod(tmp, EXEC_BLOB_MODE if executable else BLOB_MODE)
        os.replace(tmp, dst)
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)
    return True


def copy_file(src: str, dst: str) -> None:
    """``shutil.copyfile(src, dst)`` for the wrapper's path, without importing ``shutil``
    (which imports ``fnmatch``, ``re`` and ``enum``: ~10 ms on every miss that snapshots
    an incremental session). The kernel copies (``copy_file_range``: a reflink where the
    filesystem can) or, where it cannot, 1 MiB reads and writes."""
    with open(src, "rb") as fsrc, open(dst, "wb") as fdst:
        if _kernel_copy(fsrc.fileno(), fdst.fileno()):
            return
        while chunk := fsrc.read(1 << 20):
            fdst.write(chunk)


def _kernel_copy(infd: int, outfd: int) -> bool:
    """``copy_file_range`` to the end of ``infd``; False, having copied nothing, where the
    kernel or filesystem does not offer it (or reports a non-empty file as empty)."""
    copy = getattr(os, "copy_file_range", None)
    if copy is None:
        return False
    copied = 0
    while True:
        try:
            n = copy(infd, outfd, 1 << 30)
        except OSError as e:
            if copied == 0 and e.errno in _NO_KERNEL_COPY:
                return False
            raise
        if n == 0:
            return copied > 0 or os.fstat(infd).st_size == 0
        copied += n


# copy_file_range's "not here": no syscall, another filesystem (kernels before 5.3), a
# filesystem or file kind that cannot, a seccomp filter that forbids it.
_NO_KERNEL_COPY = {errno.ENOSYS, errno.EXDEV, errno.EINVAL, errno.EOPNOTSUPP, errno.EBADF, errno.EPERM,
                   errno.ETXTBSY}


def put_bytes(root: str, data: bytes) -> tuple[str, bool]:
    """Store bytes as a blob; (hash, newly added)."""
    digest = hash_bytes(data)
    dst = blob_path(root, digest)
    if os.path.exists(dst):
        return digest, False
    os.makedirs(os.path.dirname(dst), mode=0o700, exist_ok=True)
    tmp = _tmp_name(root)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.chmod(tmp, BLOB_MODE)
        os.replace(tmp, dst)
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)
    return digest, True
