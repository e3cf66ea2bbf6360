"""The snapshot of an incremental session hashes only what rustc wrote anew: files it
hardlinked from the previous session (same inode, size and mtime as the memo says, blob
intact) are that blob. Anything else is hashed and stored."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

import kache.engine.incremental as cache_mod
from kache.store.blobs import hash_bytes
from kache.store.store import Store


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(str(tmp_path / "store"))
    yield s
    s.close()


@pytest.fixture
def hashed(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    names: list[str] = []
    real = cache_mod.hash_file

    def counting(path: str) -> tuple[str, int]:
        names.append(os.path.basename(path))
        return real(path)

    monkeypatch.setattr(cache_mod, "hash_file", counting)
    return names


def session(crate_dir: Path, name: str, files: dict[str, bytes | Path]) -> Path:
    """A finalised session: new files from bytes, hardlinks of existing ones from paths."""
    d = crate_dir / name
    d.mkdir(parents=True)
    for fname, what in files.items():
        if isinstance(what, Path):
            os.link(what, d / fname)
        else:
            (d / fname).write_bytes(what)
    return d


def snapshot(store: Store, ws: Path) -> dict[str, str]:
    call = SimpleNamespace(cwd=str(ws), rustc=SimpleNamespace(incremental="target/debug/incremental"),
                           crate="foo", store=store, root=str(ws))
    snap = cache_mod.snapshot_incremental(call, 0)  # type: ignore[arg-type]
    assert snap is not None
    return {f["name"]: f["hash"] for f in snap["files"]}


def test_reused_files_are_not_hashed_again(store: Store, tmp_path: Path, hashed: list[str]) -> None:
    ws = tmp_path / "ws"
    crate_dir = ws / "target" / "debug" / "incremental" / "foo-1a2b"
    first = session(crate_dir, "s-1-aa-x", {"a.o": b"object a", "b.o": b"object b", "dep-graph.bin": b"g1"})
    assert snapshot(store, ws) == {"a.o": hash_bytes(b"object a"), "b.o": hash_bytes(b"object b"),
                                   "dep-graph.bin": hash_bytes(b"g1")}
    assert sorted(hashed) == ["a.o", "b.o", "dep-graph.bin"]

    # the next compile: a.o reused (hardlinked), b.o rewritten, the graph new
    hashed.clear()
    second = session(crate_dir, "s-2-bb-y", {"a.o": first / "a.o", "b.o": b"object B", "dep-graph.bin": b"g2"})
    for f in first.iterdir():
        f.unlink()
    first.rmdir()
    assert snapshot(store, ws) == {"a.o": hash_bytes(b"object a"), "b.o": hash_bytes(b"object B"),
                                   "dep-graph.bin": hash_bytes(b"g2")}
    assert sorted(hashed) == ["b.o", "dep-graph.bin"]

    # a file changed in place (its mtime moves) is hashed again, even with the same size
    hashed.clear()
    third = session(crate_dir, "s-3-cc-z", {"a.o": second / "a.o", "b.o": second / "b.o",
                                            "dep-graph.bin": second / "dep-graph.bin"})
    for f in second.iterdir():
        f.unlink()
    second.rmdir()
    st = (third / "a.o").stat()
    (third / "a.o").write_bytes(b"object A")
    os.utime(third / "a.o", ns=(st.st_atime_ns, st.st_mtime_ns + 1))
    # and a reused file whose blob was lost is hashed and stored again
    blob_b = Path(store.blob_path(hash_bytes(b"object B")))
    blob_b.unlink()
    assert snapshot(store, ws) == {"a.o": hash_bytes(b"object A"), "b.o": hash_bytes(b"object B"),
                                   "dep-graph.bin": hash_bytes(b"g2")}
    assert sorted(hashed) == ["a.o", "b.o"]
    assert blob_b.read_bytes() == b"object B"
    assert Path(store.blob_path(hash_bytes(b"object A"))).read_bytes() == b"object A"
    memo = store.incremental_files(str(crate_dir))
    assert sorted(h for _, _, h in memo.values()) == sorted(
        hash_bytes(x) for x in (b"object A", b"object B", b"g2"))
