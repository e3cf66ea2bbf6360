"""Human sizes and durations, parsed and printed in one place.

Sizes: a number of bytes (``1048576``) or a number with a unit. Decimal units
(``kB``/``KB``, ``MB``, ``GB``, ``TB``, ``PB``) are powers of 1000, binary units
(``KiB``, ``MiB``, ``GiB``, ``TiB``, ``PiB``) powers of 1024, as in cargo and
systemd. The ``B`` may be left off (``50G``) and case does not matter.

Durations: a number of seconds (``90``) or one or more number-unit pairs,
``w`` ``d`` ``h`` ``m`` ``s`` (``7d``, ``24h``, ``30m``, ``1h30m``).
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["UnitError", "parse_size", "parse_duration", "format_size", "format_duration", "format_ago", "SIZE_UNITS", "SIZE_FACTORS",
           "AGO_UNITS"]


class UnitError(ValueError):
    """A size or duration that cannot be read; the message says what was expected."""


SIZE_EXPECTED = "a size such as 50GB, 512MiB or a number of bytes"
DURATION_EXPECTED = "a duration such as 7d, 24h, 30m, 1h30m or a number of seconds"

SIZE_FACTORS = {
    "": 1,
    "b": 1,
    "k": 1000, "kb": 1000, "kib": 1024, "ki": 1024,
    "m": 1000**2, "mb": 1000**2, "mib": 1024**2, "mi": 1024**2,
    "g": 1000**3, "gb": 1000**3, "gib": 1024**3, "gi": 1024**3,
    "t": 1000**4, "tb": 1000**4, "tib": 1024**4, "ti": 1024**4,
    "p": 1000**5, "pb": 1000**5, "pib": 1024**5, "pi": 1024**5,
}
# ASCII only (re.ASCII): Python's \d and float() also take other scripts' digits ("٣GB",
# "５0MB"), and \s takes any Unicode space; a config value is written in ASCII.
_DURATION_UNITS = {"w": 7 * 86400, "d": 86400, "h": 3600, "m": 60, "s": 1}
_PATTERNS: dict[str, Any] = {}


def _pattern(name: str) -> Any:
    """The compiled regexes, made on first use: ``re`` costs the wrapper's hot path ~6 ms
    to import, and it reads memoised settings that need no parsing."""
    if not _PATTERNS:
        import re

        _PATTERNS.update(
            size=re.compile(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", re.ASCII),
            duration_part=re.compile(r"(\d+(?:\.\d+)?)\s*([wdhms])", re.IGNORECASE | re.ASCII),
            duration=re.compile(r"\s*(?:\d+(?:\.\d+)?\s*[wdhms]\s*)+", re.IGNORECASE | re.ASCII),
            seconds=re.compile(r"\s*\d+(?:\.\d+)?\s*", re.ASCII),
        )
    return _PATTERNS[name]

# Anything past this is a typo, not a disk: 1 EiB.
MAX_SIZE = 1024**6
MAX_DURATION = 100 * 365 * 86400


def parse_size(value: object) -> int:
    """Return a size in bytes from ``int`` or text like ``"50GB"``."""
    if isinstance(value, bool):
        raise UnitError(f"expected {SIZE_EXPECTED}, got {value!r}")
    if isinstance(value, int):
        if value < 0 or value > MAX_SIZE:
            raise UnitError(f"expected {SIZE_EXPECTED} between 0 and 1EiB, got {value!r}")
        return value
    if not isinstance(value, str):
        raise UnitError(f"expected {SIZE_EXPECTED}, got {value!r}")
    m = _pattern("size").fullmatch(value)
    unit = m.group(2).lower() if m else None
    if m is None or unit not in SIZE_FACTORS:
        raise UnitError(f"expected {SIZE_EXPECTED}, got {value!r}")
    number = float(m.group(1)) * SIZE_FACTORS[unit]
    if number > MAX_SIZE:
        raise UnitError(f"expected {SIZE_EXPECTED} up to 1EiB, got {value!r}")
    return int(number)


def parse_duration(value: object) -> float:
    """Return a duration in seconds from a number or text like ``"7d"``."""
    if isinstance(value, bool):
        raise UnitError(f"expected {DURATION_EXPECTED}, got {value!r}")
    if isinstance(value, (int, float)):
        if not 0 <= value <= MAX_DURATION:  # also rejects NaN
            raise UnitError(f"expected {DURATION_EXPECTED} up to 100 years, got {value!r}")
        return float(value)
    if not isinstance(value, str):
        raise UnitError(f"expected {DURATION_EXPECTED}, got {value!r}")
    if _pattern("seconds").fullmatch(value):
        seconds = float(value)
    elif _pattern("duration").fullmatch(value):
        seconds = float(sum(float(n) * _DURATION_UNITS[u.lower()] for n, u in _pattern("duration_part").findall(value)))
    else:
        raise UnitError(f"expected {DURATION_EXPECTED}, got {value!r}")
    if seconds > MAX_DURATION:
        raise UnitError(f"expected {DURATION_EXPECTED} up to 100 years, got {value!r}")
    return seconds


# What format_size and format_ago write (kache.store.entries writes the same in SQL).
SIZE_UNITS = ("B", "KiB", "MiB", "GiB", "TiB")
AGO_UNITS = ((365 * 86400, "y"), (7 * 86400, "w"), (86400, "d"), (3600, "h"), (60, "m"))


def format_size(n: int | float) -> str:
    """``1536`` → ``"1.5 KiB"``; binary units, one decimal."""
    size = float(n)
    for unit in SIZE_UNITS:
        if abs(size) < 1024 or unit == SIZE_UNITS[-1]:
            return f"{int(size)} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def format_duration(seconds: float) -> str:
    """``5400`` → ``"1h30m"``; ``0.25`` → ``"250ms"``."""
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.1f}s"
    rest = int(seconds)
    parts = []
    for unit, size in _DURATION_UNITS.items():
        if rest >= size:
            parts.append(f"{rest // size}{unit}")
            rest %= size
    return "".join(parts)


def format_ago(seconds: float) -> str:
    """``190`` → ``"3m ago"``: the largest whole unit (``s`` ``m`` ``h`` ``d`` ``w`` ``y``)."""
    seconds = max(0.0, seconds)
    for size, unit in AGO_UNITS:
        if seconds >= size:
            return f"{int(seconds // size)}{unit} ago"
    return f"{int(seconds)}s ago"
