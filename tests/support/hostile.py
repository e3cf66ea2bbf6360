"""Hostile input (issue 9): generated and crafted input that tries to break kache.

Helpers shared by the hostile-input tests (tests/hostile/ and elsewhere), so that every
input fed counts as "hostile inputs tried" and every one kache took as valid when it must
refuse it counts as "hostile inputs accepted" (and fails the test):

``tried()``          count one input fed to kache (call it once per hypothesis example,
                     inside the test body, and once per crafted input);
``accepted(why)``    count an input kache took as valid, and fail the test;
``refused(E, m)``    ``pytest.raises`` that also counts: tried on entry, accepted when
                     nothing was raised.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

import pytest

from tests.support import reliability

__all__ = ["accepted", "refused", "tried"]


def tried(n: int = 1) -> None:
    """Count ``n`` hostile inputs fed to kache."""
    reliability.count("hostile inputs tried", n)


def accepted(why: str) -> NoReturn:
    """kache took a hostile input as valid: count it and fail the test."""
    reliability.count("hostile inputs accepted")
    pytest.fail(f"hostile input accepted: {why}")


@contextmanager
def refused(
    exc: type[BaseException] | tuple[type[BaseException], ...], match: str | None = None
) -> Iterator[Any]:
    """``pytest.raises(exc, match=match)`` for one hostile input: counts it as tried, and
    as accepted when the body raised nothing (a wrong message fails without counting)."""
    tried()
    try:
        with pytest.raises(exc, match=match) as info:
            yield info
    except pytest.fail.Exception:
        reliability.count("hostile inputs accepted")
        raise
