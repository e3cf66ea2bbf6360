"""Config files written to break kache's settings layer: random TOML documents (nested
tables, wrong types for every schema key, huge numbers and strings, nesting, dates,
arrays of tables), bytes that are not UTF-8, a 10 MB file.

What must hold:

* ``kache.settings`` loads a file or raises ``SettingsError``, nothing else, and each
  problem names the file (and, for a value, the key);
* it never accepts a document the schema refuses (checked against the whole schema,
  validated in one piece by jsonschema, as an independent second opinion), nor refuses
  one the schema accepts;
* ``kache config validate`` exits 1 with ``kache: error:`` lines, never a traceback;
* a real cargo build under such a config succeeds: the wrapper runs rustc directly after
  one warning.
"""

from __future__ import annotations

import copy
import datetime as dt
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kache import settings as S
from kache import units
from kache.errors import SettingsError
from tests.support.env import kache_log
from tests.support.hostile import accepted, tried
from tests.support.workspace import Workspace

pytestmark = pytest.mark.hostile

TABLE = S.settings_table()
LEAVES = [s.key for s in TABLE]
SECTIONS = [key for key, _ in S.sections()]
KNOWN = set(LEAVES) | set(SECTIONS)


# --------------------------------------------------------------------------- TOML by hand

_BARE = re.compile(r"[A-Za-z0-9_-]+")


def toml_string(s: str) -> str:
    out = ['"']
    for ch in s:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def toml_key(path: str) -> str:
    return ".".join(p if _BARE.fullmatch(p) else toml_string(p) for p in path.split("."))


def toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if v != v:
            return "nan"
        if v in (float("inf"), float("-inf")):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return toml_string(v)
    if isinstance(v, (dt.datetime, dt.date, dt.time)):
        return v.isoformat()
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{toml_key(k)} = {toml_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(v)


class Deep:
    """``depth`` nested arrays or inline tables around ``inner`` (shown as TOML directly)."""

    def __init__(self, depth: int, kind: str) -> None:
        self.depth, self.kind = depth, kind


def render_doc(pairs: dict[str, Any], header: str | None) -> str:
    """Dotted keys at the top level, or under a ``[header]`` for keys below it."""
    lines = []
    under = [k for k in pairs if header and k.startswith(header + ".")]
    for k, v in pairs.items():
        if k not in under:
            lines.append(f"{toml_key(k)} = {_text(v)}")
    if under:
        lines.append(f"[{toml_key(header or '')}]")
        for k in under:
            lines.append(f"{toml_key(k[len(header or '') + 1 :])} = {_text(pairs[k])}")
    return "\n".join(lines) + "\n"


def _text(v: Any) -> str:
    if isinstance(v, Deep):
        if v.kind == "array":
            return "[" * v.depth + "1" + "]" * v.depth
        return "{a = " * v.depth + "1" + "}" * v.depth
    return toml_value(v)


# fmt: off
_scalars = st.one_of(
    st.booleans(),
    st.integers(),
    st.sampled_from([0, -1, 1, 22, 23, 256, 257, 2**63 - 1, -(2**63), 2**64, 10**300, -(10**300)]),
    st.floats(),
    st.sampled_from([0.0, -0.0, 3.0, 1e308, float("inf"), float("nan"), 5e-324]),
    st.text(max_size=20),
    st.sampled_from(["", "50GB", "512MiB", "１GB", "-5GB", "7d", "~/cache", "$HOME/x", "/abs", "relative",
                     "http://", "https://x", "s3", "gcs", "a b", "auto", "keep", "drop", "x" * 300,
                     "x" * 100_000, "\x00", "\u202e", "🦀"]),
    st.datetimes(timezones=st.none() | st.just(dt.timezone.utc)),
    st.dates(),
)
_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.sampled_from(["env", "files", "x", "*", "a.b", "", "type"]), inner, max_size=3),
    max_leaves=6,
) | st.builds(Deep, st.integers(1, 40), st.sampled_from(["array", "table"]))

