"""kache's own small state files filled with garbage: the wrapper's settings memo
(``<cache dir>/tmp/settings/<identity>.json``, see ``kache.settings.load_checked``) and
the event log (``events.jsonl``, see ``kache.store.events``).

Both are rewritten or appended by kache all the time and read without locks, so a
reader must take anything: garbage is ignored (the memo is rebuilt, a bad event line is
skipped), and never stops a build or a command.
"""

from __future__ import annotations

import glob
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kache import settings as S
from kache.cli import main as cli_main
from kache.store import events, stats
from tests.support.hostile import accepted, tried
from tests.support.workspace import Workspace, outcomes

pytestmark = pytest.mark.hostile


# --------------------------------------------------------------------------- the settings memo


def _env(home: Path, **extra: str) -> dict[str, str]:
    return {
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_CACHE_HOME": str(home / ".cache"),
        **extra,
    }


def _memo_path(env: dict[str, str]) -> Path:
    """Where load_checked keeps its memo for ``env`` (made by a first call)."""
    S.load_checked(env)
    found = glob.glob(os.path.join(S.default_cache_dir(env), "tmp", "settings", "*.json"))
    assert len(found) == 1, found
    return Path(found[0])


@pytest.fixture
def memo_env(clean_env: Path, user_config: Path) -> tuple[dict[str, str], Path, S.Settings]:
    """A valid user config, its memo, and the settings a fresh load gives."""
    user_config.write_text('[cache]\ncompression_level = 9\nlocal_max_size = "2GB"\n')
    env = _env(clean_env, KACHE_CACHE_DIR=str(clean_env / "store"))
    memo = _memo_path(env)
    return env, memo, S.load(env)


GARBAGE_MEMOS: dict[str, bytes] = {
    "empty": b"",
    "random-bytes": bytes(range(256)) * 4,
    "truncated": b'{"values": {"cache.local_store": nul',
    "not-utf8": b'{"values": "\xff\xfe"}',
    "null": b"null",
    "list": b"[1, 2, 3]",
    "number": b"1e400",
    "nul-bytes": b"\0" * 64,
}


@pytest.mark.parametrize("case", sorted(GARBAGE_MEMOS))
def test_a_garbage_memo_is_ignored_and_rebuilt(
    case: str, memo_env: tuple[dict[str, str], Path, S.Settings]
) -> None:
    env, memo, fresh = memo_env
    memo.chmod(0o600)
    memo.write_bytes(GARBAGE_MEMOS[case])
    tried()
    got = S.load_checked(env)
    assert got.values == fresh.values
    assert got.converted("cache.local_store") == env["KACHE_CACHE_DIR"]
    assert json.loads(memo.read_text())["values"] == fresh.values  # rewritten


def test_a_deeply_nested_memo_is_ignored_and_rebuilt(
    memo_env: tuple[dict[str, str], Path, S.Settings],
) -> None:
    env, memo, fresh = memo_env
    memo.write_bytes(b"[" * 100_000)
    tried()
    try:
        got = S.load_checked(env)
    except RecursionError:  # re-raised short: a deep recursion's traceback costs pytest seconds
        raise AssertionError("RecursionError escaped load_checked") from None
    assert got.values == fresh.values


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    data=st.one_of(
        st.binary(max_size=300),
        st.text(max_size=100).map(str.encode),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(max_size=5),
            lambda inner: st.lists(inner, max_size=3),
            max_leaves=6,
        ).map(lambda v: json.dumps(v).encode()),
    )
)
def test_any_memo_that_is_not_a_json_object_is_ignored(
    memo_env: tuple[dict[str, str], Path, S.Settings], data: bytes
) -> None:
    env, memo, fresh = memo_env
    try:
        if isinstance(json.loads(data), dict):
            return
    except (ValueError, RecursionError):
        pass
    memo.write_bytes(data)
    tried()
    assert S.load_checked(env).values == fresh.values


def _wrong_shapes(fresh: S.Settings) -> dict[str, dict[str, Any]]:
    sources = {k: [v.kind, v.where] for k, v in fresh.sources.items()}
    files = [[f.role, f.path, f.exists] for f in fresh.files]
    return {
        "no-values": {"values": {}, "sources": sources, "files": files},
        "values-a-list": {"values": [], "sources": sources, "files": files},
        "a-relative-store": {
            "values": {**fresh.values, "cache.local_store": "5"},
            "sources": sources,
            "files": files,
        },
        "a-size-of-the-wrong-type": {
            "values": {**fresh.values, "cache.local_max_size": [1]},
            "sources": sources,
            "files": files,
        },
        "sources-missing": {"values": fresh.values, "sources": {}, "files": files},
    }


WRONG_SHAPES = [
    "a-relative-store",
    "a-size-of-the-wrong-type",
    "no-values",
    "sources-missing",
    "values-a-list",
]


