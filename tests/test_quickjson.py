"""kache.quickjson must read and write exactly what json does (it calls the same C code
without importing json, which costs the wrapper's hot path ~9 ms)."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kache import quickjson

scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=5)
                      | st.dictionaries(st.text(), inner, max_size=5), max_leaves=30)


@given(values)
def test_dumps_is_json_dumps_compact(value: object) -> None:
    assert quickjson.dumps(value) == json.dumps(value, separators=(",", ":"))
    assert quickjson.dumps(value, sort_keys=True) == json.dumps(value, separators=(",", ":"), sort_keys=True)


@given(values)
def test_loads_reads_what_json_writes(value: object) -> None:
    for text in (json.dumps(value), json.dumps(value, indent=2), f" \n{json.dumps(value)}\t\r\n"):
        assert quickjson.loads(text) == json.loads(text)
        assert quickjson.loads(text.encode()) == json.loads(text.encode())


@given(st.text(max_size=40))
def test_loads_agrees_with_json_on_any_text(text: str) -> None:
    try:
        expected = json.loads(text)
    except (ValueError, RecursionError):
        with pytest.raises((ValueError, RecursionError)):
            quickjson.loads(text)
        return
    got = quickjson.loads(text)
    if isinstance(expected, float) and math.isnan(expected):
        assert math.isnan(got)
    else:
        assert got == expected


@pytest.mark.parametrize("text", ["", " ", "{", '{"a": 1} x', "[1,]", '"\x01"', "nul", '{"a" 1}', "1 2"])
def test_malformed_text_is_a_value_error(text: str) -> None:
    with pytest.raises(ValueError):
        quickjson.loads(text)


def test_default_and_unserialisable_objects() -> None:
    assert quickjson.dumps({"p": frozenset()}, default=lambda o: "set") == '{"p":"set"}'
    with pytest.raises(TypeError, match="not JSON serializable"):
        quickjson.dumps({"p": object()})
    circular: list[object] = []
    circular.append(circular)
    with pytest.raises(ValueError):
        quickjson.dumps(circular)


def test_quote_escapes_like_json() -> None:
    for text in ("plain", 'q"uote\\', "tab\tnl\n", "é ü \u2028 \udcff"):
        assert quickjson.quote(text) == json.dumps(text)