_keys = st.sampled_from(
    LEAVES + SECTIONS + ["cache.unknown", "cache.remote.unknown", "other", "other.deep.key",
                         "cache.extra_inputs.my_macros", "cache.extra_inputs.*.env",
                         "cache.extra_inputs.x.files", "cache.extra_inputs.x.other", "cache.remote.bucket.x"])
# fmt: on


def _no_prefix_clashes(pairs: dict[str, Any]) -> dict[str, Any]:
    keys = sorted(pairs)
    return {k: pairs[k] for k in keys if not any(o != k and o.startswith(k + ".") for o in keys)}


_docs = st.tuples(
    st.dictionaries(_keys, _values, min_size=1, max_size=6).map(_no_prefix_clashes),
    st.sampled_from([None, "cache", "cache.remote"]),
)


# --------------------------------------------------------------------------- the oracle


def _oracle_schema() -> dict[str, Any]:
    schema = copy.deepcopy(S.load_schema())

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("x-format") in ("size", "duration"):
                node["format"] = node["x-format"]
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(schema)
    return schema


ORACLE_SCHEMA = _oracle_schema()


def schema_accepts(data: dict[str, Any], env: dict[str, str]) -> bool:
    """The whole document against the whole schema, in one jsonschema call; plus the one
    rule the schema cannot say (a path setting must be absolute once expanded)."""
    from jsonschema import Draft202012Validator, FormatChecker

    checker = FormatChecker()
    # jsonschema takes a falsy result for "invalid": a size of 0 parses to 0
    checker.checks("size", raises=units.UnitError)(lambda v: units.parse_size(v) is not None)
    checker.checks("duration", raises=units.UnitError)(lambda v: units.parse_duration(v) is not None)
    if not Draft202012Validator(ORACLE_SCHEMA, format_checker=checker).is_valid(data):
        return False
    store = data.get("cache", {}).get("local_store")
    if store is not None and not os.path.isabs(S._expand(str(store), env)):
        return False
    # the rule of unknown keys (tests/test_settings_degrade.py tests it alone): one that may
    # be a guarded setting misspelt is refused (kache cannot know what it meant)
    for key, value in S._unknown_items(data, S.load_schema(), ""):
        if S.unknown_value_guard(key, value)[0]:
            return False
    return True


def check_problems(problems: list[str], shown: str) -> None:
    """Every problem names the file; a problem with a value also names its key."""
    assert problems
    for p in problems:
        if p.startswith(f"cannot read config file: {shown}: "):
            continue
        if p.startswith("unknown key `") and f"` in {shown}" in p:  # a key near a guarded one
            continue
        m = re.match(rf"invalid setting in {re.escape(shown)}: (?P<key>[A-Za-z0-9_.]+) = ", p)
        assert m is not None, p
        assert m["key"] in KNOWN, p


def env_for(home: Path, config: Path) -> dict[str, str]:
    return {
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_CACHE_HOME": str(home / ".cache"),
        "KACHE_CONFIG": str(config),
    }


