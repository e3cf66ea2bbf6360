"""kache.store.blobs.copy_file: shutil.copyfile without shutil, kernel copy or not."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from kache.store import blobs
from kache.store.blobs import copy_file

SIZES = [0, 1, 4095, 1 << 20, (1 << 20) + 1, 3 * (1 << 20) + 17]


def _data(n: int) -> bytes:
    return (os.urandom(64) * (n // 64 + 1))[:n]


@pytest.mark.parametrize("size", SIZES)
def test_copies_every_byte(tmp_path: Path, size: int) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.write_bytes(data := _data(size))
    dst.write_bytes(b"old and longer than some sources" * 100)  # replaced, not appended to
    copy_file(str(src), str(dst))
    assert dst.read_bytes() == data


@pytest.mark.parametrize("failure", [errno.ENOSYS, errno.EXDEV, errno.EOPNOTSUPP, errno.EPERM, None])
def test_without_a_kernel_copy_it_reads_and_writes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     failure: int | None) -> None:
    """copy_file_range missing, refused (another filesystem, a seccomp filter), or
    reporting a non-empty file as empty (as on some pseudo-filesystems)."""
    calls = []

    def refuse(infd: int, outfd: int, count: int) -> int:
        calls.append(count)
        if failure is None:
            return 0
        raise OSError(failure, os.strerror(failure))

    monkeypatch.setattr(os, "copy_file_range", refuse, raising=False)
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.write_bytes(data := _data(3 * (1 << 20) + 5))
    copy_file(str(src), str(dst))
    assert dst.read_bytes() == data and calls
    monkeypatch.delattr(os, "copy_file_range")
    dst.unlink()
    copy_file(str(src), str(dst))
    assert dst.read_bytes() == data


@pytest.mark.skipif(not hasattr(os, "copy_file_range"), reason="no copy_file_range here")
def test_a_failure_after_bytes_were_copied_is_raised(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Half a copy is never passed off as a whole one: an error once the kernel has
    copied something (a full disk) reaches the caller, which drops the file."""
    real = os.copy_file_range

    def fail_second(infd: int, outfd: int, count: int) -> int:
        if os.lseek(infd, 0, os.SEEK_CUR):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(infd, outfd, 1000)

    monkeypatch.setattr(os, "copy_file_range", fail_second)
    src = tmp_path / "src"
    src.write_bytes(_data(5000))
    with pytest.raises(OSError) as e:
        copy_file(str(src), str(tmp_path / "dst"))
    assert e.value.errno == errno.ENOSPC


def test_put_file_copies_when_it_may_not_link(tmp_path: Path) -> None:
    src = tmp_path / "session-file"
    src.write_bytes(data := _data(70_000))
    digest, size = blobs.hash_file(str(src))
    assert blobs.put_file(str(tmp_path / "root"), str(src), digest, link=False)
    blob = Path(blobs.blob_path(str(tmp_path / "root"), digest))
    assert blob.read_bytes() == data and size == len(data)
    assert blob.stat().st_ino != src.stat().st_ino and blob.stat().st_mode & 0o777 == 0o644
