"""kache.tui.monitor.model: folding events, the hit-rate line, polling, the daemon's line."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from kache.store.events import Tail
from kache.tui.monitor import model
from tests.support.entries import event


def test_the_board_groups_outcomes_as_kache_stats_does() -> None:
    board = model.Board()
    outcomes = ("local_hit", "remote_hit", "prefetch_hit", "miss", "dup", "passthrough", "error", "new")
    lines = [{"t": 60.0, "crate": "a", "outcome": o, "saved_ms": 10, "root": "/ws"} for o in outcomes]
    assert board.add([*lines, {"crate": "no time"}, {"t": 1.0}]) == 8
    t = board.total
    assert (t.hits, t.misses, t.passthrough, t.errors, t.saved_ms) == (3, 2, 1, 2, 30)
    assert board.remote_hits == 2
    assert board.buckets == {1: [3, 5]}
    assert board.projects["/ws"].calls == 8 and board.crates["a"].hit_rate == 3 / 5


def test_the_hit_rate_line_has_one_step_per_minute_oldest_first() -> None:
    buckets = {10: [1, 2], 12: [3, 3]}
    assert model.hit_rate_series(buckets, now=12 * 60 + 5, n=4) == [None, 0.5, None, 1.0]


def test_a_poll_of_a_missing_store_is_empty_not_an_error(tmp_path: Path) -> None:
    board = model.Board()
    root = str(tmp_path / "nothing")
    result = model.poll(board, Tail(root), root, lambda _root: None)
    assert (result.new_events, result.totals.exists, result.daemon, result.error) == (0, False, None, None)


def test_a_poll_folds_only_what_was_appended(tmp_path: Path) -> None:
    board, root = model.Board(), str(tmp_path)
    tail = Tail(root)
    event(root, "miss", "a", t=1.0)
    assert model.poll(board, tail, root, lambda _root: None).new_events == 1
    event(root, "local_hit", "a", t=2.0)
    assert model.poll(board, tail, root, lambda _root: None).new_events == 1
    assert board.total.calls == 2 and [e.outcome for e in board.events()] == ["local_hit", "miss"]


def test_the_daemon_line() -> None:
    assert model.daemon_line(None) == "daemon: not running"
    assert model.daemon_line({"pid": 7, "uptime_s": 30, "queue": 0, "uploads_done": 2, "uploads_failed": 0,
                              "downloads": 1, "prefetches": 0, "last_error": None, "remote": None}) == (
        "daemon: pid 7, up 30.0s · queue 0 · uploaded 2 · downloaded 1 · no remote")


def test_daemon_status_asks_the_client_and_copes_without_one(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from kache.daemon import client

    asked = []

    def request(root: str, message: dict, timeout: float) -> dict | None:
        asked.append((root, message, timeout))
        return {"ok": True, "pid": 1}

    monkeypatch.setattr(client, "request", request)
    assert model.daemon_status("/store") == {"ok": True, "pid": 1}
    assert asked == [("/store", {"v": 1, "op": "status"}, 0.2)]
    monkeypatch.setattr(client, "request", lambda *a, **k: {"ok": False, "error": "bad"})
    assert model.daemon_status("/store") is None
    monkeypatch.setattr(client, "request", lambda *a, **k: {"ok": True, "pid": 2})
    monkeypatch.setitem(sys.modules, "kache.daemon.client", None)  # a kache without the daemon
    monkeypatch.delattr(sys.modules["kache.daemon"], "client")
    assert model.daemon_status("/store") is None


def test_without_a_daemon_the_status_is_none(tmp_path: Path) -> None:
    assert model.daemon_status(str(tmp_path)) is None
