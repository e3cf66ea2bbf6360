"""The daemon's socket fed what no kache client sends: generated lines (random bytes,
random JSON values, requests with fields of the wrong type, huge numbers, unknown ops,
deep nesting), lines past the protocol's limit, and many connections that send half a
line and hang.

What must hold (kache.daemon.wire): every line gets one reply, ``{"ok": false,
"error": …}`` for anything the protocol refuses, or the connection is closed; an ``ok``
reply only for a well-formed request; no "internal error" for bad input; the daemon keeps
answering a well-formed ``status`` afterwards, with its threads and memory bounded.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kache.daemon import client, wire
from kache.daemon.server import MAX_CONNECTIONS
from tests.support.daemon import Running
from tests.support.hostile import accepted, tried
from tests.support.waiting import wait_for

pytestmark = pytest.mark.hostile

TIMEOUT = 10.0  # generous: only against hangs


def connect(root: str | Path) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(TIMEOUT)
    s.connect(client.socket_path(root))
    return s


def read_line(s: socket.socket) -> bytes:
    """One reply line, or b"" when the daemon closed the connection first."""
    buf = b""
    try:
        while b"\n" not in buf:
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
    except ConnectionResetError:
        pass
    return buf.split(b"\n", 1)[0] if b"\n" in buf else b""


def exchange(root: str | Path, data: bytes) -> dict[str, Any] | None:
    """Send ``data`` on a new connection; the reply as a dict, or None if it was closed."""
    with connect(root) as s:
        try:
            s.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass
        line = read_line(s)
    if not line:
        return None
    reply = json.loads(line)
    assert isinstance(reply, dict) and isinstance(reply.get("ok"), bool), reply
    return reply


def status_ok(root: str | Path) -> bool:
    reply = exchange(root, b'{"v": 1, "op": "status"}\n')
    return reply is not None and reply["ok"] is True and reply["protocol"] == wire.VERSION


# --------------------------------------------------------------------------- generated lines

_KEY = "0123456789abcdef" * 4
# fmt: off
_json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(10**300), 10**300),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=12),
    st.sampled_from([_KEY, _KEY.upper(), _KEY[:15], "../../etc", "serde", "", "/", "/tmp", "/\0x", "x" * 5000,
                     "s3://fake/artifacts", -1, 0, 2.5, 1e300]),
)
# fmt: on
_json = st.recursive(
    _json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)
_ops = st.one_of(st.sampled_from([op for op in wire.OPS if op != "stop"]), _json.filter(lambda v: v != "stop"))
_requests = st.fixed_dictionaries(
    {"v": st.one_of(st.just(1), _json), "op": _ops},
    optional=dict.fromkeys(["key", "crate", "mkey", "budget_ms", "root", "remote"], _json),
)


def _nest(depth: int) -> bytes:
    return b'{"v": 1, "op": "status", "x": ' + b"[" * depth + b"]" * depth + b"}"


_lines = st.one_of(
    st.binary(max_size=200).filter(lambda b: b"\n" not in b),
    _json.map(lambda v: json.dumps(v).encode()),
    _requests.map(lambda r: json.dumps(r).encode()),
    _requests.map(lambda r: json.dumps(r, ensure_ascii=False).encode("utf-8", "surrogatepass")),
    st.integers(1, 3000).map(_nest),
    # fmt: off
    st.sampled_from(
        [
            b"",
            b" ",
            b"{}",
            b"\xef\xbb\xbf{}",
            b'{"v": 1, "op": "status"}\r',
            b'{"v": 1} {"v": 1}',
            b'{"v": 1, "op": "fetch", "crate": "a", "mkey": "' + _KEY.encode() + b'", "budget_ms": NaN}',
            b'{"v": 1, "op": "fetch", "crate": "a", "mkey": "' + _KEY.encode() + b'", "budget_ms": Infinity}',
            b'{"v": 1, "op": "status", "v": 2}',
            b'{"v": true, "op": "status"}',
        ]
    ),
    # fmt: on
)


def _must_refuse(msg: Any) -> str | None:
    """Why a request must get ``ok: false`` (None when the daemon may accept it)."""
    if not isinstance(msg, dict):
        return "not an object"
    v = msg.get("v")
    if v != 1 or isinstance(v, bool):
        return "wrong version"
    op = msg.get("op")
    if op == "status":
        return None
    if op == "upload":
        return None if wire.valid_key(msg.get("key")) and wire.valid_crate(msg.get("crate")) else "bad key or crate"
    if op == "fetch":
        budget = msg.get("budget_ms", 0)
        good_budget = (
            isinstance(budget, (int, float))
            and not isinstance(budget, bool)
            and budget >= 0
            and budget == budget
        )
        remote = msg.get("remote", "s3://fake/artifacts")
        ok = wire.valid_crate(msg.get("crate")) and wire.valid_key(msg.get("mkey")) and good_budget
        return None if ok and (remote is None or isinstance(remote, str)) else "bad fetch"
    if op == "prefetch":
        root = msg.get("root")
        ok = isinstance(root, str) and root.startswith("/") and "\0" not in root and len(root) <= 4096
        remote = msg.get("remote", "s3://fake/artifacts")
        return None if ok and (remote is None or isinstance(remote, str)) else "bad prefetch"
    return "unknown op"


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(line=_lines)
def test_every_generated_line_gets_an_error_or_a_valid_answer_and_the_daemon_lives_on(
    start_daemon: Callable[..., Running], line: bytes
) -> None:
    d = _daemon(start_daemon)
    tried()
    reply = exchange(d.root, line + b"\n")
    try:
        msg = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        msg = None
    if reply is None:
        # Only a line the daemon could not even decode may be answered by a closed
        # connection (it closes after the error reply; a reset may lose the reply).
        assert msg is None or not isinstance(msg, dict), line[:200]
    elif reply["ok"]:
        why = _must_refuse(msg)
        if why is not None:
            accepted(f"the daemon answered ok to a request it must refuse ({why}): {line[:300]!r} -> {reply}")
    else:
        assert not reply["error"].startswith("internal error"), (line[:300], reply)
        assert len(json.dumps(reply)) <= len(line) + 512, reply  # no amplification
    assert d.thread.is_alive()
    assert status_ok(d.root)


def _daemon(start: Callable[..., Running]) -> Running:
    """One daemon for all the examples of a hypothesis test: the fixture lives as long as
    the test function, so the daemon is kept on it."""
    d: Running | None = getattr(start, "hostile_daemon", None)
    if d is None:
        d = start()
        start.hostile_daemon = d  # type: ignore[attr-defined]
    return d


def test_a_budget_beyond_float_range_is_refused_as_a_bad_request(
    start_daemon: Callable[..., Running],
) -> None:
    d = start_daemon()
    tried()
    line = (
        b'{"v": 1, "op": "fetch", "crate": "a", "mkey": "'
        + _KEY.encode()
        + b'", "budget_ms": 1'
        + b"0" * 400
        + b"}\n"
    )
    reply = exchange(d.root, line)
    assert status_ok(d.root)
    assert reply is not None and reply["ok"] is False
    assert reply["error"].startswith("invalid request: budget_ms"), reply


@pytest.mark.parametrize("depth", [7, 8, 9, 900, 5000])
def test_requests_nested_deeper_than_the_rule_are_refused_whatever_the_stack(
    start_daemon: Callable[..., Running], depth: int
) -> None:
    """Requests are flat: nesting past the daemon's fixed limit is refused by rule, not by
    whether json's recursion happens to give up in that thread."""
    d = _daemon(start_daemon)
    tried()
    reply = exchange(d.root, _nest(depth) + b"\n")
    assert reply is not None
    if depth + 1 <= wire.MAX_DEPTH:  # the object itself is one level
        assert reply["ok"] is True, reply
    else:
        assert reply["ok"] is False and "nested" in reply["error"], reply
    assert status_ok(d.root)


