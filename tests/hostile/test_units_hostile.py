"""Sizes and durations (kache.units) fed what no person means: other scripts' digits,
huge exponents, signs, NaN and infinities, and long runs of text.

Only ASCII digits are numbers here; anything else is a UnitError, never another
exception and never a value.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kache.units import MAX_DURATION, MAX_SIZE, UnitError, parse_duration, parse_size
from tests.support.hostile import accepted, refused, tried

pytestmark = pytest.mark.hostile

# Digits of other scripts that Python's \d and float() read as numbers.
UNICODE_DIGITS = ["٣", "５", "๑", "߀", "१", "𝟕", "٠"]

# fmt: off
BAD_TEXT = [
    *(f"{d}GB" for d in UNICODE_DIGITS),
    *(f"1{d}" for d in UNICODE_DIGITS),
    "５0MB", "1٠s", "٣d", "１", "１h",
    "\u00a050GB", "50GB\u2003", "\u20281h",  # non-ASCII spaces
    "1e9", "1e400", "1E+400GB", "9" * 400 + "GB", "9" * 5000, "0." + "9" * 5000 + "e999",
    "-5GB", "-0", "-1d", "+5GB", "+1h", "−5GB",  # U+2212 minus
    "nan", "NaN", "inf", "-inf", "Infinity", "nanGB", "infd", "1nan",
    "0x10", "0b1", "1_000", "1,5GB", "1.GB", ".5GB", "1..5GB", "1.5.5h",
    "", " ", "\x00", "1\x00GB", "5GB\n5GB", "GB", "h", "5 X B", "5 GB GB",
]
BAD_VALUES: list[object] = [
    float("nan"), float("inf"), float("-inf"), -1, -0.5, 10**400, -(10**400), MAX_SIZE + 1,
    True, False, None, [], {}, b"5GB", 5j,
]
# fmt: on


@pytest.mark.parametrize("text", BAD_TEXT, ids=ascii)
def test_a_size_in_anything_but_ascii_digits_and_a_unit_is_a_unit_error(text: str) -> None:
    with refused(UnitError, match=r"^expected a size such as 50GB"):
        parse_size(text)


@pytest.mark.parametrize("text", BAD_TEXT, ids=ascii)
def test_a_duration_in_anything_but_ascii_digits_and_units_is_a_unit_error(text: str) -> None:
    with refused(UnitError, match=r"^expected a duration such as 7d"):
        parse_duration(text)


@pytest.mark.parametrize("value", BAD_VALUES, ids=repr)
def test_non_numbers_negatives_and_infinities_are_unit_errors(value: object) -> None:
    with refused(UnitError):
        parse_size(value)
    with refused(UnitError):
        parse_duration(value)


def test_values_just_past_the_documented_caps_are_unit_errors() -> None:
    assert parse_size(MAX_SIZE) == MAX_SIZE
    assert parse_size("1024PiB") == MAX_SIZE
    assert parse_duration(MAX_DURATION) == MAX_DURATION
    with refused(UnitError, match="up to 100 years"):
        parse_duration(MAX_DURATION + 1)
    with refused(UnitError, match="up to 1EiB"):
        parse_size("1024.001PiB")


@settings(max_examples=300, deadline=None)
@given(text=st.text(st.characters(categories=("Nd", "Zs", "Pd", "Sm", "Ll", "Lu", "Po", "Cc")), max_size=24))
def test_a_size_is_a_unit_error_or_an_ascii_number_of_bytes(text: str) -> None:
    tried()
    try:
        value = parse_size(text)
    except UnitError:
        return
    if not text.isascii():
        accepted(f"parse_size({text!r}) = {value}")
    assert isinstance(value, int) and 0 <= value <= MAX_SIZE


@settings(max_examples=300, deadline=None)
@given(text=st.text(st.characters(categories=("Nd", "Zs", "Pd", "Sm", "Ll", "Lu", "Po", "Cc")), max_size=24))
def test_a_duration_is_a_unit_error_or_an_ascii_number_of_seconds(text: str) -> None:
    tried()
    try:
        value = parse_duration(text)
    except UnitError:
        return
    if not text.isascii():
        accepted(f"parse_duration({text!r}) = {value}")
    assert isinstance(value, float) and math.isfinite(value) and 0 <= value <= MAX_DURATION


@settings(max_examples=200, deadline=None)
@given(
    value=st.one_of(
        st.floats(),
        st.integers(),
        st.decimals(allow_nan=True).map(str),
        st.floats().map(repr),
        st.integers().map(str),
    )
)
def test_any_number_or_its_spelling_is_in_range_or_a_unit_error(value: object) -> None:
    tried()
    for parse, cap in ((parse_size, MAX_SIZE), (parse_duration, MAX_DURATION)):
        try:
            got = parse(value)
        except UnitError:
            continue
        if not (math.isfinite(got) and 0 <= got <= cap):
            accepted(f"{parse.__name__}({value!r}) = {got!r}")


def test_long_runs_of_text_are_read_in_linear_time_or_refused() -> None:
    """No regular expression backtracks for ever: each of these returns (the pytest
    timeout would stop a catastrophic one)."""
    inputs = ["1" * 200_000 + "x", "1s" * 100_000, " " * 200_000 + "1", "1." * 100_000, "1h " * 100_000 + "!"]
    for text in inputs:
        for parse in (parse_size, parse_duration):
            tried()
            try:
                parse(text)
            except UnitError:
                pass