@pytest.mark.parametrize("case", WRONG_SHAPES)
def test_a_memo_of_the_wrong_shape_is_ignored_and_rebuilt(
    case: str, memo_env: tuple[dict[str, str], Path, S.Settings]
) -> None:
    env, memo, fresh = memo_env
    memo.write_text(json.dumps(_wrong_shapes(fresh)[case]))
    tried()
    got = S.load_checked(env)
    try:
        same = (
            got.values == fresh.values
            and all(got.converted(k) == fresh.converted(k) for k in fresh.values)
            and {k: str(v) for k, v in got.sources.items()} == {k: str(v) for k, v in fresh.sources.items()}
        )
    except Exception:  # noqa: BLE001 - what the wrapper would meet later
        same = False
    if not same:
        accepted(f"a settings memo of the wrong shape ({case}) was used")


# --------------------------------------------------------------------------- the event log

GOOD = {
    "t": 1_700_000_000.0,
    "crate": "serde",
    "outcome": "miss",
    "ms": 12.5,
    "bytes": 100,
    "compile_ms": 50,
    "root": "/ws",
    "key": "0" * 16,
}
# fmt: off
GARBAGE_LINES: list[bytes] = [
    b"", b"\xff\xfe\xfd", b"\0" * 100, b"{", b"}", b"[1, 2]", b"null", b'"text"', b"1e400", b"NaN",
    b'{"outcome": "local_hit", "t": "yesterday", "bytes": "big", "ms": null, "saved_ms": [], "root": 5}',
    b'{"outcome": "miss", "reason": {"a": 1}, "crate": 7, "compile_ms": "x"}',
    b'{"outcome": "passthrough", "reason": [1, 2], "crate": null, "t": -1e9}',
    b'{"outcome": "error", "t": 1e10, "ms": 1e308}',
    b'{"outcome": "no-such-outcome", "t": 1}', b'{"outcome": 5}', b'{"outcome": null, "t": NaN}',
    b'{"outcome": "dup", "bytes": -5, "compile_ms": -1}',
    b'{"crate": "serde", "outcome": "passthrough", "reason": "\\u0000\\u202e", "t": 1.5}',
    b'{"outcome": "local_hit", "ms": "fast", "saved_ms": 1.5e3, "bytes": 2.5}',
    b"x" * (1 << 20),
    json.dumps(GOOD).encode()[:20],  # a line cut short (a writer killed mid-write)
]
# fmt: on


def _write_log(root: Path, lines: list[bytes], good: int = 3) -> None:
    """``good`` valid events in each of the current and the rotated log, among ``lines``."""
    root.mkdir(parents=True, exist_ok=True)
    body = [json.dumps({**GOOD, "t": GOOD["t"] + i}).encode() for i in range(good)]
    (root / "events.jsonl").write_bytes(b"\n".join(body[:1] + lines + body[1:]) + b"\n")
    (root / "events.1.jsonl").write_bytes(b"\n".join(lines + body) + b"\n")


def _readers(root: str) -> dict[str, Callable[[], Any]]:
    return {
        "read": lambda: list(events.read(root)),
        "read_all": lambda: events.read_all(root),
        "read_all since": lambda: events.read_all(root, since=1.0),
        "tail": lambda: events.Tail(root).read(),
        "stats": lambda: stats.compute(root).to_json(),
        "stats since": lambda: stats.compute(root, since=1.0).to_json(),
    }


def test_garbage_lines_are_skipped_and_good_ones_counted(tmp_path: Path) -> None:
    root = tmp_path / "store"
    _write_log(root, GARBAGE_LINES)
    tried(len(GARBAGE_LINES))
    for read in _readers(str(root)).values():
        read()  # none raises
    good = [ev for ev in events.read_all(str(root)) if ev.get("crate") == "serde" and ev.get("key")]
    assert len(good) == 6
    assert stats.compute(str(root)).outcomes["miss"] >= 6


_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**30), 10**30)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=8,
)
# Times a clock could give, or not numbers at all (far-off numbers: see EVENTS_BUGS).
_times = st.one_of(
    st.floats(-1e10, 1e10),
    st.integers(-(10**10), 10**10),
    st.text(max_size=4),
    st.none(),
    st.lists(st.integers(), max_size=2),
)
_fields = st.fixed_dictionaries(
    {},
    optional={
        "t": _times,
        "crate": _json_values,
        "ms": _json_values,
        "bytes": _json_values,
        "root": _json_values,
        "saved_ms": _json_values,
        "compile_ms": _json_values,
        "reason": _json_values,
        "key": _json_values,
        "outcome": st.one_of(st.sampled_from(events.OUTCOMES), st.text(max_size=6), st.integers(), st.none()),
    },
)
_lines = st.one_of(
    st.binary(max_size=40).filter(lambda b: b"\n" not in b),
    _fields.map(lambda d: json.dumps(d).encode()),
    _json_values.map(lambda v: json.dumps(v).encode()),
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(_lines, min_size=1, max_size=8))
def test_any_event_log_is_read_and_counted_without_raising(tmp_path: Path, lines: list[bytes]) -> None:
    """Random lines, and JSON objects with any value in every field."""
    tried()
    root = tmp_path / "store"
    _write_log(root, lines, good=2)
    for read in _readers(str(root)).values():
        read()
    assert stats.compute(str(root)).outcomes["miss"] >= 4