# --------------------------------------------------------------------------- long lines


@pytest.mark.parametrize(
    ("size", "ok"),
    [(wire.MAX_LINE, True), (wire.MAX_LINE + 1, False), (wire.MAX_LINE + 2, False), (8 * wire.MAX_LINE, False)],
)
def test_a_line_is_answered_up_to_the_limit_and_refused_past_it(
    start_daemon: Callable[..., Running], size: int, ok: bool
) -> None:
    d = start_daemon()
    body = b'{"v": 1, "op": "status"}'
    line = body[:-1] + b" " * (size - len(body)) + b"}"
    assert len(line) == size
    tried()
    reply = exchange(d.root, line + b"\n")
    if ok:
        assert reply is not None and reply["ok"] is True
    else:
        if reply is not None and reply["ok"]:
            accepted(f"a line of {size} bytes (limit {wire.MAX_LINE}) was served")
        assert (
            reply is None or reply["error"] == f"invalid request: the line is longer than {wire.MAX_LINE} bytes"
        )
    assert status_ok(d.root)


def test_many_oversized_lines_at_once_leave_the_daemon_serving(start_daemon: Callable[..., Running]) -> None:
    d = start_daemon()
    big = b"{" + b"x" * (4 << 20) + b"\n"
    errors: list[BaseException] = []

    def flood() -> None:
        try:
            exchange(d.root, big)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=flood) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    tried(len(threads))
    assert not errors, errors
    assert status_ok(d.root)
    wait_for(lambda: d.daemon._conns == 0, timeout=TIMEOUT, what="the flood's connections to close")