# --------------------------------------------------------------------------- properties


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(doc=_docs)
def test_a_random_toml_document_loads_exactly_when_the_schema_accepts_it(
    clean_env: Path, tmp_path: Path, doc: tuple[dict[str, Any], str | None]
) -> None:
    import tomllib

    tried()
    pairs, header = doc
    text = render_doc(pairs, header)
    path = tmp_path / "fuzz.toml"
    path.write_text(text, encoding="utf-8")
    env = env_for(clean_env, path)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        data = None
    try:
        s = S.load(env)
        S.validate(s)
        for key in LEAVES:
            s.converted(key)
    except SettingsError as e:
        check_problems(e.problems, str(path))
        if data is not None and schema_accepts(data, env):
            raise AssertionError(f"refused a document the schema accepts: {e.problems}\n{text}") from None
        return
    if data is None:
        accepted(f"loaded TOML that tomllib refuses:\n{text}")
    if not schema_accepts(data, env):
        accepted(f"loaded a document the schema refuses:\n{text[:2000]}")


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    data=st.binary(max_size=200),
    prefix=st.sampled_from([b"", b"[cache]\n", b'[cache]\nkey_salt = "', b"# \xff\n", b"\xef\xbb\xbf"]),
)
def test_random_bytes_load_or_fail_with_a_settings_error_naming_the_file(
    clean_env: Path, tmp_path: Path, data: bytes, prefix: bytes
) -> None:
    tried()
    path = tmp_path / "bytes.toml"
    path.write_bytes(prefix + data)
    env = env_for(clean_env, path)
    try:
        S.validate(S.load(env))
    except SettingsError as e:
        check_problems(e.problems, str(path))
        return
    try:
        (prefix + data).decode("utf-8")
    except UnicodeDecodeError:
        accepted(f"loaded a config that is not UTF-8: {prefix + data!r}")


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (
            b"[cache]\nkey_salt = '\xff'\n",
            "cannot read config file: {path}: 'utf-8' codec can't decode byte 0xff",
        ),
        (b"\xfe\xff\x00[\x00c", "cannot read config file: {path}: 'utf-8' codec can't decode"),
        (
            b"[cache]\ncompression_level = 1_000_000_000_000_000_000_000\n",
            "invalid setting in {path}: cache.compression_level = 1000000000000000000000: "
            "must be between 1 and 22",
        ),
        (
            b"[cache]\nlocal_max_size = 1e400\n",
            "invalid setting in {path}: cache.local_max_size = inf: expected a size",
        ),
        (
            b"[cache]\nlocal_max_size = 18446744073709551617\n",
            "invalid setting in {path}: cache.local_max_size = 18446744073709551617: expected a size",
        ),
        (
            b"[cache]\ndaemon_idle_timeout_secs = nan\n",
            "invalid setting in {path}: cache.daemon_idle_timeout_secs = nan: ",
        ),
        (
            b"[[cache]]\ncompression_level = 3\n",
            'invalid setting in {path}: cache = [{"compression_level": 3}]: expected a table',
        ),
        (b"[cache]\nremote = [1, 2]\n", "invalid setting in {path}: cache.remote = [1, 2]: expected a table"),
        (
            b"[cache]\nkey_salt = 1979-05-27T07:32:00Z\n",
            'invalid setting in {path}: cache.key_salt = "1979-05-27 07:32:00+00:00": expected text',
        ),
        (b'[cache.extra_inputs.x]\nenv = ["1BAD"]\n', "invalid setting in {path}: cache.extra_inputs = "),
        (
            b"[cache]\nlocal_store = '$UNSET_VARIABLE/x'\n",
            'invalid setting in {path}: cache.local_store = "$UNSET_VARIABLE/x": expected an absolute path',
        ),
    ],
    ids=[
        "non-utf8-value",
        "utf16",
        "huge-int",
        "float-overflow",
        "over-u64",
        "nan",
        "array-of-tables",
        "section-as-array",
        "datetime",
        "bad-env-name",
        "unset-variable",
    ],
)
def test_hostile_config_files_are_refused_naming_file_and_key(
    clean_env: Path, tmp_path: Path, text: bytes, problem: str
) -> None:
    tried()
    path = tmp_path / "bad.toml"
    path.write_bytes(text)
    try:
        S.validate(S.load(env_for(clean_env, path)))
    except SettingsError as e:
        assert e.problems[0].startswith(problem.replace("{path}", str(path))), e.problems
        check_problems(e.problems, str(path))
        return
    accepted(f"loaded {text!r}")


# Inputs tomllib itself fails on with something else than TOMLDecodeError.
TOMLLIB_ESCAPES = [
    pytest.param(b"[cache]\nkey_salt = " + b"[" * 2000 + b"]" * 2000 + b"\n", id="nested-arrays"),
    pytest.param(
        b"[cache]\nextra_inputs = " + b"{a = " * 2000 + b"1" + b"}" * 2000 + b"\n", id="nested-tables"
    ),
    pytest.param(b"[cache]\ncompression_level = " + b"9" * 5000 + b"\n", id="int-over-4300-digits"),
]


