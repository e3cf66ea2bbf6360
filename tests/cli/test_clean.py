from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from kache.cli import main
from kache.store.store import Store

TAG = ("Signature: 8a477f597d28d172789f06886806bc55\n"
       "# This file is a cache directory tag created by cargo.\n")


def make_target(path: Path, payload: int) -> Path:
    (path / "debug" / "deps").mkdir(parents=True)
    (path / "CACHEDIR.TAG").write_text(TAG)
    (path / "debug" / "deps" / "libx.rlib").write_bytes(b"x" * payload)
    return path


@pytest.fixture
def tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    store_root = tmp_path / "store"
    monkeypatch.setenv("KACHE_CACHE_DIR", str(store_root))
    root = tmp_path / "src"
    a = make_target(root / "proj-a" / "target", 1000)
    make_target(root / "nested" / "deep" / "proj-b" / "target", 3000)
    # decoys: a dir called target without cargo's marker, another tool's cache tag,
    # a symlink to a real target dir, a target dir inside .git
    (root / "decoy" / "target" / "debug").mkdir(parents=True)
    (root / "other-tool" / "cache").mkdir(parents=True)
    (root / "other-tool" / "cache" / "CACHEDIR.TAG").write_text(
        "Signature: 8a477f597d28d172789f06886806bc55\n# created by some other tool\n")
    (root / "link").symlink_to(a, target_is_directory=True)
    make_target(root / ".git" / "target", 10)
    # one file of proj-a is a hardlink of a store blob
    store = Store(str(store_root))
    digest, _ = store.put_blob_bytes(b"s" * 500)
    os.link(store.blob_path(digest), a / "debug" / "deps" / "libshared.rlib")
    store.close()
    return root


def test_clean_finds_target_dirs_among_decoys(tree: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["clean", "--json", str(tree)]) == 0
    found = {Path(t["path"]).relative_to(tree).as_posix(): t for t in json.loads(capsys.readouterr().out)}
    assert set(found) == {"proj-a/target", "nested/deep/proj-b/target"}
    a = found["proj-a/target"]
    assert (a["bytes"], a["shared_with_store_bytes"], a["frees_bytes"]) == (1500 + len(
        (tree / "proj-a" / "target" / "CACHEDIR.TAG").read_text()), 500, 1000 + len(
        (tree / "proj-a" / "target" / "CACHEDIR.TAG").read_text()))


def test_clean_deletes_only_after_confirmation(tree: Path, capsys: pytest.CaptureFixture[str],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO("n\n"))
    assert main(["clean", str(tree)]) == 0
    assert "nothing deleted" in capsys.readouterr().out
    assert (tree / "proj-a" / "target").exists()
    assert main(["clean", "--dry-run", str(tree)]) == 0
    assert (tree / "proj-a" / "target").exists()
    monkeypatch.setattr("sys.stdin", io.StringIO("y\n"))
    assert main(["clean", str(tree)]) == 0
    out = capsys.readouterr().out
    assert "deleted 2 of 2 target dir(s)" in out
    assert not (tree / "proj-a" / "target").exists()
    assert not (tree / "nested" / "deep" / "proj-b" / "target").exists()
    # decoys untouched, the store's blob too (it was only unlinked from the target dir)
    assert (tree / "decoy" / "target" / "debug").is_dir()
    assert (tree / "other-tool" / "cache" / "CACHEDIR.TAG").exists()
    assert (tree / ".git" / "target").exists()
    store = Store(os.environ["KACHE_CACHE_DIR"])
    assert len(store.integrity.orphan_blobs()) == 1


def test_clean_with_nothing_to_find(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["clean", str(tmp_path)]) == 0
    assert "no cargo target directories under" in capsys.readouterr().out