EVENTS_BUGS = [
    pytest.param(
        b"[" * 100_000,
        "events.read/read_all/Tail._chunk catch ValueError only; json.loads raises "
        "RecursionError on deep nesting (catch it too)",
        id="deeply-nested-line",
    ),
    pytest.param(
        b'{"outcome": "local_hit", "bytes": 1e400}',
        "stats.compute: int(inf) raises OverflowError (check math.isfinite before int())",
        id="infinite-bytes",
    ),
    pytest.param(
        b'{"outcome": "local_hit", "saved_ms": NaN}',
        "stats.compute: int(nan) raises ValueError",
        id="nan-saved-ms",
    ),
    pytest.param(
        b'{"outcome": "miss", "compile_ms": -Infinity}',
        "stats.compute: int(-inf) raises OverflowError",
        id="infinite-compile-ms",
    ),
    pytest.param(
        b'{"outcome": [1]}',
        "stats.compute: `outcome not in outcomes` raises TypeError for an "
        "unhashable outcome (check it is a str first)",
        id="list-outcome",
    ),
    pytest.param(b'{"outcome": {"a": 1}}', "stats.compute: TypeError for a dict outcome", id="dict-outcome"),
    pytest.param(
        b'{"outcome": "miss", "t": -1e308}',
        "Stats.to_json: entries.iso(-1e308) -> time.gmtime OverflowError (clamp or drop times out of range)",
        id="time-out-of-range",
    ),
    pytest.param(
        b'{"outcome": "miss", "t": "yesterday"}',
        "events.read(root, since): `ev.get('t', 0) >= since` "
        "raises TypeError for a non-number (use _time(ev) as read_all does)",
        id="time-a-string-read-since",
    ),
]


@pytest.mark.parametrize(("line", "bug"), EVENTS_BUGS)
def test_one_bad_event_line_never_breaks_the_readers(tmp_path: Path, line: bytes, bug: str) -> None:
    tried()
    root = tmp_path / "store"
    _write_log(root, [line])
    readers = {**_readers(str(root)), "read since": lambda: list(events.read(str(root), since=1.0))}
    for name, read in readers.items():
        try:
            read()
        except Exception as e:  # re-raised short: a deep recursion's traceback costs pytest seconds
            raise AssertionError(f"{name}: {type(e).__name__}: {str(e)[:100]} ({bug})") from None


# --------------------------------------------------------------------------- commands and a real build


@pytest.mark.parametrize(
    "args",
    [
        ["stats"],
        ["stats", "--json"],
        ["stats", "--since", "1h"],
        ["list"],
        ["list", "--json"],
        ["why-miss", "serde"],
        ["why-miss", "serde", "--json"],
    ],
    ids=" ".join,
)
def test_commands_over_a_garbage_event_log_exit_0(
    args: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "store"
    _write_log(root, GARBAGE_LINES)
    monkeypatch.setenv("KACHE_CACHE_DIR", str(root))
    tried()
    assert cli_main(args) == (1 if args[0] == "why-miss" else 0)  # why-miss: serde has no entries
    out = capsys.readouterr()
    assert "Traceback" not in out.err
    if args[-1] == "--json":
        json.loads(out.out)


def test_kache_stats_prints_a_reason_that_is_not_unicode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "store"
    _write_log(root, [b'{"outcome": "passthrough", "reason": "\\ud800", "t": 1.5}'])
    monkeypatch.setenv("KACHE_CACHE_DIR", str(root))
    tried()
    assert cli_main(["stats"]) == 0


@pytest.mark.e2e
def test_builds_over_a_broken_memo_and_a_garbage_event_log_succeed(workspace: Workspace) -> None:
    """The wrapper reads the memo on every call and appends to the log. With a memo of
    random bytes and a log full of garbage, the build succeeds and kache caches (the
    memo is rebuilt). With a memo of the wrong shape (ignored: it lacks kache's
    checksum), the next build still succeeds: at most one warning, the app is right."""
    env = {**os.environ, **workspace.env}
    memo = _memo_path(env)
    memo.write_bytes(bytes(range(256)) * 8)
    _write_log(workspace.store, GARBAGE_LINES)
    tried(2)
    out = workspace.build()
    assert "kache: " not in out.stderr, out.stderr
    json.loads(memo.read_text())
    recorded = outcomes(
        [ev for ev in events.read_all(str(workspace.store)) if ev.get("crate") in ("kc_core", "kc_util")]
    )
    assert recorded.get("kc_core") == "miss" and recorded.get("kc_util") == "miss", recorded
    workspace.verify_app()

    memo.write_text(json.dumps({"values": {}, "sources": {}, "files": []}))
    tried()
    workspace.clean()
    out = workspace.build()
    assert "kache: " not in out.stderr, out.stderr  # warnings go to the terminal and kache.log
    workspace.verify_app()
