from __future__ import annotations

import pytest

from kache.units import UnitError, format_duration, format_size, parse_duration, parse_size
from tests.support.hostile import refused


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("50GB", 50 * 10**9),
        ("50gb", 50 * 10**9),
        ("50G", 50 * 10**9),
        ("512MiB", 512 * 2**20),
        ("1.5KiB", 1536),
        ("10 kB", 10_000),
        ("2TiB", 2 * 2**40),
        ("123", 123),
        ("0", 0),
        (4096, 4096),
    ],
)
def test_sizes_parse_to_bytes(text: object, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.hostile
@pytest.mark.parametrize("bad", ["lots", "", "GB", "-5GB", "5 XB", "1e9", True, -1, None, 3.5, "5GB5"])
def test_bad_sizes_say_what_was_expected(bad: object) -> None:
    with refused(UnitError) as e:
        parse_size(bad)
    assert str(e.value) == f"expected a size such as 50GB, 512MiB or a number of bytes{' between 0 and 1EiB' if bad == -1 else ''}, got {bad!r}"


@pytest.mark.parametrize(
    ("text", "expected"),
    [("7d", 7 * 86400), ("24h", 86400), ("30m", 1800), ("45s", 45), ("1h30m", 5400),
     ("2w", 14 * 86400), ("90", 90), (90, 90), ("1.5h", 5400), ("1D", 86400)],
)
def test_durations_parse_to_seconds(text: object, expected: float) -> None:
    assert parse_duration(text) == expected


@pytest.mark.hostile
@pytest.mark.parametrize("bad", ["soon", "", "7x", "h", "-1d", False, -3, None, "1h 30", float("nan"), 10**400])
def test_bad_durations_say_what_was_expected(bad: object) -> None:
    with refused(UnitError, match=r"^expected a duration such as 7d, 24h, 30m, 1h30m or a number of seconds( up to 100 years)?, got "):
        parse_duration(bad)


def test_sizes_and_durations_format_for_people() -> None:
    assert format_size(512) == "512 B"
    assert format_size(1536) == "1.5 KiB"
    assert format_size(50 * 2**30) == "50.0 GiB"
    assert format_duration(0.25) == "250ms"
    assert format_duration(5400) == "1h30m"


@pytest.mark.hostile
def test_absurdly_long_numbers_are_rejected_not_crashed() -> None:
    with refused(UnitError):
        parse_size("9" * 400 + "GB")
    with refused(UnitError):
        parse_duration("9" * 400 + "d")
