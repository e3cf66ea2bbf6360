"""Polling with a hang guard: the one way tests wait for something to happen."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def wait_for(predicate: Callable[[], Any], timeout: float = 5.0, what: str = "condition",
             interval: float = 0.01) -> Any:
    """Poll ``predicate`` every ``interval`` seconds until it returns something true, and
    return that; fail naming ``what`` after ``timeout`` seconds (a hang guard, never a
    timing assertion)."""
    end = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)
