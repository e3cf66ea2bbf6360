"""kache.store.events.Tail: a monitor follows the log through appends, rotation and purges."""

from __future__ import annotations

import os
from pathlib import Path

from kache.store import events
from kache.store.events import Tail


def _crates(evs: list[dict]) -> list[str]:
    return [e["crate"] for e in evs]


def test_first_read_returns_the_rotated_file_then_the_current_one(tmp_path: Path) -> None:
    root = str(tmp_path)
    (tmp_path / "events.1.jsonl").write_text('{"t": 1, "crate": "old", "outcome": "miss"}\n')
    events.append(root, {"t": 2, "crate": "new", "outcome": "local_hit"})
    tail = Tail(root)
    assert _crates(tail.read()) == ["old", "new"]
    assert tail.read() == []


def test_only_appended_whole_lines_are_returned(tmp_path: Path) -> None:
    root = str(tmp_path)
    tail = Tail(root)
    assert tail.read() == []  # no log yet
    events.append(root, {"t": 1, "crate": "a", "outcome": "miss"})
    assert _crates(tail.read()) == ["a"]
    with open(tmp_path / "events.jsonl", "ab") as f:
        f.write(b'{"t": 2, "crate": "b", "outco')  # a writer mid-line
    assert tail.read() == []
    with open(tmp_path / "events.jsonl", "ab") as f:
        f.write(b'me": "dup"}\nnot json\n')
    assert _crates(tail.read()) == ["b"]


def test_rotation_finishes_the_old_file_then_reads_the_new_one(tmp_path: Path) -> None:
    root = str(tmp_path)
    events.append(root, {"t": 1, "crate": "a", "outcome": "miss"})
    tail = Tail(root)
    assert _crates(tail.read()) == ["a"]
    events.append(root, {"t": 2, "crate": "b", "outcome": "miss"})  # written just before rotation
    os.replace(tmp_path / "events.jsonl", tmp_path / "events.1.jsonl")
    events.append(root, {"t": 3, "crate": "c", "outcome": "local_hit"})
    assert _crates(tail.read()) == ["b", "c"]
    assert tail.read() == []


def test_a_log_that_shrank_is_read_from_its_start(tmp_path: Path) -> None:
    root = str(tmp_path)
    for i in range(3):
        events.append(root, {"t": i, "crate": f"c{i}", "outcome": "miss"})
    tail = Tail(root)
    assert len(tail.read()) == 3
    with open(tmp_path / "events.jsonl", "r+b") as f:
        f.truncate(0)
    events.append(root, {"t": 9, "crate": "fresh", "outcome": "miss"})
    assert _crates(tail.read()) == ["fresh"]


def test_since_drops_older_events(tmp_path: Path) -> None:
    root = str(tmp_path)
    events.append(root, {"t": 100, "crate": "old", "outcome": "miss"})
    events.append(root, {"t": 200, "crate": "new", "outcome": "miss"})
    assert _crates(Tail(root, since=150).read()) == ["new"]