@pytest.mark.parametrize("text", TOMLLIB_ESCAPES)
def test_deep_nesting_and_huge_integers_are_settings_errors(
    clean_env: Path, tmp_path: Path, text: bytes
) -> None:
    tried()
    path = tmp_path / "deep.toml"
    path.write_bytes(text)
    try:
        S.validate(S.load(env_for(clean_env, path)))
    except SettingsError as e:
        check_problems(e.problems, str(path))
        return
    except (RecursionError, ValueError) as e:  # re-raised short: a 1000-frame traceback takes pytest ~10 s
        raise AssertionError(f"{type(e).__name__} escaped kache.settings: {str(e)[:200]}") from None
    accepted(f"loaded {text[:60]!r}…")


def ten_mb_of_salt() -> bytes:
    return b"[cache]\nkey_salt = '" + b"s" * (10 << 20) + b"'\n"


def test_a_10_mb_config_file_is_read_and_refused_naming_the_key(clean_env: Path, tmp_path: Path) -> None:
    tried()
    path = tmp_path / "big.toml"
    path.write_bytes(ten_mb_of_salt())
    with pytest.raises(SettingsError) as e:
        S.validate(S.load(env_for(clean_env, path)))
    check_problems(e.value.problems, str(path))
    assert "cache.key_salt = " in e.value.problems[0]
    assert e.value.problems[0].endswith("must be at most 256 characters long")


def test_a_problem_with_a_huge_value_is_a_short_line(clean_env: Path, tmp_path: Path) -> None:
    tried()
    path = tmp_path / "big.toml"
    path.write_bytes(ten_mb_of_salt())
    with pytest.raises(SettingsError) as e:
        S.validate(S.load(env_for(clean_env, path)))
    assert max(len(p) for p in e.value.problems) < 1000


def test_a_10_mb_config_file_of_comments_and_unknown_keys_loads(clean_env: Path, tmp_path: Path) -> None:
    path = tmp_path / "big-ok.toml"
    path.write_bytes(
        b"# padding\n" * (1 << 17)
        + b"[cache]\ncompression_level = 7\nunknown = '"
        + b"u" * (9 << 20)
        + b"'\n"
    )
    assert path.stat().st_size > 10_000_000
    s = S.load(env_for(clean_env, path))
    S.validate(s)
    assert s["cache.compression_level"] == 7
    assert s.warnings == [f"unknown key `unknown` in {path} (cache.unknown) (ignored; `kache config schema` "
                          "lists the known keys)"]


# --------------------------------------------------------------------------- the CLI


CLI_CASES = {
    "wrong-types": (
        b"[cache]\ncompression_level = 'max'\nlocal_max_size = [1]\ncache_executables = 1\n"
        b"[cache.remote]\nbucket = 5\n",
        "cache.compression_level",
    ),
    "not-utf8": (b"[cache]\nkey_salt = '\xc3\x28'\n", "'utf-8' codec can't decode"),
    "ten-mb": (ten_mb_of_salt(), "cache.key_salt"),
    "invalid-toml": (b"[cache\n", "invalid TOML"),
    "section-not-a-table": (b"cache = 'x'\n", 'cache = "x": expected a table'),
}


@pytest.mark.parametrize(
    "case",
    [
        *sorted(CLI_CASES),
        pytest.param("nested-arrays"),
        pytest.param("int-over-4300-digits"),
    ],
)
def test_config_validate_exits_1_with_a_clear_message(case: str, tmp_path: Path, kache_exe: str) -> None:
    if case in CLI_CASES:
        text, needle = CLI_CASES[case]
    else:
        text, needle = next(p.values[0] for p in TOMLLIB_ESCAPES if p.id == case), "invalid TOML"
    path = tmp_path / "config.toml"
    path.write_bytes(text)
    forms = [([str(path)], {}), ([], {"KACHE_CONFIG": str(path)})]
    forms = forms[:1] if case == "ten-mb" else forms  # 10 MB of TOML once is enough
    tried(len(forms))
    for args, env in forms:
        out = subprocess.run(
            [kache_exe, "config", "validate", *args],
            capture_output=True,
            text=True,
            env={**os.environ, **env},
            timeout=120,
        )
        if out.returncode == 0:
            accepted(f"`kache config validate` accepted {case}")
        assert out.returncode == 1, out.stderr[-2000:]
        assert "Traceback" not in out.stderr, out.stderr[-2000:]
        lines = out.stderr.splitlines()
        assert lines and all(line.startswith("kache: ") for line in lines), out.stderr[-2000:]
        assert any(
            line.startswith("kache: error: ") and str(path) in line and needle in line for line in lines
        ), out.stderr[-2000:]


