"""Counts behind the reliability summary that ends every test run (issue 9).

Tests report what they did through :func:`count`; ``tests/conftest.py`` prints the totals
after the run and writes them to ``$KACHE_RELIABILITY_JSON`` when that is set. The
numbers are tallies of real events in this run (a build that ran, a fault that was
injected, a hostile input that was fed), never constants: a test that asserts
"no wrong artifact" also counts the check, so a failure shows in both places.

Counters:

``faults injected``          a fault was put in kache's way (kill -9, ENOSPC, corruption …)
``builds run``               a cargo build/check/test through kache that must succeed
``builds failed``            one of those that did not
``artifacts checked``        an output checked against a build without kache
``wrong artifacts served``   one of those that differed
``hostile inputs tried``     an input crafted or generated to break kache
``hostile inputs accepted``  one of those that kache took as valid when it must not
"""

from __future__ import annotations

import json
import os
from collections import Counter

__all__ = ["COUNTS", "NAMES", "count", "summary", "write_json"]

NAMES = (
    "faults injected",
    "builds run",
    "builds failed",
    "artifacts checked",
    "wrong artifacts served",
    "hostile inputs tried",
    "hostile inputs accepted",
)

COUNTS: Counter[str] = Counter()


def count(name: str, n: int = 1) -> None:
    if name not in NAMES:
        raise KeyError(f"unknown reliability counter {name!r}; one of {NAMES}")
    COUNTS[name] += n


def summary() -> str:
    return " · ".join(f"{name}: {COUNTS[name]}" for name in NAMES)


def write_json(path: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump({name: COUNTS[name] for name in NAMES}, f, indent=2)
        f.write("\n")


def enabled() -> bool:
    return any(COUNTS.values())


def env_path() -> str | None:
    return os.environ.get("KACHE_RELIABILITY_JSON") or None
