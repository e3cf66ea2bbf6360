"""rustc command lines no cargo would write: random words, non-UTF-8 bytes (as Python
sees them, ``os.fsdecode`` surrogates), ``@argfiles`` with random content, hundreds of
thousands of arguments.

What must hold:

* ``parse`` raises only ``ArgvError`` (its documented error); ``passthrough_reason``
  returns None or one of ``PASSTHROUGH_REASONS``; the helpers the wrapper calls on a
  parsed call (``expected_outputs``, ``without_incremental``…) raise nothing;
* the cheap-key preparation (``cache.prepare``) raises only what ``engine.handle.handle``
  turns into a plain rustc run: ``Uncacheable``, ``StoreError``, ``sqlite3.Error``,
  ``OSError``; anything else ends in an "internal error" warning;
* the real wrapper, given a hostile command line, exits with rustc's own status and
  prints rustc's own message, never a traceback.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kache.engine import argv as A
from kache.engine import call as cache
from kache.engine.argv import ArgvError, RustcCall, parse, passthrough_reason
from kache.store.connection import StoreError
from kache.store.store import Store
from tests.support.hostile import accepted, tried

pytestmark = pytest.mark.hostile

RUSTC = shutil.which("rustc") or "rustc"
PREPARE_ERRORS = (cache.Uncacheable, StoreError, sqlite3.Error, OSError)
"""What ``engine.handle.handle`` catches around ``cache.prepare`` (then runs rustc plainly)."""

# fmt: off
_TOKENS = st.sampled_from([
    "-", "--", "-C", "-Cincremental=x", "incremental=/i", "-L", "-l", "-o", "-g", "-O", "-vV", "-gC",
    "-gOCincremental=/i", "--crate-type", "--crate-type=lib,bin", "--crate-type=", "--emit",
    "--emit=link=-", "--emit=dep-info=,link=", "--emit=,", "--extern", "priv:a=b", "=", ":=", "--extern=:",
    "--print", "--test", "--test=1", "--out-dir", "--out-dir=", "-W", "help", "--cap-lints", "x.rs", "-Z",
    "-Zshell-argfiles", "@", "@/nonexistent", "@shell:x", "--json", "--codegen", "--codegen=incremental=",
    "-Cextra-filename=", "-Cextra-filename=/../..", "--crate-name", "___", "../x", "-Cinstrument-coverage",
    "rustc", "-Csplit-debuginfo=packed", "--target", "x.json", "--target=windows", "-Cmetadata=", "--cfg",
    "-l", "static=", "static:+verbatim=", "dylib=:", "-Lnative=", "-L", "all=", "--edition=",
])
# fmt: on
# What Python makes of arbitrary argv bytes (NUL cannot be in a real argument).
_OS_ARGS = st.binary(max_size=10).filter(lambda b: b"\0" not in b).map(os.fsdecode)
_ARGS = st.lists(st.one_of(_TOKENS, _OS_ARGS, st.text(max_size=10)), max_size=24)
_COMPILERS = st.one_of(
    st.just("rustc"), st.just("/x/clippy-driver"), st.just("clippy-driver"), _OS_ARGS, st.text(max_size=8)
)


def _check_call(call: RustcCall, args: list[str]) -> None:
    """What the wrapper does with a parsed call never raises."""
    assert isinstance(call, RustcCall)
    for cache_executables in (False, True):
        reason = passthrough_reason(call, cache_executables)
        assert reason is None or reason in A.PASSTHROUGH_REASONS
    outputs = A.expected_outputs(call)
    assert all(isinstance(p, str) for p in outputs)
    A.is_build_script(call)
    A.effective_crate_types(call)
    out = A.without_incremental(call.args)
    if not any(a.startswith("@") for a in out):
        assert parse(["rustc", *out]).incremental is None


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(compiler=_COMPILERS, args=_ARGS)
def test_any_argv_parses_or_is_an_argv_error(compiler: str, args: list[str]) -> None:
    tried()
    try:
        call = parse([compiler, *args])
    except ArgvError:
        return
    assert call.compiler_args_prefix + call.args == args or any(a.startswith("@") for a in args)
    _check_call(call, args)


_LINE = st.one_of(_TOKENS, st.text(max_size=8), st.sampled_from(["\r", "", " ", "\ufeff", "\x00", "@self"]))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    content=st.one_of(
        st.binary(max_size=80),
        st.lists(_LINE, max_size=12).map(lambda ls: "\n".join(ls).encode("utf-8", "surrogatepass")),
        st.lists(_LINE, max_size=12).map(lambda ls: "\r\n".join(ls).encode("utf-8", "surrogatepass")),
    ),
    before=st.lists(_TOKENS, max_size=3),
    after=st.lists(_TOKENS, max_size=3),
)
def test_an_argfile_with_random_content_expands_like_rustc_or_is_an_argv_error(
    tmp_path: Path, content: bytes, before: list[str], after: list[str]
) -> None:
    """Lines as Rust's ``str::lines`` splits them, each one argument, not expanded again;
    content that is not UTF-8 is an ArgvError."""
    tried()
    path = tmp_path / "args"
    path.write_bytes(content)
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    before = [a for a in before if not a.startswith("@")]
    after = [a for a in after if not a.startswith("@")]
    try:
        call = parse(["rustc", *before, f"@{path}", *after])
    except ArgvError as e:
        if text is not None:
            raise AssertionError(f"a readable UTF-8 argfile was refused: {e}") from None
        return
    if text is None:
        accepted(f"an argfile that is not UTF-8 was read: {content!r}")
    # Rust's str::lines: split at \n, drop one \r before it, no empty last line.
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    lines = [
        line.removesuffix("\r") if i < len(lines) - 1 or text.endswith("\n") else line
        for i, line in enumerate(lines)
    ]
    assert call.args == [*before, *lines, *after]
    _check_call(call, call.args)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"a\rb\n", ["a\rb"]),  # rustc: one argument (it splits at \n only)
        (b"a\r\r\nb", ["a\r", "b"]),
        (b"\r", ["\r"]),
        (b"a\r\n\r\n", ["a", ""]),
        (b"\xef\xbb\xbfx\n", ["\ufeffx"]),
    ],
    ids=ascii,
)
def test_carriage_returns_in_an_argfile_split_like_rustc(
    tmp_path: Path, content: bytes, expected: list[str]
) -> None:
    """Python's universal newlines would make ``a\\rb`` two arguments; rustc sees one."""
    path = tmp_path / "args"
    path.write_bytes(content)
    tried()
    assert parse(["rustc", f"@{path}"]).args == expected


