"""Native libraries a call can put into its output, resolved as rustc resolves them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kache.engine.argv import parse
from kache.engine.nativelibs import link_inputs, native_inputs, parse_lib, static_candidates


@pytest.mark.parametrize(("spec", "kind", "verbatim", "name"), [
    ("foo", "", False, "foo"),
    ("static=foo", "static", False, "foo"),
    ("static:+verbatim=libfoo.a", "static", True, "libfoo.a"),
    ("static:-bundle,+whole-archive=bar", "static", False, "bar"),
    ("static:+verbatim,-verbatim=baz", "static", False, "baz"),
    ("dylib=ssl:renamed", "dylib", False, "ssl"),
])
def test_lib_specs_parse_as_rustc_parses_them(spec: str, kind: str, verbatim: bool, name: str) -> None:
    lib = parse_lib(spec)
    assert (lib.kind, lib.verbatim, lib.name) == (kind, verbatim, name)


def test_candidates_follow_the_target() -> None:
    assert static_candidates(parse_lib("static=foo"), "elf") == ["libfoo.a"]
    assert static_candidates(parse_lib("static=foo"), "windows-msvc") == ["foo.lib", "libfoo.a"]
    assert static_candidates(parse_lib("static:+verbatim=x.o"), "elf") == ["x.o"]


def _call(tmp_path: Path, *extra: str):
    return parse(["rustc", "--crate-name", "c", "--crate-type", "lib", "src/lib.rs", "--out-dir",
                  str(tmp_path / "target/debug/deps"), *extra])


def test_build_script_dirs_are_listed_whole_and_others_not(tmp_path: Path) -> None:
    out = tmp_path / "target/debug/build/c-1/out"
    out.mkdir(parents=True)
    (out / "libfoo.a").write_bytes(b"!<arch>\n")
    (out / "gen.rs").write_text("")
    (out / "sub").mkdir()
    system = tmp_path / "usr/lib"
    system.mkdir(parents=True)
    (system / "libbar.a").write_bytes(b"x")
    (system / "libother.a").write_bytes(b"y")
    call = _call(tmp_path, "-L", f"native={out}", "-L", f"native={system}", "-l", "static=bar", "-l", "dylib=z")
    libs, dirs = native_inputs(call, str(tmp_path / "ws"), str(tmp_path / "target"), "elf")
    assert libs == [("static=bar", str(system / "libbar.a"))]
    assert dirs == [(str(out), [str(out / "gen.rs"), str(out / "libfoo.a")])]


def test_a_missing_static_library_is_keyed_as_missing(tmp_path: Path) -> None:
    call = _call(tmp_path, "-L", f"native={tmp_path}/nowhere", "-l", "static:+verbatim=libq.a")
    libs, _ = native_inputs(call, str(tmp_path), None, "elf")
    assert libs == [("static:+verbatim=libq.a", f"{tmp_path}/nowhere/libq.a")]


def test_a_linking_call_reads_its_linker_and_link_arg_files(tmp_path: Path) -> None:
    linker = tmp_path / "my-cc"
    linker.write_text("#!/bin/sh\nexec cc \"$@\"\n")
    linker.chmod(0o755)
    (tmp_path / "extra.o").write_bytes(b"\x7fELF")
    (tmp_path / "libw.a").write_bytes(b"!<arch>\n")
    args = ["rustc", "--crate-name", "app", "--crate-type", "bin", "src/main.rs", "--out-dir", "o",
            "-C", f"linker={linker}", "-C", "link-arg=extra.o", "-C", "link-args=-Wl,--whole-archive,libw.a -lm"]
    call = parse(args)
    found = link_inputs(call, ["bin"], str(tmp_path), {"PATH": os.defpath})
    assert ("linker", str(linker)) in found
    assert ("link-arg:extra.o", str(tmp_path / "extra.o")) in found
    assert ("link-arg:libw.a", str(tmp_path / "libw.a")) in found
    assert link_inputs(call, ["rlib"], str(tmp_path), {}) == []  # an rlib does not link


def test_libraries_and_response_files_named_by_link_args_are_read(tmp_path: Path) -> None:
    """-C link-arg=-L<dir> -C link-arg=-l<name>, and -Wl,@<file> whose words name objects."""
    libdir = tmp_path / "obj"
    libdir.mkdir()
    (libdir / "libmagic.a").write_bytes(b"!<arch>\n")
    (libdir / "m.o").write_bytes(b"\x7fELF")
    (libdir / "rsp").write_text(f"{libdir}/m.o\n")
    args = ["rustc", "--crate-name", "build_script_build", "--crate-type", "bin", "build.rs", "--out-dir", "o",
            "-C", f"link-arg=-L{libdir}", "-C", "link-arg=-lmagic", "-C", f"link-arg=-Wl,@{libdir}/rsp"]
    found = dict((label, path) for label, path in link_inputs(parse(args), ["bin"], str(tmp_path), {}))
    assert found["link-lib:magic:libmagic.a"] == str(libdir / "libmagic.a")
    assert found[f"link-arg:@{libdir}/rsp"] == str(libdir / "rsp")
    assert found[f"link-arg:{libdir}/m.o"] == str(libdir / "m.o")
