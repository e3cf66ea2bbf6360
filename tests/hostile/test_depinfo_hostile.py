"""Dep-info (``.d``) text that rustc never wrote: arbitrary and mutated text, NUL bytes,
lines without a colon, CRLF endings, and files of several megabytes.

kache reads a ``.d`` after every compile and writes one back on every hit, from a blob
that may have come from the remote. The documented failure of ``parse`` and ``render``
is ``DepInfoError`` (a ValueError, which the hit path turns into "compile instead");
anything else would escape as an internal error. And whatever ``parse`` accepts must
render back byte for byte, or a hit would hand cargo a different file.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kache.engine import restore
from kache.engine.depinfo import DepInfo, DepInfoError, map_paths, parse, render
from kache.paths import Normalizer
from tests.support.hostile import refused, tried

pytestmark = pytest.mark.hostile

# A dep-info as rustc 1.95 writes it for a cargo build (paths normalised as kache stores
# them), with every section: rules, dependency lines, env-deps, a checksum.
STORED = """\
<TARGET>/debug/deps/util-dbe8f10e3f5b4e8d.d: <CWD>/util/src/lib.rs <CWD>/util/src/a\\ b.rs <CARGO>/x.rs

<TARGET>/debug/deps/libutil-dbe8f10e3f5b4e8d.rlib: <CWD>/util/src/lib.rs <CWD>/util/src/a\\ b.rs <CARGO>/x.rs

<CWD>/util/src/lib.rs:
<CWD>/util/src/a\\ b.rs:
<CARGO>/x.rs:

# env-dep:CARGO_PKG_NAME=util
# env-dep:WEIRD=a\\nb\\\\c\\r=#
# env-dep:UNSET
# checksum:blake3=9eb336b8 file_len:198 <CWD>/util/src/lib.rs
"""


def _normalizer(tmp: str) -> Normalizer:
    return Normalizer(
        {
            "<CWD>": tmp,
            "<TARGET>": os.path.join(tmp, "target"),
            "<CARGO>": os.path.join(tmp, "cargo"),
            "<HOME>": os.path.join(tmp, "home"),
        }
    )


def _restore_like_a_hit(text: str, tmp: str) -> str:
    """What the hit path does with a stored ``.d`` (kache.engine.restore.expand_depinfo):
    parse, expand the sentinels to this machine's paths, take env values from this
    environment, render."""

    class _Call:  # the two attributes _expand_depinfo reads
        norm = _normalizer(tmp)
        env = {"CARGO_PKG_NAME": "util", "WEIRD": "x"}

    return restore.expand_depinfo(_Call(), text)  # type: ignore[arg-type]


def _check(text: str, tmp: str = "/w") -> None:
    """The properties every text must have: parse raises only DepInfoError; accepted text
    renders back identically; the hit path's rewrite raises only DepInfoError."""
    tried()
    try:
        info = parse(text)
    except DepInfoError:
        return
    assert isinstance(info, DepInfo)
    try:
        again = render(info)
    except DepInfoError:
        pass
    else:
        assert again == text, "an accepted dep-info did not render back byte for byte"
    norm = _normalizer(tmp)
    for fn in (norm.expand, norm.path):
        try:
            render(map_paths(info, fn))
        except DepInfoError:
            pass
    try:
        _restore_like_a_hit(text, tmp)
    except DepInfoError:
        pass


def test_the_stored_example_is_valid_and_restores() -> None:
    assert render(parse(STORED)) == STORED
    out = _restore_like_a_hit(STORED, "/w")
    assert out.startswith("/w/target/debug/deps/util-dbe8f10e3f5b4e8d.d: ")
    assert ".d: /w/util/src/lib.rs /w/util/src/a\\ b.rs /w/cargo/x.rs\n" in out
    assert "# env-dep:WEIRD=x\n# env-dep:UNSET\n" in out


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=200))
def test_arbitrary_text_is_refused_with_a_dep_info_error_or_round_trips(text: str) -> None:
    _check(text)


_LINES = st.sampled_from([
    "", "t: a", "t: ", "a:", "b:", "a\\ b:", "# env-dep:X", "# env-dep:X=1", "# env-dep:X=\\",
    "# checksum:b=0 file_len:3 a", "# checksum:b=0 file_len:99999999999999999999999 a", ": ", "\\", " ",
])


@settings(max_examples=600, deadline=None)
@given(lines=st.lists(st.one_of(_LINES, st.text(max_size=10)), max_size=10), final_newline=st.booleans())
def test_lines_of_dep_info_pieces_are_refused_or_round_trip(lines: list[str], final_newline: bool) -> None:
    _check("\n".join(lines) + ("\n" if final_newline else ""))