def test_arguments_with_every_byte_but_nul_parse() -> None:
    args = [os.fsdecode(bytes([b])) for b in range(1, 256)] + [os.fsdecode(bytes(range(1, 256)))]
    tried(len(args))
    call = parse(["rustc", *[a for a in args if not a.startswith("@")]])
    _check_call(call, call.args)


@pytest.mark.parametrize("n", [60_000])
def test_hundreds_of_thousands_of_arguments_are_handled_in_linear_time(n: int, tmp_path: Path) -> None:
    """A huge command line, on argv and in an argfile: no step is quadratic (the pytest
    timeout stops one that is; the quadratic one this found took minutes)."""
    base = ["lib.rs", "--crate-type", "lib", "--emit=dep-info,link", "--out-dir", "o"]
    args = base + ["-gCincremental=/i", "--cfg", "x", "-C", "incremental=/j", "-Lnative=/n"] * (n // 6)
    argfile = tmp_path / "many"
    argfile.write_text("\n".join(args) + "\n")
    for argv in (["rustc", *args], ["rustc", f"@{argfile}"]):
        tried()
        started = time.monotonic()
        call = parse(argv)
        assert len(call.args) == len(args)
        assert passthrough_reason(call) is None
        assert A.without_incremental(call.args).count("-g") == n // 6
        A.expected_outputs(call)
        assert time.monotonic() - started < 120  # a generous bound against hangs, not a timing


# --------------------------------------------------------------------------- cache.prepare


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, Store]]:
    """A crate directory (cwd) with a lib.rs, an rlib to --extern and a static lib, and a store."""
    (tmp_path / "lib.rs").write_text("pub fn f() -> u32 { 1 }\n")
    (tmp_path / "deps").mkdir()
    (tmp_path / "deps" / "liba.rlib").write_bytes(b"not really an rlib")
    (tmp_path / "native").mkdir()
    (tmp_path / "native" / "libz.a").write_bytes(b"!<arch>\n")
    (tmp_path / "t.json").write_text("{}")
    monkeypatch.chdir(tmp_path)
    store = Store(str(tmp_path / "store"))
    yield tmp_path, store
    store.close()


