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


def test_clean_deletes_the_directories_picked_by_number(tree: Path, capsys: pytest.CaptureFixture[str],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO("9\nproj\n2\n"))
    assert main(["clean", str(tree)]) == 0
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert lines[0].split() == ["#", "target", "dir", "size", "in", "kache", "store", "last", "used"]
    assert lines[1].split()[:2] == ["1", str(tree / "nested" / "deep" / "proj-b" / "target")]
    assert lines[2].split()[:2] == ["2", str(tree / "proj-a" / "target")]
    assert lines[3:5] == ["", lines[4]] and lines[4].startswith("2 target dir(s), ")
    ask = "Delete which? (numbers such as 1,2 or 1-2, all, none): "
    assert lines[5:] == [
        f"{ask}Error: 9: the list has numbers 1 to 2",
        f"{ask}Error: 'proj' is not a number from the list; answer with numbers 1 to 2 (such as 1,2 or 1-2), all "
        "or none",
        ask, "deleted 1 of 1 target dir(s)"]
    assert not (tree / "proj-a" / "target").exists()
    assert (tree / "nested" / "deep" / "proj-b" / "target").is_dir()


@pytest.mark.parametrize(("answer", "left"), [("none\n", 2), ("\n", 2), ("1,2\n", 0), ("all\n", 0), ("1 2\n", 0),
                                              ("1-2\n", 0)])
def test_clean_choice_answers(tree: Path, answer: str, left: int, capsys: pytest.CaptureFixture[str],
                              monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO(answer))
    assert main(["clean", str(tree)]) == 0
    out = capsys.readouterr().out
    assert out.endswith("nothing deleted\n" if left == 2 else "deleted 2 of 2 target dir(s)\n")
    targets = [tree / "proj-a" / "target", tree / "nested" / "deep" / "proj-b" / "target"]
    assert sum(t.exists() for t in targets) == left


def test_clean_yes_deletes_all_and_a_named_target_dir_only_that_one(
        tree: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["clean", "--yes", str(tree / "proj-a" / "target")]) == 0
    assert capsys.readouterr().out.endswith("deleted 1 of 1 target dir(s)\n")
    assert (tree / "nested" / "deep" / "proj-b" / "target").is_dir()
    assert main(["clean", "-y", str(tree)]) == 0
    assert capsys.readouterr().out.endswith("deleted 1 of 1 target dir(s)\n")
    assert not (tree / "nested" / "deep" / "proj-b" / "target").exists()
