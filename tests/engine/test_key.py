"""``env_only_locates_files``: when an absolute env-dep value may be keyed normalised (only on
proof from the crate's own sources)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kache.engine.key import env_only_locates_files

INCLUDE = 'include!(concat!(env!("OUT_DIR"), "/generated.rs"));\n'


def _sources(tmp_path: Path, *texts: str) -> list[str]:
    paths = []
    for i, text in enumerate(texts):
        p = tmp_path / f"f{i}.rs"
        p.write_text(text)
        paths.append(str(p))
    return paths


@pytest.mark.parametrize(("texts", "expected"), [
    ((INCLUDE, "pub fn f() {}\n"), True),  # only inside include!(concat!(env!(…)))
    (("pub fn f() {}\n",), False),  # never named: read through a macro of another crate
    (('include!(env!("OUT_DIR"));\n',), True),  # include!(env!(…)) alone
    (('include!(env!("OUT_DIR")); const N: usize = env!("OUT_DIR").len();\n',), False),  # and baked
    (('const L: usize = env!("OUT_DIR").len();\n',), False),  # transformed, not a file
    (('const S: &str = "OUT_DIR";\n', INCLUDE), True),  # named, but not read by env!
    (('include_str!(concat!(env!("OUT_DIR"), "/a.txt"));\n',), True),
    ((INCLUDE, 'pub const DIR: &str = env!("OUT_DIR");\n'), False),  # baked into the artifact
    (('const D: Option<&str> = option_env!( "OUT_DIR" );\n',), False),
    ((INCLUDE + 'const D: &str = env!("OUT_DIR");\n',), False),  # one file, both uses
])
def test_which_uses_allow_a_normalised_key(tmp_path: Path, texts: tuple[str, ...], expected: bool) -> None:
    assert env_only_locates_files("OUT_DIR", _sources(tmp_path, *texts)) is expected


def test_another_variable_is_not_this_one(tmp_path: Path) -> None:
    sources = _sources(tmp_path, 'const D: &str = env!("OUT_DIR_2");\n', 'const E: &str = env!("MY_OUT_DIR");\n',
                       INCLUDE)
    assert env_only_locates_files("OUT_DIR", sources) is True
    assert env_only_locates_files("OUT_DIR_2", sources) is False


def test_an_unreadable_source_counts_as_no(tmp_path: Path) -> None:
    assert env_only_locates_files("OUT_DIR", [*_sources(tmp_path, INCLUDE), str(tmp_path / "gone.rs")]) is False