BASE = [
    RUSTC,
    "lib.rs",
    "--crate-name",
    "c",
    "--crate-type",
    "lib",
    "--emit=dep-info,metadata,link",
    "--out-dir",
    "o",
    "-C",
    "extra-filename=-h",
]
# fmt: off
_PREP_TOKENS = st.sampled_from([
    "--extern", "a=deps/liba.rlib", "b=missing.rlib", "c=", "priv:d=deps/liba.rlib", "-l", "static=z",
    "static:+verbatim=libz.a", "dylib=m", "-L", "native=native", "all=/", "-Lnative=native", "--target",
    "t.json", "missing.json", "-C", "incremental=/i", "opt-level=3", "extra-filename=-x", "--crate-name",
    "../escape", "c", "--crate-type", "lib,staticlib", "proc-macro", "--emit", "dep-info=o/x.d,link",
    "dep-info=elsewhere/x.d", "-o", "o/out", "--cfg", 'feature="x"', "/", "//", "..", ".",
])
# fmt: on
_PREP_TEXT = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\0"), max_size=10)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(extra=st.lists(st.one_of(_PREP_TOKENS, _PREP_TEXT), max_size=10), salt=_PREP_TEXT)
def test_the_cheap_key_of_any_cacheable_argv_is_computed_or_refused_as_documented(
    workdir: tuple[Path, Store], extra: list[str], salt: str
) -> None:
    tried()
    _, store = workdir
    argv = [*BASE, *[a for a in extra if not a.startswith("@")]]
    call = parse(argv)
    if passthrough_reason(call) is not None:
        return
    try:
        c = cache.prepare(call, argv, store, {"CARGO_PKG_NAME": "c", "HOME": "/nonexistent"}, {}, salt)
    except PREPARE_ERRORS:
        return
    assert len(c.mkey) == 64
    assert all(
        os.path.dirname(p) == c.out_dir.rstrip("/") or os.path.dirname(p) == os.path.normpath(c.out_dir)
        for p in c.outputs
    )


# Where the cheap-key preparation lets an undocumented error out. Each input is one a
# real build can hand kache: non-UTF-8 bytes in argv (a path in a Latin-1 checkout), a
# NUL in an @argfile line. The wrapper survives them (its catch-all prints "internal
# error" and runs rustc), but they should be plain pass-throughs.
KNOWN_PREPARE_ESCAPES = [
    pytest.param(["--extern", "a=deps/\udcff.rlib"], id="non-utf8-extern-path"),
    pytest.param(["-l", "static=\udcff", "-L", "native=native"], id="non-utf8-static-lib"),
    pytest.param(["--target", "\udcff.json"], id="non-utf8-target-spec"),
    pytest.param(["--extern", "a=deps/x\0y"], id="nul-in-extern-path"),
    pytest.param(["-L", "native=na\0tive", "-l", "static=z"], id="nul-in-lib-dir"),
    pytest.param(["--target", "t\0.json"], id="nul-in-target-spec"),
]


@pytest.mark.parametrize("extra", KNOWN_PREPARE_ESCAPES)
def test_unencodable_paths_make_a_call_uncacheable_not_an_internal_error(
    workdir: tuple[Path, Store], extra: list[str]
) -> None:
    tried()
    _, store = workdir
    argv = [*BASE, *extra]
    call = parse(argv)
    assert passthrough_reason(call) is None
    try:
        cache.prepare(call, argv, store, {"HOME": "/nonexistent"}, {}, "")
    except PREPARE_ERRORS:
        return
    accepted(f"a call with an unencodable path was keyed: {extra!r}")


# --------------------------------------------------------------------------- the real wrapper