# --------------------------------------------------------------------------- half lines that hang


def test_connections_that_send_half_a_line_and_hang_are_bounded_then_dropped(
    start_daemon: Callable[..., Running], monkeypatch: pytest.MonkeyPatch
) -> None:
    """More hanging connections than the daemon serves at once: the extra ones get a
    "daemon busy" error (as does a status request while they hang); the daemon's
    threads stay bounded; after READ_TIMEOUT the hangers are dropped and status works."""
    monkeypatch.setattr(wire, "READ_TIMEOUT", 1.0)
    d = start_daemon()
    before = threading.active_count()
    hangers = []
    for _ in range(MAX_CONNECTIONS + 16):
        s = connect(d.root)
        s.sendall(b'{"v": 1, "op": "sta')
        hangers.append(s)
    tried(len(hangers))
    try:
        assert threading.active_count() <= before + MAX_CONNECTIONS + 4
        busy = exchange(d.root, b'{"v": 1, "op": "status"}\n')
        assert busy is not None and (busy["ok"] or busy["error"].startswith("daemon busy")), busy
        # Every hanger is closed by the daemon: the extra ones at once, the others at READ_TIMEOUT.
        for s in hangers:
            assert read_line(s) in (
                b"",
                json.dumps(
                    {"ok": False, "error": f"daemon busy: {MAX_CONNECTIONS} connections open: try again"},
                    separators=(",", ":"),
                ).encode(),
            )
        wait_for(lambda: d.daemon._conns == 0, timeout=TIMEOUT, what="the hangers to be dropped")
        assert status_ok(d.root)
        assert threading.active_count() <= before + 4
    finally:
        for s in hangers:
            s.close()


def test_a_connection_that_trickles_a_line_is_dropped_after_read_timeout(
    start_daemon: Callable[..., Running], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(wire, "READ_TIMEOUT", 0.6)
    d = start_daemon()
    tried()
    with connect(d.root) as s:
        s.settimeout(0.01)
        dropped = False
        end = time.monotonic() + 3 * wire.READ_TIMEOUT  # 1.8 s
        while time.monotonic() < end and not dropped:
            try:
                s.sendall(b" ")  # one byte every 50 ms: never READ_TIMEOUT without data
                dropped = s.recv(1) == b""
            except TimeoutError:
                pass
            except (BrokenPipeError, ConnectionResetError):
                dropped = True
            time.sleep(0.05)
    assert status_ok(d.root)
    assert dropped, "a connection trickling one byte at a time was never dropped"


# --------------------------------------------------------------------------- a real daemon process


def _proc_status(pid: int) -> dict[str, int]:
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            name, _, value = line.partition(":")
            if name in ("VmRSS", "Threads"):
                out[name] = int(value.split()[0])
    return out


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads /proc")
def test_a_real_daemon_under_a_flood_keeps_its_threads_and_memory_bounded(
    kache_process: Callable[..., Any], store_root: Path
) -> None:
    proc = kache_process()
    wait_for(lambda: client.request(store_root, {"op": "status"}, timeout=1.0), timeout=20, what="the daemon")
    base = _proc_status(proc.pid)
    socks = []
    try:
        for _ in range(MAX_CONNECTIONS + 32):  # half lines of nearly MAX_LINE bytes each, then silence
            s = connect(store_root)
            try:
                s.sendall(b"{" + b"x" * (wire.MAX_LINE - 10))
            except (BrokenPipeError, ConnectionResetError):
                pass
            socks.append(s)
        for _ in range(50):  # and garbage lines on fresh connections
            try:
                exchange(store_root, os.urandom(512).replace(b"\n", b"") + b"\n")
            except OSError:
                pass
        tried(len(socks) + 50)
        peak = _proc_status(proc.pid)
        assert peak["Threads"] <= base["Threads"] + MAX_CONNECTIONS + 8, (base, peak)
        assert peak["VmRSS"] - base["VmRSS"] < 64 * 1024, (base, peak)  # kB: < 64 MiB for ~6 MiB of input
    finally:
        for s in socks:
            s.close()
    wait_for(lambda: status_ok(store_root), timeout=20, what="status after the flood")
    assert proc.poll() is None
