"""Cargo target directories: finding them, and what deleting them would free (``kache clean``).

A target dir is recognised by cargo's own markers: a ``CACHEDIR.TAG`` whose comment
says cargo created it, or a ``.rustc_info.json`` next to a profile dir. The walk never
follows symlinks and does not descend into a target dir it found (nor into ``.git``).

Files hardlinked from the kache store share their inode with a blob: deleting the target
dir frees none of their bytes until the store itself evicts the blob. ``shared_bytes``
counts those, so the breakdown shows what deleting really frees.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from kache.store import layout

__all__ = ["TargetDir", "find_target_dirs", "measure", "store_inodes", "delete"]

CARGO_TAG = "created by cargo"
_SKIP = frozenset({".git", ".hg", ".svn", "node_modules", "__pycache__", ".venv"})


@dataclass
class TargetDir:
    path: str
    size: int = 0
    """Bytes of its files (a file linked twice inside the dir counts once)."""
    shared_bytes: int = 0
    """Bytes of files that are hardlinks of kache store blobs (not freed by deleting)."""
    files: int = 0
    last_used: float = 0.0

    @property
    def frees(self) -> int:
        return self.size - self.shared_bytes


def is_target_dir(path: str) -> bool:
    tag = os.path.join(path, "CACHEDIR.TAG")
    try:
        with open(tag, encoding="utf-8", errors="replace") as f:
            if CARGO_TAG in f.read(512):
                return True
    except OSError:
        pass
    return os.path.isfile(os.path.join(path, ".rustc_info.json")) and any(
        os.path.isdir(os.path.join(path, p)) for p in ("debug", "release"))


def find_target_dirs(roots: Iterable[str]) -> Iterator[str]:
    """Target dirs under the roots (each root may itself be one), without following links."""
    seen: set[tuple[int, int]] = set()
    stack = [os.path.abspath(r) for r in roots]
    while stack:
        path = stack.pop()
        try:
            st = os.stat(path, follow_symlinks=False)
        except OSError:
            continue
        if (st.st_dev, st.st_ino) in seen:
            continue
        seen.add((st.st_dev, st.st_ino))
        if is_target_dir(path):
            yield path
            continue
        try:
            entries = sorted(os.scandir(path), key=lambda e: e.name, reverse=True)
        except OSError:
            continue
        for e in entries:
            if e.name not in _SKIP and e.is_dir(follow_symlinks=False):
                stack.append(e.path)


def store_inodes(store_root: str) -> set[tuple[int, int]]:
    """(device, inode) of every blob in the store."""
    out: set[tuple[int, int]] = set()
    blobs = layout.blobs_dir(store_root)
    try:
        shards = list(os.scandir(blobs))
    except OSError:
        return out
    for shard in shards:
        try:
            for f in os.scandir(shard.path):
                st = f.stat(follow_symlinks=False)
                out.add((st.st_dev, st.st_ino))
        except OSError:
            continue
    return out


def measure(path: str, blob_inodes: set[tuple[int, int]]) -> TargetDir:
    info = TargetDir(path)
    counted: set[tuple[int, int]] = set()
    for dirpath, _dirnames, filenames in os.walk(path):
        try:
            info.last_used = max(info.last_used, os.stat(dirpath).st_mtime)
        except OSError:
            pass
        for name in filenames:
            try:
                st = os.stat(os.path.join(dirpath, name), follow_symlinks=False)
            except OSError:
                continue
            ident = (st.st_dev, st.st_ino)
            if ident in counted:
                continue
            counted.add(ident)
            info.files += 1
            info.size += st.st_size
            if st.st_nlink > 1 and ident in blob_inodes:
                info.shared_bytes += st.st_size
            info.last_used = max(info.last_used, st.st_mtime)
    return info


def delete(path: str) -> list[str]:
    """Remove a target dir; returns the problems met (an empty list when all went)."""
    errors: list[str] = []
    if sys.version_info >= (3, 12):
        shutil.rmtree(path, onexc=lambda _f, p, e: errors.append(f"{p}: {e}"))
    else:
        shutil.rmtree(path, onerror=lambda _f, p, e: errors.append(f"{p}: {e[1]}"))
    return errors