# --------------------------------------------------------------------------- a real build


@pytest.mark.e2e
def test_a_build_under_a_hostile_config_succeeds_after_one_warning_per_value(
    workspace: Workspace, user_config: Path
) -> None:
    """Was: one warning for the whole configuration, and nothing cached. Now each invalid
    value falls back to its default with its own warning, once, and the build is cached."""
    user_config.write_bytes(b"[cache]\ncompression_level = 'max'\nlocal_max_size = -1\nincremental = 3\n")
    tried()
    out = workspace.build()
    assert "kache:" not in out.stderr, out.stderr  # never where cargo keeps a unit's output
    said = kache_log(workspace.store) + kache_log()
    # Calls run in parallel, each saying the warnings no other call has claimed yet: one
    # line per value, in whichever order the calls wrote them.
    warnings = sorted(line.partition(" ")[2] for line in said.splitlines())
    where = "kache: warning: invalid setting in ~/.config/kache/config.toml: "
    assert warnings == sorted([
        f"{where}cache.local_max_size = -1: expected a size such as 50GB, 512MiB or a number of bytes; "
        'using "50GB" (the default)',
        f'{where}cache.incremental = 3: must be one of "auto", "keep", "drop"; using "auto" (the default)',
        f'{where}cache.compression_level = "max": expected an integer; using 3 (the default)',
    ]), said
    assert "Traceback" not in out.stderr
    workspace.verify_app()
    assert (workspace.store / "index.db").exists()  # cached with the defaults in their place


WRAPPER_CONFIGS = {
    "nested-too-deep": b"[cache]\nkey_salt = " + b"[" * 2000 + b"]" * 2000 + b"\n",
    "int-over-4300-digits": b"[cache]\ncompression_level = " + b"9" * 5000 + b"\n",
    "not-utf8": b"[cache]\nkey_salt = '\xc3\x28'\n",
    "ten-mb": ten_mb_of_salt(),
}


@pytest.mark.e2e
@pytest.mark.parametrize("case", sorted(WRAPPER_CONFIGS))
def test_the_wrapper_under_an_unreadable_config_runs_rustc_after_one_warning(
    case: str, user_config: Path, tmp_path: Path, kache_exe: str
) -> None:
    """One rustc call of a cacheable crate through the real wrapper (a whole build, above,
    costs seconds): rustc runs and succeeds, after exactly one warning line."""
    user_config.write_bytes(WRAPPER_CONFIGS[case])
    (tmp_path / "lib.rs").write_text("pub fn f() -> u32 { 1 }\n")
    (tmp_path / "o").mkdir()
    tried()
    out = subprocess.run(
        [
            kache_exe,
            shutil.which("rustc") or "rustc",
            "lib.rs",
            "--crate-name",
            "c",
            "--crate-type",
            "lib",
            "--emit=dep-info,link",
            "--out-dir",
            "o",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "KACHE_CACHE_DIR": str(tmp_path / "store")},
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert (tmp_path / "o" / "libc.rlib").exists()
    assert out.stderr == ""
    said = kache_log(tmp_path / "store") + kache_log()
    lines = [line.partition(" ")[2] for line in said.splitlines()]
    assert len(lines) == 1 and lines[0].startswith("kache: warning: caching is off: "), said[-2000:]
    assert lines[0].endswith("; every rustc call runs directly until it is fixed")
    assert not (tmp_path / "store" / "index.db").exists()  # it may hold a salt or inputs: nothing cached
    assert len(lines[0]) < 20_000 or case == "ten-mb"  # see test_a_problem_with_a_huge_value_is_a_short_line
