"""kache.engine.depinfo: rustc's .d files, parsed and written back byte for byte."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kache.engine.depinfo import DepInfo, DepInfoError, map_paths, parse, render
from tests.support.hostile import refused

# An env value with every character rustc escapes, and some it does not.
WEIRD_VALUE = "a b\\c\nd\re=f#: \\n"

LIB_RS = """\
pub mod sub;
pub const NAME: &str = env!("CARGO_PKG_NAME");
pub const NOPE: Option<&str> = option_env!("KACHE_TEST_NOPE");
pub const EMPTY: Option<&str> = option_env!("KACHE_TEST_EMPTY");
pub const WEIRD: &str = env!("KACHE_TEST_WEIRD");
pub const TXT: &str = include_str!("data file.txt");
"""


def _rustc(cwd: Path, *args: str) -> None:
    env = {
        **os.environ,
        "CARGO_PKG_NAME": "util",
        "KACHE_TEST_EMPTY": "",
        "KACHE_TEST_WEIRD": WEIRD_VALUE,
    }
    env.pop("KACHE_TEST_NOPE", None)
    proc = subprocess.run(["rustc", *args], cwd=cwd, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


@pytest.fixture(scope="module")
def real_depinfo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, str]]:
    """Dep-info files written by real rustc 1.95, by case name: (workspace, text)."""
    ws = tmp_path_factory.mktemp("ws")
    src = ws / "src dir"
    src.mkdir()
    (src / "lib.rs").write_text(LIB_RS)
    (src / "sub.rs").write_text("pub fn f() -> u32 { 1 }\n")
    (src / "data file.txt").write_text("hello\n")
    (ws / "main.rs").write_text("fn main() {}\n")
    out = ws / "out dir"
    out.mkdir()
    x = ["-C", "extra-filename=-abc"]
    # Relative paths, as for a workspace member; the out-dir has a space.
    _rustc(ws, "--crate-name", "util", "--edition=2021", "src dir/lib.rs", "--crate-type", "lib",
           "--emit=dep-info,metadata,link", *x, "--out-dir", "out dir")
    # Absolute paths, as for a registry crate; several crate types (duplicate targets).
    (ws / "abs").mkdir()
    _rustc(ws, "--crate-name", "util", "--edition=2021", str(src / "lib.rs"),
           "--crate-type", "lib,dylib,cdylib", "--emit=dep-info,metadata,link", "-C", "extra-filename=-def",
           "--out-dir", str(ws / "abs"))
    # A bin without env deps, dep-info only.
    _rustc(ws, "--crate-name", "m", "main.rs", "--emit=dep-info", "-C", "extra-filename=-m", "--out-dir", "out dir")
    return {
        "relative": (ws, (out / "util-abc.d").read_text()),
        "absolute": (ws, (ws / "abs" / "util-def.d").read_text()),
        "bin": (ws, (out / "m-m.d").read_text()),
    }


# --- real rustc output ---------------------------------------------------------------

@pytest.mark.parametrize("case", ["relative", "absolute", "bin"])
def test_render_reproduces_real_rustc_output_byte_for_byte(
    real_depinfo: dict[str, tuple[Path, str]], case: str
) -> None:
    _, text = real_depinfo[case]
    assert render(parse(text)) == text


def test_real_dep_info_lists_sources_env_and_escapes(real_depinfo: dict[str, tuple[Path, str]]) -> None:
    _, text = real_depinfo["relative"]
    assert "src\\ dir/data\\ file.txt:\n" in text  # deps escape spaces…
    assert "out dir/libutil-abc.rlib: " in text  # …targets do not
    info = parse(text)
    assert info.targets == ["out dir/util-abc.d", "out dir/libutil-abc.rlib", "out dir/libutil-abc.rmeta"]
    assert info.files == ["src dir/lib.rs", "src dir/sub.rs", "src dir/data file.txt"]
    assert info.env == [
        ("CARGO_PKG_NAME", "util"),
        ("KACHE_TEST_EMPTY", ""),
        ("KACHE_TEST_NOPE", None),
        ("KACHE_TEST_WEIRD", WEIRD_VALUE),
    ]
    assert info.checksums == []


def test_real_dep_info_escapes_env_values_like_rustc(real_depinfo: dict[str, tuple[Path, str]]) -> None:
    _, text = real_depinfo["relative"]
    assert "# env-dep:KACHE_TEST_WEIRD=a b\\\\c\\nd\\re=f#: \\\\n\n" in text


def test_duplicate_targets_from_several_crate_types_are_kept(real_depinfo: dict[str, tuple[Path, str]]) -> None:
    ws, text = real_depinfo["absolute"]
    info = parse(text)
    so = str(ws / "abs" / "libutil-def.so")
    assert info.targets.count(so) == 2
    assert info.files[0] == str(ws / "src dir" / "lib.rs")


def test_bin_without_env_deps_has_no_comment_section(real_depinfo: dict[str, tuple[Path, str]]) -> None:
    _, text = real_depinfo["bin"]
    assert text == "out dir/m-m.d: main.rs\n\nmain.rs:\n"
    assert parse(text) == DepInfo(targets=["out dir/m-m.d"], files=["main.rs"], env=[])


# Logged from `cargo clippy` (rustc 1.95) and from nightly with -Z checksum-hash-algorithm.
CLIPPY_D = """\
/ws/target/debug/deps/app-90c40d9c47e7b096.d: app/src/main.rs Cargo.toml

