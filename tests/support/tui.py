"""The TUI tests' world: a store seeded with entries and events at a frozen time, and a
headless pilot. No async plugin is needed: :func:`drive` runs ``app.run_test()`` under
``asyncio.run``."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from kache.store.store import Store
from tests.support.entries import add_entry, event

NOW = 1_700_000_000.0
"""The frozen clock of every monitor test (2023-11-14T22:13:20Z)."""

# (seconds before NOW, outcome, crate, fields): a cold build, then warm ones in two workspaces
EVENTS: list[tuple[float, str, str, dict[str, Any]]] = [
    (600, "miss", "serde", {"ms": 2300.0, "bytes": 150_000, "root": "/ws/app"}),
    (590, "miss", "tokio", {"ms": 5400.0, "bytes": 400_000, "root": "/ws/app"}),
    (580, "passthrough", "build_script_build", {"ms": 3.0, "reason": "executable", "root": "/ws/app"}),
    (300, "local_hit", "serde", {"ms": 12.0, "bytes": 150_000, "saved_ms": 2300, "root": "/ws/app"}),
    (290, "local_hit", "tokio", {"ms": 20.0, "bytes": 400_000, "saved_ms": 5400, "root": "/ws/tool"}),
    (200, "remote_hit", "regex", {"ms": 180.0, "bytes": 90_000, "saved_ms": 4000, "root": "/ws/tool"}),
    (120, "error", "app", {"ms": 40.0, "reason": "store: OSError", "root": "/ws/app"}),
    (60, "dup", "app", {"ms": 900.0, "bytes": 40_000, "root": "/ws/app"}),
    (30, "local_hit", "app", {"ms": 8.0, "bytes": 40_000, "saved_ms": 900, "root": "/ws/app"}),
    (5, "prefetch_hit", "regex_syntax", {"ms": 9.0, "bytes": 120_000, "saved_ms": 3000, "root": "/ws/tool"}),
]


def seed(root: str) -> None:
    """Three entries (two sharing a blob) and the events above."""
    store = Store(root)
    try:
        add_entry(store, "serde", key="a" * 64, blobs=[b"x" * 150_000, b"shared" * 1000], created=NOW - 3600)
        add_entry(store, "tokio", key="b" * 64, blobs=[b"y" * 400_000, b"shared" * 1000], created=NOW - 3600)
        add_entry(store, "app", key="c" * 64, blobs=[b"z" * 40_000], created=NOW - 3600)
    finally:
        store.close()
    for ago, outcome, crate, fields in EVENTS:
        event(root, outcome, crate, t=NOW - ago, **fields)


Pilot = Any


def drive(app: Any, body: Callable[[Pilot], Awaitable[None]], size: tuple[int, int] = (80, 24)) -> None:
    """Run ``app`` headless at ``size`` and hand its pilot to ``body``."""

    async def main() -> None:
        async with app.run_test(size=size) as pilot:
            await pilot.pause()
            await body(pilot)

    asyncio.run(main())


async def pilot_until(pilot: Pilot, condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Let the app run until ``condition()`` holds (fails the test after ``timeout`` s)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await pilot.pause(0.02)
