"""JSON for the wrapper's hot path, without ``import json``.

``import json`` costs a hit ~9 ms or more: ``json.decoder`` imports ``re``, which
imports ``enum``, ``functools`` and ``collections``. The parsing and printing
themselves are done by CPython's C accelerator ``_json`` (what ``json`` uses too);
this module calls it directly, with the same settings ``json.loads`` and
``json.dumps(..., separators=(",", ":"))`` use, so the text is the same byte for
byte. Where ``_json`` is missing (not CPython) it falls back to ``json``.

Errors are ``ValueError`` (decoding) and ``TypeError`` (an object JSON cannot hold),
as with ``json``.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

__all__ = ["loads", "dumps", "quote"]

_WHITESPACE = " \t\n\r"  # JSON's whitespace: what json.decoder's WHITESPACE regex matches

try:
    from _json import encode_basestring_ascii as _quote_ascii
    from _json import make_encoder as _make_encoder
    from _json import make_scanner as _make_scanner
    _HAVE_C_JSON = True
except ImportError:  # pragma: no cover - CPython always has _json
    _HAVE_C_JSON = False


def _no_default(o: object) -> Any:
    raise TypeError(f"Object of type {type(o).__name__} is not JSON serializable")


class _Decoding:
    """The attributes ``_json.make_scanner`` reads (json.JSONDecoder's, with its defaults)."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = {"-Infinity": float("-inf"), "Infinity": float("inf"), "NaN": float("nan")}.__getitem__


if _HAVE_C_JSON:
    # typeshed types the context as make_scanner itself; any object with the attributes works
    _scan = _make_scanner(_Decoding())  # type: ignore[arg-type]

    def loads(s: str | bytes) -> Any:
        """``json.loads(s)`` (UTF-8 when ``s`` is bytes)."""
        if not isinstance(s, str):
            s = bytes(s).decode("utf-8")
        start = len(s) - len(s.lstrip(_WHITESPACE))
        try:
            obj, end = _scan(s, start)
        except StopIteration as e:
            raise ValueError(f"Expecting value: char {e.value}") from None
        if s[end:].strip(_WHITESPACE):
            raise ValueError(f"Extra data: char {end}")
        return obj

    def dumps(obj: object, *, sort_keys: bool = False, default: Callable[[Any], Any] | None = None) -> str:
        """``json.dumps(obj, separators=(",", ":"), sort_keys=..., default=...)``."""
        encode = _make_encoder({}, default or _no_default, _quote_ascii, None, ":", ",", sort_keys, False, True)
        return "".join(encode(obj, 0))

    def quote(text: str) -> str:
        """``json.dumps(text)`` for a string: quoted and escaped, ASCII only."""
        return _quote_ascii(text)

else:  # pragma: no cover
    import json as _json_module

    def loads(s: str | bytes) -> Any:
        return _json_module.loads(s)

    def dumps(obj: object, *, sort_keys: bool = False, default: Callable[[Any], Any] | None = None) -> str:
        return _json_module.dumps(obj, separators=(",", ":"), sort_keys=sort_keys, default=default)

    def quote(text: str) -> str:
        return _json_module.dumps(text)
