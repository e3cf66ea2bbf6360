"""The protocol module: framing both ways, the line limits, the field checks, and that
it stays cheap to import (the wrapper imports it on every call)."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kache.daemon import wire


def test_lines_are_compact_ascii_json_with_the_version_added() -> None:
    assert wire.request_line({"op": "status"}) == b'{"v":1,"op":"status"}\n'
    assert wire.request_line({"v": 7, "op": "x"}) == b'{"v":7,"op":"x"}\n'
    text = {"op": "hit", "cwd": "/tmp/é\udcff"}  # a path that is not UTF-8, kept by surrogateescape
    assert json.loads(wire.request_line(text)) == {"v": 1, **text}
    reply = {"ok": True, "at": object, "n": 1.5}
    assert wire.reply_line(reply) == json.dumps(reply, separators=(",", ":"), default=str).encode() + b"\n"
    with pytest.raises(TypeError):
        wire.request_line({"op": object()})


def pair() -> tuple[socket.socket, socket.socket]:
    a, b = socket.socketpair()
    return a, b


def test_read_line_keeps_what_follows_for_the_next_call() -> None:
    a, b = pair()
    with a, b:
        b.sendall(b'{"v":1}\n{"v":2}\npartial')
        b.shutdown(socket.SHUT_WR)
        pending = bytearray()
        assert wire.read_line(a, pending) == b'{"v":1}\n'
        assert wire.read_line(a, pending) == b'{"v":2}\n'
        assert wire.read_line(a, pending) == b"partial"
        assert wire.read_line(a, pending) == b""


def test_an_over_long_line_comes_back_cut_without_its_newline() -> None:
    a, b = pair()
    with a, b:
        b.sendall(b"x" * 100)
        assert wire.read_line(a, bytearray(), limit=10) == b"x" * 12


def test_a_reply_longer_than_the_limit_is_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(wire, "MAX_REPLY", 10)
    for size, reply in [(10, {"a": "x" * 2}), (11, None)]:
        a, b = pair()
        with a, b:
            b.sendall(json.dumps({"a": "x" * (size - 8)}).replace(" ", "").encode() + b"\n")
            assert wire.read_reply(a, 1.0) == (reply if reply is None else {"a": "x" * (size - 8)})


def test_a_line_not_complete_in_time_is_a_timeout() -> None:
    a, b = pair()
    with a, b:
        b.sendall(b'{"half":')
        with pytest.raises(TimeoutError):
            wire.read_line(a, bytearray(), timeout=0.05)


@pytest.mark.parametrize("sent, reply", [
    (b'{"ok":true,"hit":false}\n', {"ok": True, "hit": False}),
    (b'{"ok":true}', None),  # the daemon went away mid-line
    (b"[1,2]\n", None),
    (b"not json\n", None),
    (b'{"ok":"\xff"}\n', None),
])
def test_read_reply_is_one_object_or_none(sent: bytes, reply: dict | None) -> None:
    a, b = pair()
    with a, b:
        b.sendall(sent)
        b.shutdown(socket.SHUT_WR)
        assert wire.read_reply(a, 1.0) == reply


def test_depth_is_counted_without_recursion() -> None:
    assert not wire.too_deep({"a": [1, {"b": 2}]}, 3)
    assert wire.too_deep({"a": [1, {"b": [2]}]}, 3)
    deep: list = []
    for _ in range(100_000):
        deep = [deep]
    assert wire.too_deep(deep)


@given(st.text(alphabet="0123456789abcdefABCDEF-_.zé/", max_size=140))
def test_the_field_checks_are_the_protocol_regular_expressions(value: str) -> None:
    assert wire.valid_key(value) == (re.fullmatch(r"[0-9a-f]{16,128}", value) is not None)
    assert wire.valid_crate(value) == (re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_-]{0,127}", value) is not None)


def test_the_module_imports_only_cheap_standard_modules() -> None:
    code = ("import sys; before = set(sys.modules); import kache.daemon.wire; "
            "print(sorted(set(sys.modules) - before))")
    out = subprocess.run([sys.executable, "-S", "-c", f"import sys; sys.path[:0] = {sys.path!r}; {code}"],
                         capture_output=True, text=True, check=True)
    startup = {"os", "os.path", "posixpath", "genericpath", "stat", "_stat", "_collections_abc"}  # any start imports them
    assert sorted(set(eval(out.stdout)) - startup) == [
        "__future__", "_json", "kache", "kache.daemon", "kache.daemon.wire", "kache.quickjson", "kache.store",
        "kache.store.layout"]
