"""Parallel rustc calls creating a new store at once (the first build on a machine):
every one opens it, none gives up on "database is locked", and it ends in WAL mode."""

from __future__ import annotations

import multiprocessing
import os
import sqlite3
import time
from pathlib import Path

from kache.store.store import Store

PROCESSES = 8
ROUNDS = 30


def _open_and_write(args: tuple[str, float, int]) -> str | None:
    root, start, task = args
    while time.time() < start:  # all at once, as cargo's parallel jobs do
        pass
    store = Store(root)
    try:
        with store.transaction():
            store.set_tool_memo(f"probe-{task}", "v")  # not the pid: a pool worker may run two tasks
        return None
    except Exception as e:  # noqa: BLE001 - reported to the test
        return f"{type(e).__name__}: {e}"
    finally:
        store.close()


def test_parallel_calls_creating_a_store_all_open_it(tmp_path: Path) -> None:
    failures = []
    with multiprocessing.get_context("fork").Pool(PROCESSES) as pool:
        for n in range(ROUNDS):
            root = str(tmp_path / f"store-{n}")
            start = time.time() + 0.05
            failures += [f for f in pool.map(_open_and_write, [(root, start, i) for i in range(PROCESSES)]) if f]
            db = sqlite3.connect(os.path.join(root, "index.db"))
            try:
                assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
                assert db.execute("SELECT COUNT(*) FROM tool_memo").fetchone()[0] == PROCESSES
            finally:
                db.close()
    assert failures == []