CACHEABLE = [
    b"lib.rs",
    b"--crate-name",
    b"c",
    b"--crate-type",
    b"lib",
    b"--emit=dep-info,link",
    b"--out-dir",
    b"o",
]
E2E_CASES = {
    "missing-argfile": [b"@missing.args"],
    "non-utf8-argfile": [b"@bad.args"],
    "nul-in-argfile": [b"@nul.args"],
    "argfile-naming-itself": [b"@self.args"],
    "unknown-flag-in-a-cacheable-call": [*CACHEABLE, b"--frobnicate"],
    "bad-crate-name": [b"lib.rs", b"--crate-type", b"lib", b"--out-dir", b"o", b"--crate-name", b"../../x"],
    "non-utf8-cfg": [*CACHEABLE, b"--cfg", b"\xff\xfe"],
    "non-utf8-extern-path": [*CACHEABLE, b"--extern", b"a=deps/\xff.rlib"],
    "bad-edition": [*CACHEABLE, b"--edition", b"2099"],
    "thirty-thousand-arguments": [*CACHEABLE, *[b"--cfg", b"x"] * 15_000, b"--edition", b"1999"],
    "output-outside-out-dir": [*CACHEABLE, b"--emit=dep-info=../x.d,link", b"--crate-name", b"9"],
}


# A value-taking option left without its value at the end of a call kache handles: were
# kache to append its --remap-path-prefix flags, the dangling option would swallow the
# first of them and rustc would report another error. Such calls (anything kache does
# not understand) pass through untouched.
E2E_PARAMS = [pytest.param(name, id=name) for name in sorted(E2E_CASES)] + [
    pytest.param("option-without-its-value", id="option-without-its-value"),
    pytest.param("long-option-without-its-value", id="long-option-without-its-value"),
]
E2E_CASES["option-without-its-value"] = [*CACHEABLE, b"-C"]
E2E_CASES["long-option-without-its-value"] = [*CACHEABLE, b"--cfg"]


@pytest.fixture(scope="module")
def shared_caches(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """One store and one XDG cache dir for every wrapper run of this module, so the
    toolchain identity and the validated settings are worked out once."""
    base = tmp_path_factory.mktemp("wrapper-caches")
    return {
        "KACHE_CACHE_DIR": str(base / "store"),
        "XDG_CACHE_HOME": str(base / "xdg-cache"),
        "KACHE_DAEMON_AUTOSTART": "0",
    }


@pytest.fixture
def e2e_dir(tmp_path: Path) -> Path:
    d = tmp_path / "crate"
    d.mkdir()
    (d / "lib.rs").write_text("pub fn f() -> u32 { 1 }\n")
    (d / "deps").mkdir()
    (d / "bad.args").write_bytes(b"--cfg\n\xff\n")
    (d / "nul.args").write_bytes(b"lib.rs\n--crate-type\nlib\n--out-dir\no\n--extern\na=x\0y\n")
    (d / "self.args").write_bytes(b"@self.args\nlib.rs\n")
    return d


@pytest.mark.e2e
@pytest.mark.parametrize("case", E2E_PARAMS)
def test_the_wrapper_given_a_hostile_argv_exits_with_rustcs_status_and_message(
    case: str, e2e_dir: Path, shared_caches: dict[str, str], kache_exe: str
) -> None:
    args = E2E_CASES[case]
    env = {**os.environ, **shared_caches}
    rustc = os.fsencode(RUSTC)
    tried()
    plain = subprocess.run(
        [rustc, *args], cwd=e2e_dir, env=env, capture_output=True, stdin=subprocess.DEVNULL
    )
    shutil.rmtree(e2e_dir / "o", ignore_errors=True)
    wrapped = subprocess.run(
        [os.fsencode(kache_exe), rustc, *args],
        cwd=e2e_dir,
        env=env,
        capture_output=True,
        stdin=subprocess.DEVNULL,
    )
    err = wrapped.stderr.decode("utf-8", "replace")
    assert "Traceback" not in err, err
    assert wrapped.returncode == plain.returncode, (plain.stderr, err)
    # kache's own warnings never go to rustc's stderr (cargo would keep them with the unit);
    # a rustc panic names its thread's id, which differs from run to run
    import re

    def same_run(text: bytes) -> bytes:
        return re.sub(rb"thread '([^']*)' \(\d+\)", rb"thread '\1'", text)

    assert same_run(wrapped.stderr) == same_run(plain.stderr)
    assert wrapped.stdout == plain.stdout