_EDITS = st.lists(
    st.tuples(
        st.sampled_from(["delete", "insert", "replace", "duplicate-line", "drop-line"]),
        st.integers(0, len(STORED) - 1),
        st.sampled_from(
            [
                "\0",
                ":",
                " ",
                "\\",
                "\n",
                "\r",
                "#",
                "=",
                "\\ ",
                "# env-dep:",
                ": ",
                "x",
                "é",
                "\u2028",
                "\x85",
            ]
        ),
    ),
    min_size=1,
    max_size=4,
)


def _mutate(text: str, edits: list[tuple[str, int, str]]) -> str:
    for kind, pos, piece in edits:
        pos = pos % (len(text) + 1)
        if kind == "delete":
            text = text[:pos] + text[pos + 1 :]
        elif kind == "insert":
            text = text[:pos] + piece + text[pos:]
        elif kind == "replace":
            text = text[:pos] + piece + text[pos + 1 :]
        else:
            lines = text.split("\n")
            i = pos % len(lines)
            lines[i : i + 1] = [lines[i], lines[i]] if kind == "duplicate-line" else []
            text = "\n".join(lines)
    return text


@settings(max_examples=400, deadline=None)
@given(edits=_EDITS)
def test_a_mutated_dep_info_is_refused_or_round_trips(edits: list[tuple[str, int, str]]) -> None:
    _check(_mutate(STORED, edits))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(max_size=120))
def test_the_hit_path_rewrite_holds_in_a_real_directory(
    tmp_path_factory: pytest.TempPathFactory, text: str
) -> None:
    """Sentinels expanded into a real directory whose name has a space."""
    _check(text, str(tmp_path_factory.getbasetemp() / "a dir"))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("t: a\n\na\n", "expected `<path>:`"),
        ("t: a\n\nno colon at all\n", "expected `<path>:`"),
        ("t\n\n", "does not list the dependency lines"),
        ("just text\n", "expected `<path>:`"),
        ("t: a\r\n\r\na:\r\n", "expected `<path>:`"),
        ("t: a\n\na:\r\n", "expected `<path>:`"),
        ("\0\n", "expected `<path>:`"),
        ("t: a\0\n\na:\n", "does not list the dependency lines"),
        ("t: a\n\na:\n\n# env-dep:A=\\\0\n", "bad escape"),
        ("t: a\n\na:\n# checksum:b=0 file_len:\0 a\n", "bad checksum"),
        ("t: a\n\na:\n# checksum:b=0 file_len:１ a\n", "bad checksum"),
        ("t: a\n\na:\n# checksum:b=0 file_len:" + "9" * 21 + " a\n", "bad checksum"),
        ("t: a\n\na:", "does not end with a newline"),
        ("\n" * 10, "expected a rule line"),
    ],
    ids=ascii,
)
def test_lines_without_a_colon_nul_bytes_and_crlf_are_dep_info_errors(text: str, message: str) -> None:
    with refused(DepInfoError, match=message):
        parse(text)


def test_nul_bytes_inside_paths_and_env_values_are_data_and_round_trip() -> None:
    """rustc never writes NUL, but the format has no reason to refuse it: it is kept as
    is, in and out (the file system refuses such a path later, when it is hashed)."""
    text = "t\0: a\0b\n\na\0b:\n\n# env-dep:N\0=v\0\n"
    tried()
    info = parse(text)
    assert info == DepInfo(targets=["t\0"], files=["a\0b"], env=[("N\0", "v\0")])
    assert render(info) == text


def test_a_dep_info_of_several_megabytes_parses_and_round_trips() -> None:
    files = [f"<CWD>/src/m{i:06d}/with\\ space/file.rs" for i in range(50_000)]
    deps = " ".join(files)
    text = "".join(f"<TARGET>/t{i}: {deps}\n\n" for i in range(3)) + "".join(f"{f}:\n" for f in files)
    text += "\n" + "".join(f"# env-dep:V{i}={'x' * 50}\\n\n" for i in range(10_000))
    assert len(text) > 8_000_000
    _check(text)
    assert len(parse(text).files) == 50_000


@pytest.mark.parametrize(
    "text",
    [
        "x" * (8 << 20) + "\n",  # one 8 MiB line, no colon
        "t: " + "a " * (2 << 20) + "\n\n",  # a rule naming 2M deps, no dependency lines
        "a:\n" * (1 << 20),  # one dependency listed a million times
        "a:\n\n" + "# env-dep:X=" + "\\q" * (2 << 20) + "\n",  # 4 MiB of bad escapes
        "\n" * (4 << 20),
    ],
    ids=["long-line", "huge-rule", "million-duplicates", "bad-escapes", "empty-lines"],
)
def test_huge_malformed_dep_info_is_a_dep_info_error(text: str) -> None:
    with refused(DepInfoError):
        parse(text)


def test_a_long_env_value_full_of_escapes_is_read_whole() -> None:
    value = "\\n\\\\\\r" * (1 << 18)
    text = f"a:\n\n# env-dep:X={value}\n"
    tried()
    info = parse(text)
    assert info.env == [("X", "\n\\\r" * (1 << 18))]
    assert render(info) == text