/ws/target/debug/deps/libapp-90c40d9c47e7b096.rmeta: app/src/main.rs Cargo.toml

app/src/main.rs:
Cargo.toml:

# env-dep:CLIPPY_ARGS=
# env-dep:CLIPPY_CONF_DIR
# env-dep:FOO=bar
"""
NIGHTLY_CHECKSUM_D = """\
o/a b/x-n.d: src\\ dir/my\\ lib.rs src\\ dir/my\\ txt.txt

o/a b/libx-n.rmeta: src\\ dir/my\\ lib.rs src\\ dir/my\\ txt.txt

src\\ dir/my\\ lib.rs:
src\\ dir/my\\ txt.txt:

# env-dep:UNSET_V
# env-dep:WEIRD=x
# checksum:blake3=9eb336b8bd9e4b93aa282e397832549b89368e394ca8bf02b7275ec826f0e62c file_len:198 src\\ dir/my\\ lib.rs
"""
NIGHTLY_CHECKSUM_NO_ENV_D = """\
e.d: ../emp/e.rs

../emp/e.rs:
# checksum:sha256=01ba4719c80b6fe911b091a7c05124b64eeece964e09c058ef8f9805daca546b file_len:1 ../emp/e.rs
"""


@pytest.mark.parametrize("text", [CLIPPY_D, NIGHTLY_CHECKSUM_D, NIGHTLY_CHECKSUM_NO_ENV_D])
def test_logged_dep_info_files_round_trip(text: str) -> None:
    assert render(parse(text)) == text


def test_clippy_dep_info_lists_cargo_toml_and_clippy_env() -> None:
    info = parse(CLIPPY_D)
    assert info.files == ["app/src/main.rs", "Cargo.toml"]
    assert ("CLIPPY_ARGS", "") in info.env
    assert ("CLIPPY_CONF_DIR", None) in info.env


def test_checksum_lines_are_parsed_with_unescaped_paths() -> None:
    info = parse(NIGHTLY_CHECKSUM_D)
    assert info.checksums == [
        ("blake3=9eb336b8bd9e4b93aa282e397832549b89368e394ca8bf02b7275ec826f0e62c", 198, "src dir/my lib.rs"),
    ]
    assert info.env == [("UNSET_V", None), ("WEIRD", "x")]
    assert parse(NIGHTLY_CHECKSUM_NO_ENV_D).checksums[0][1:] == (1, "../emp/e.rs")


# --- the format's corners ------------------------------------------------------------

def test_target_without_dependencies_keeps_the_trailing_space() -> None:
    info = DepInfo(targets=["o/x.d"], files=[], env=[("A", "1")])
    assert render(info) == "o/x.d: \n\n\n# env-dep:A=1\n"
    assert parse(render(info)) == info


def test_empty_dep_info_is_the_empty_string() -> None:
    assert render(DepInfo()) == ""
    assert parse("") == DepInfo()


def test_targets_may_contain_colons_and_spaces() -> None:
    info = DepInfo(targets=["C:/out dir/a: b.d"], files=["x y.rs", "z.rs"], env=[])
    text = render(info)
    assert text.startswith("C:/out dir/a: b.d: x\\ y.rs z.rs\n\n")
    assert parse(text) == info


def test_dependency_paths_with_backslashes_before_spaces_round_trip() -> None:
    info = DepInfo(targets=["t"], files=["a\\ b", "c\\", "\\ "], env=[])
    assert parse(render(info)) == info


def test_render_writes_each_file_once() -> None:
    assert render(DepInfo(targets=["t"], files=["a", "a", "b"])) == "t: a b\n\na:\nb:\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("t: a\n\na:", "does not end with a newline"),
        ("t: a b\n\na:\n", "does not list the dependency lines"),
        ("t: a\na:\n", "expected `<path>:`"),
        ("t: a\n\na\n", "expected `<path>:`"),
        ("t: a b\n\na b:\n", "unescaped space"),
        ("t: a a\n\na:\na:\n", "listed twice"),
        ("a:\n# env-dep:X=1\n", "must follow an empty line"),
        ("a:\n\n# env-dep:X=\\q\n", "bad escape"),
        ("a:\n\n# env-dep:X=\\\n", "bad escape"),
        ("a:\n# checksum:blake3=00 file_len:x a\n", "bad checksum"),
        ("a:\n# checksum:blake3=00 a\n", "bad checksum"),
        ("\n\nt: \n\n", "expected a rule line"),
    ],
)
@pytest.mark.hostile
def test_malformed_dep_info_is_a_dep_info_error(text: str, message: str) -> None:
    with refused(DepInfoError, match=message):
        parse(text)


def test_dep_info_error_is_a_value_error() -> None:
    assert issubclass(DepInfoError, ValueError)


@pytest.mark.parametrize(
    "info",
    [
        DepInfo(targets=["a\nb"]),
        DepInfo(files=["a\nb"]),
        DepInfo(env=[("A=B", "1")]),
        DepInfo(checksums=[("blake3 x", 1, "a")]),
        DepInfo(checksums=[("blake3=00", -1, "a")]),
    ],
)
@pytest.mark.hostile
def test_render_refuses_what_the_format_cannot_hold(info: DepInfo) -> None:
    with refused(DepInfoError, match="cannot write dep-info"):
        render(info)


# --- map_paths -----------------------------------------------------------------------

def test_map_paths_relocates_targets_files_and_checksums_but_not_env() -> None:
    info = parse(NIGHTLY_CHECKSUM_D)
    moved = map_paths(info, lambda p: "/new/" + p)
    assert moved.targets == ["/new/o/a b/x-n.d", "/new/o/a b/libx-n.rmeta"]
    assert moved.files == ["/new/src dir/my lib.rs", "/new/src dir/my txt.txt"]
    assert moved.checksums[0][2] == "/new/src dir/my lib.rs"
    assert moved.env == info.env
    assert map_paths(moved, lambda p: p.removeprefix("/new/")) == info
    assert info.targets[0] == "o/a b/x-n.d"  # the original is not modified


def test_map_paths_to_sentinels_and_back_reproduces_the_file(real_depinfo: dict[str, tuple[Path, str]]) -> None:
    ws, text = real_depinfo["absolute"]
    root = str(ws)

    def to_sentinel(p: str) -> str:
        return "${WS}" + p[len(root):] if p.startswith(root + "/") else p

    stored = render(map_paths(parse(text), to_sentinel))
    assert root not in stored
    restored = map_paths(parse(stored), lambda p: p.replace("${WS}", root, 1))
    assert render(restored) == text


def test_map_paths_merges_files_that_map_to_the_same_path() -> None:
    info = DepInfo(targets=["t"], files=["a", "b", "c"])
    assert map_paths(info, lambda p: "x" if p in "ab" else p).files == ["x", "c"]


# --- properties ----------------------------------------------------------------------

_PATH_CHARS = st.characters(blacklist_categories=("Cs",), blacklist_characters="\n")
_paths = st.text(_PATH_CHARS, max_size=12)
_env_names = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="="), max_size=8)
_env_values = st.none() | st.text(st.characters(blacklist_categories=("Cs",)), max_size=10)
_checksums = st.tuples(st.from_regex(r"[a-z0-9]{1,6}=[0-9a-f]{0,8}", fullmatch=True),
                       st.integers(0, 10**12), _paths)
_depinfos = st.builds(
    DepInfo,
    targets=st.lists(_paths, max_size=4),
    files=st.lists(_paths, max_size=5, unique=True),
    env=st.lists(st.tuples(_env_names, _env_values), max_size=4),
    checksums=st.lists(_checksums, max_size=3),
)


@settings(max_examples=400, deadline=None)
@given(info=_depinfos)
def test_parse_inverts_render(info: DepInfo) -> None:
    assert parse(render(info)) == info
