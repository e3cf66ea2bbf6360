"""kache.engine.argv: parsing rustc command lines the way rustc and cargo mean them.

The CARGO_* fixtures are real argv lines logged from cargo 1.95 (build, check, test,
clippy, release, a vendored registry crate with RUSTFLAGS), with paths made generic.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kache.engine import argv as A
from kache.engine import depinfo
from kache.engine.argv import ArgvError, RustcCall, parse, passthrough_reason
from tests.support.hostile import refused

RUSTC = "/opt/rust/toolchains/stable-x86_64-unknown-linux-gnu/bin/rustc"
CLIPPY = "/opt/rust/toolchains/stable-x86_64-unknown-linux-gnu/bin/clippy-driver"
T = "/ws/target/debug"
COMMON = [
    "--error-format=json", "--json=diagnostic-rendered-ansi,artifacts,future-incompat",
]
CHECK_CFG = ["--check-cfg", "cfg(docsrs,test)", "--check-cfg", "cfg(feature, values())"]

CARGO_VERSION_PROBE = [RUSTC, "-vV"]
CARGO_TARGET_INFO_PROBE = [
    RUSTC, "-", "--crate-name", "___", "--print=file-names", "--crate-type", "bin",
    "--crate-type", "rlib", "--crate-type", "dylib", "--crate-type", "cdylib",
    "--crate-type", "staticlib", "--crate-type", "proc-macro", "--print=sysroot",
    "--print=split-debuginfo", "--print=crate-name", "--print=cfg", "-Wwarnings",
]
CARGO_LIB = [
    RUSTC, "--crate-name", "util", "--edition=2024", "util/src/lib.rs", *COMMON,
    "--crate-type", "lib", "--emit=dep-info,metadata,link", "-C", "embed-bitcode=no",
    "-C", "debuginfo=2", *CHECK_CFG, "-C", "metadata=467466d17e411364",
    "-C", "extra-filename=-dbe8f10e3f5b4e8d", "--out-dir", f"{T}/deps",
    "-C", f"incremental={T}/incremental", "-L", f"dependency={T}/deps",
]
CARGO_PROC_MACRO = [
    RUSTC, "--crate-name", "pm", "--edition=2024", "pm/src/lib.rs", *COMMON,
    "--crate-type", "proc-macro", "--emit=dep-info,link", "-C", "prefer-dynamic",
    "-C", "embed-bitcode=no", "-C", "debuginfo=2", *CHECK_CFG,
    "-C", "metadata=bc7c1998b6da53ae", "-C", "extra-filename=-2c61cc1d30490ca0",
    "--out-dir", f"{T}/deps", "-C", f"incremental={T}/incremental",
    "-L", f"dependency={T}/deps", "--extern", "proc_macro",
]
CARGO_BUILD_SCRIPT = [
    RUSTC, "--crate-name", "build_script_build", "--edition=2024", "app/build.rs", *COMMON,
    "--crate-type", "bin", "--emit=dep-info,link", "-C", "embed-bitcode=no", *CHECK_CFG,
    "-C", "metadata=fcd2f0952a406af6", "-C", "extra-filename=-992f77b1e7542367",
    "--out-dir", f"{T}/build/app-992f77b1e7542367", "-C", f"incremental={T}/incremental",
    "-L", f"dependency={T}/deps",
]
CARGO_BIN = [
    RUSTC, "--crate-name", "app", "--edition=2024", "app/src/main.rs", *COMMON,
    "--crate-type", "bin", "--emit=dep-info,link", "-C", "embed-bitcode=no",
    "-C", "debuginfo=2", *CHECK_CFG, "-C", "metadata=479bd2d675707d40",
    "-C", "extra-filename=-10210e9865cecccc", "--out-dir", f"{T}/deps",
    "-C", f"incremental={T}/incremental", "-L", f"dependency={T}/deps",
    "--extern", f"pm={T}/deps/libpm-2c61cc1d30490ca0.so",
    "--extern", f"util={T}/deps/libutil-dbe8f10e3f5b4e8d.rlib",
]
CARGO_TEST = [
    RUSTC, "--crate-name", "util", "--edition=2024", "util/src/lib.rs", *COMMON,
    "--emit=dep-info,link", "-C", "embed-bitcode=no", "-C", "debuginfo=2", "--test",
    *CHECK_CFG, "-C", "metadata=d459aebc9f810901", "-C", "extra-filename=-eca8382d2d7a75cb",
    "--out-dir", f"{T}/deps", "-C", f"incremental={T}/incremental",
    "-L", f"dependency={T}/deps",
]
CARGO_CHECK_BIN = [
    RUSTC, "--crate-name", "app", "--edition=2024", "app/src/main.rs", *COMMON,
    "--crate-type", "bin", "--emit=dep-info,metadata", "-C", "embed-bitcode=no",
    "-C", "debuginfo=2", *CHECK_CFG, "-C", "metadata=87b037b7c53a5dd9",
    "-C", "extra-filename=-a08dfdb55ac5b43d", "--out-dir", f"{T}/deps",
    "-C", f"incremental={T}/incremental", "-L", f"dependency={T}/deps",
    "--extern", f"pm={T}/deps/libpm-2a7b35dca22282a5.so",
    "--extern", f"util={T}/deps/libutil-2a7818aa501b464b.rmeta",
]
CARGO_CLIPPY_LIB = [CLIPPY, RUSTC, *CARGO_LIB[1:]]
# A vendored registry crate: cwd is the package dir, the source path is absolute, lints
# are capped, and RUSTFLAGS come last.
CARGO_REGISTRY_DEP = [
    RUSTC, "--crate-name", "foo_bar", "--edition=2021", "/vendor/foo-0.1.0/src/lib.rs",
    *COMMON, "--crate-type", "lib", "--emit=dep-info,metadata,link", "-C", "embed-bitcode=no",
    "-C", "debuginfo=2", *CHECK_CFG, "-C", "metadata=2d83d65a224d077f",
    "-C", "extra-filename=-4fab38ff47f53e9b", "--out-dir", "/proj/target/debug/deps",
    "-L", "dependency=/proj/target/debug/deps", "--cap-lints", "allow",
    "-Ctarget-cpu=native", "--cfg", "foo",
]


# --- cargo's real command lines ------------------------------------------------------

def test_cargo_lib_call_is_fully_understood() -> None:
    call = parse(CARGO_LIB)
    assert call.compiler == RUSTC
    assert call.compiler_args_prefix == []
    assert call.args == CARGO_LIB[1:]
    assert call.raw_args == CARGO_LIB[1:]
    assert call.crate_name == "util"
    assert call.edition == "2024"
    assert call.src == "util/src/lib.rs"
    assert call.inputs == ["util/src/lib.rs"]
    assert call.crate_types == ["lib"]
    assert call.emit == {"dep-info": None, "metadata": None, "link": None}
    assert call.error_format == "json"
    assert call.json == "diagnostic-rendered-ansi,artifacts,future-incompat"
    assert call.codegen == [
        "embed-bitcode=no", "debuginfo=2", "metadata=467466d17e411364",
        "extra-filename=-dbe8f10e3f5b4e8d", f"incremental={T}/incremental",
    ]
    assert call.check_cfgs == ["cfg(docsrs,test)", "cfg(feature, values())"]
    assert call.metadata == ["467466d17e411364"]
    assert call.extra_filename == "-dbe8f10e3f5b4e8d"
    assert call.out_dir == f"{T}/deps"
    assert call.incremental == f"{T}/incremental"
    assert call.lib_paths == [("dependency", f"{T}/deps")]
    assert call.other == []
    assert call.is_test is False
    assert call.has_stdin_src is False
    assert passthrough_reason(call, cache_executables=False) is None


def test_cargo_proc_macro_is_cacheable_with_a_bare_proc_macro_extern() -> None:
    call = parse(CARGO_PROC_MACRO)
    assert call.crate_types == ["proc-macro"]
    assert call.externs == [("proc_macro", None)]
    assert call.extern_args == ["proc_macro"]
    assert "prefer-dynamic" in call.codegen
    assert passthrough_reason(call, False) is None


def test_build_script_is_cached_by_default() -> None:
    call = parse(CARGO_BUILD_SCRIPT)
    assert A.is_build_script(call)
    assert passthrough_reason(call, cache_executables=False) is None


def test_user_bin_is_an_executable_unless_executables_are_cached() -> None:
    call = parse(CARGO_BIN)
    assert not A.is_build_script(call)
    assert call.externs == [
        ("pm", f"{T}/deps/libpm-2c61cc1d30490ca0.so"),
        ("util", f"{T}/deps/libutil-dbe8f10e3f5b4e8d.rlib"),
    ]
    assert passthrough_reason(call, cache_executables=False) == "executable"
    assert passthrough_reason(call, cache_executables=True) is None


def test_test_harness_has_no_crate_type_and_counts_as_executable() -> None:
    call = parse(CARGO_TEST)
    assert call.is_test
    assert call.crate_types == ["bin"]  # rustc's default; --test builds a bin anyway
    assert A.effective_crate_types(call) == ["bin"]
    assert "--test" in call.flags
    assert passthrough_reason(call, False) == "executable"
    assert passthrough_reason(call, True) is None


def test_test_harness_ignores_explicit_lib_crate_type() -> None:
    call = parse([RUSTC, "--test", "--crate-type", "lib", "x.rs", "--out-dir", "o"])
    assert call.crate_types == ["lib"]
    assert A.effective_crate_types(call) == ["bin"]
    assert not A.is_build_script(parse([RUSTC, "--test", "--crate-name", "build_script_build", "b.rs"]))


def test_cargo_check_of_a_bin_writes_no_executable_and_is_cacheable() -> None:
    call = parse(CARGO_CHECK_BIN)
    assert call.emit == {"dep-info": None, "metadata": None}
    assert passthrough_reason(call, cache_executables=False) is None


def test_clippy_driver_keeps_rustc_path_as_prefix() -> None:
    call = parse(CARGO_CLIPPY_LIB)
    assert call.compiler == CLIPPY
    assert call.compiler_args_prefix == [RUSTC]
    assert call.args == CARGO_LIB[1:]
    assert call.crate_name == "util"
    assert passthrough_reason(call, False) is None


def test_clippy_driver_version_probe_is_passed_through() -> None:
    call = parse([CLIPPY, RUSTC, "-vV"])
    assert call.compiler_args_prefix == [RUSTC]
    assert call.flags == ["-v", "-V"]
    assert passthrough_reason(call, False) == "version"


def test_clippy_driver_without_rustc_path_has_no_prefix() -> None:
    call = parse(["clippy-driver", "--crate-name", "x", "x.rs"])
    assert call.compiler_args_prefix == []
    assert call.src == "x.rs"


def test_rustc_path_after_plain_rustc_is_a_source_not_a_prefix() -> None:
    call = parse([RUSTC, "/bin/rustc-thing.rs"])
    assert call.compiler_args_prefix == []
    assert call.src == "/bin/rustc-thing.rs"


def test_cargo_target_info_probe_is_a_print_call() -> None:
    call = parse(CARGO_TARGET_INFO_PROBE)
    assert call.src == "-"
    assert call.has_stdin_src
    assert call.crate_name == "___"
    assert call.prints == ["file-names", "sysroot", "split-debuginfo", "crate-name", "cfg"]
    assert call.lints == [("warn", "warnings")]
    assert passthrough_reason(call, False) == "print"


def test_registry_dep_keeps_cap_lints_and_rustflags() -> None:
    call = parse(CARGO_REGISTRY_DEP)
    assert call.src == "/vendor/foo-0.1.0/src/lib.rs"
    assert call.cap_lints == "allow"
    assert call.cfgs == ["foo"]
    assert call.codegen[-1] == "target-cpu=native"
    assert call.incremental is None
    assert passthrough_reason(call, False) == "target-cpu-native"


# --- every flag form -----------------------------------------------------------------

@pytest.mark.parametrize(
    ("args", "attr", "expected"),
    [
        (["--crate-name", "a"], "crate_name", "a"),
        (["--crate-name=a"], "crate_name", "a"),
        (["--edition", "2021"], "edition", "2021"),
        (["--edition=2015"], "edition", "2015"),
        (["--target", "wasm32-unknown-unknown"], "target", "wasm32-unknown-unknown"),
        (["--target=x.json"], "target", "x.json"),
        (["--sysroot", "/s"], "sysroot", "/s"),
        (["--sysroot=/s"], "sysroot", "/s"),
        (["--out-dir", "o"], "out_dir", "o"),
        (["--out-dir=o"], "out_dir", "o"),
        (["-o", "out"], "output", "out"),
        (["-oout"], "output", "out"),
        (["--explain", "E0308"], "explain", "E0308"),
        (["--explain=E0308"], "explain", "E0308"),
        (["--cap-lints", "warn"], "cap_lints", "warn"),
        (["--cap-lints=warn"], "cap_lints", "warn"),
        (["--error-format", "short"], "error_format", "short"),
        (["--json", "artifacts"], "json", "artifacts"),
        (["--json=artifacts", "--json", "future-incompat"], "json", "artifacts,future-incompat"),
        (["--color", "always"], "color", "always"),
        (["--color=never"], "color", "never"),
        (["--diagnostic-width", "80"], "diagnostic_width", "80"),
        (["--diagnostic-width=80"], "diagnostic_width", "80"),
        (["--remap-path-prefix", "/a=/b", "--remap-path-prefix=/c=/d"], "remap_path_prefixes", ["/a=/b", "/c=/d"]),
        (["--remap-path-scope=debuginfo"], "remap_path_scope", "debuginfo"),
        (["--env-set", "A=1", "--env-set=B=2"], "env_set", ["A=1", "B=2"]),
        (["--cfg", "feature=\"x\"", "--cfg=unix"], "cfgs", ['feature="x"', "unix"]),
        (["--check-cfg", "cfg(a)", "--check-cfg=cfg(b)"], "check_cfgs", ["cfg(a)", "cfg(b)"]),
        (["--print", "cfg", "--print=sysroot=/tmp/s"], "prints", ["cfg", "sysroot=/tmp/s"]),
        (["-C", "opt-level=3", "-Cdebuginfo=2", "--codegen", "lto", "--codegen=panic=abort"],
         "codegen", ["opt-level=3", "debuginfo=2", "lto", "panic=abort"]),
        (["-Z", "unstable-options", "-Zthreads=8"], "unstable", ["unstable-options", "threads=8"]),
        (["-l", "static=z", "-lc", "-l", "dylib:+verbatim=m.so"], "libs", ["static=z", "c", "dylib:+verbatim=m.so"]),
        (["-L", "native=/n", "-Lcrate=/c", "-L", "/plain", "-Lframework=/f", "-L", "all=/a", "-L", "weird=/w"],
         "lib_paths", [("native", "/n"), ("crate", "/c"), ("all", "/plain"), ("framework", "/f"),
                       ("all", "/a"), ("all", "weird=/w")]),
        (["-W", "unused", "-Adead_code", "-D", "warnings", "-Fx", "--warn", "a", "--allow=b",
          "--deny", "c", "--forbid=d", "--force-warn", "e"],
         "lints", [("warn", "unused"), ("allow", "dead_code"), ("deny", "warnings"), ("forbid", "x"),
                   ("warn", "a"), ("allow", "b"), ("deny", "c"), ("forbid", "d"), ("force-warn", "e")]),
        (["-g", "-O", "-v", "--test", "-h"], "flags", ["-g", "-O", "-v", "--test", "-h"]),
        (["--version", "--verbose", "--help"], "flags", ["-V", "-v", "-h"]),
        (["-C", "extra-filename=-x"], "extra_filename", "-x"),
        (["-Cextra_filename=-y"], "extra_filename", "-y"),
        (["-C", "metadata=a", "-C", "metadata=b"], "metadata", ["a", "b"]),
        (["--codegen", "incremental=/i"], "incremental", "/i"),
        (["--crate-type", "lib,dylib", "--crate-type=staticlib"], "crate_types", ["lib", "dylib", "staticlib"]),
    ],
)
def test_every_flag_spelling_is_understood(args: list[str], attr: str, expected: object) -> None:
    call = parse([RUSTC, *args, "src/lib.rs"])
    assert getattr(call, attr) == expected
    assert call.other == []
    assert call.src == "src/lib.rs"


def test_short_flags_group_and_the_first_value_option_swallows_the_rest() -> None:
    call = parse([RUSTC, "-gO", "-gCopt-level=1", "-vV"])
    assert call.flags == ["-g", "-O", "-g", "-v", "-V"]
    assert call.codegen == ["opt-level=1"]


def test_short_group_ending_in_a_value_option_takes_the_next_argument() -> None:
    call = parse([RUSTC, "-gC", "opt-level=2", "x.rs"])
    assert call.flags == ["-g"]
    assert call.codegen == ["opt-level=2"]
    assert call.src == "x.rs"


def test_option_value_is_taken_even_when_it_looks_like_an_option() -> None:
    call = parse([RUSTC, "--cfg", "-x", "-o", "--test", "x.rs"])
    assert call.cfgs == ["-x"]
    assert call.output == "--test"
    assert call.is_test is False
    assert call.src == "x.rs"


def test_double_dash_ends_options() -> None:
    call = parse([RUSTC, "--crate-name", "a", "--", "--weird-file.rs"])
    assert call.src == "--weird-file.rs"
    assert call.other == ["--"]


def test_unknown_and_malformed_arguments_are_kept_in_order() -> None:
    call = parse([RUSTC, "--frobnicate", "x.rs", "-Q", "--test=1", "--cra", "a", "-gX", "--out-dir"])
    assert call.other == ["--frobnicate", "-Q", "--test=1", "--cra", "-gX", "--out-dir"]
    assert call.inputs == ["x.rs", "a"]
    assert call.out_dir is None
    assert call.is_test is False
    assert call.flags == []


def test_short_option_missing_its_value_is_kept_in_other() -> None:
    call = parse([RUSTC, "x.rs", "-C"])
    assert call.other == ["-C"]
    assert call.codegen == []


def test_extern_modifiers_are_dropped_from_the_name_but_kept_raw() -> None:
    call = parse([
        RUSTC, "x.rs", "--extern", "priv:a=/p/liba.rlib", "--extern=noprelude:b",
        "--extern", "priv,noprelude:c=/p/c=d:e.rlib", "--extern", "d=", "--extern", "e",
    ])
    assert call.externs == [("a", "/p/liba.rlib"), ("b", None), ("c", "/p/c=d:e.rlib"), ("d", ""), ("e", None)]
    assert call.extern_args == ["priv:a=/p/liba.rlib", "noprelude:b", "priv,noprelude:c=/p/c=d:e.rlib", "d=", "e"]


def test_emit_defaults_to_link_and_later_kinds_override_earlier_paths() -> None:
    assert parse([RUSTC, "x.rs"]).emit == {"link": None}
    call = parse([RUSTC, "x.rs", "--emit", "dep-info=a.d,link", "--emit=dep-info=b.d,metadata"])
    assert call.emit == {"dep-info": "b.d", "link": None, "metadata": None}


def test_first_cap_lints_wins_like_rustc() -> None:
    # Checked against rustc 1.95: `--cap-lints allow --cap-lints warn` prints no warnings.
    assert parse([RUSTC, "--cap-lints", "allow", "--cap-lints=warn", "x.rs"]).cap_lints == "allow"


def test_crate_types_default_to_bin_only_when_there_is_a_source() -> None:
    assert parse([RUSTC, "x.rs"]).crate_types == ["bin"]
    assert parse([RUSTC, "--print", "cfg"]).crate_types == []


def test_empty_argv_is_an_argv_error() -> None:
    with pytest.raises(ArgvError, match="no compiler"):
        parse([])


def test_compiler_alone_parses_as_no_source() -> None:
    call = parse([RUSTC])
    assert call.args == []
    assert passthrough_reason(call, False) == "no-source"


# --- @argfiles -----------------------------------------------------------------------

def test_argfile_lines_become_arguments(tmp_path: Path) -> None:
    f = tmp_path / "args"
    f.write_text("--crate-name\nfoo bar\n\n-C\r\nopt-level=3\nlast")
    assert A.expand_argfiles(["-v", f"@{f}", "x.rs"]) == [
        "-v", "--crate-name", "foo bar", "", "-C", "opt-level=3", "last", "x.rs",
    ]


def test_argfile_final_newline_is_optional_and_empty_file_gives_nothing(tmp_path: Path) -> None:
    a = tmp_path / "a"
    a.write_text("x\n")
    b = tmp_path / "b"
    b.write_text("")
    c = tmp_path / "c"
    c.write_text("\n")
    assert A.expand_argfiles([f"@{a}", f"@{b}", f"@{c}"]) == ["x", ""]


def test_argfiles_are_not_expanded_recursively(tmp_path: Path) -> None:
    inner = tmp_path / "inner"
    inner.write_text("--test\n")
    outer = tmp_path / "outer"
    outer.write_text(f"@{inner}\n")
    assert A.expand_argfiles([f"@{outer}"]) == [f"@{inner}"]


@pytest.mark.hostile
def test_unreadable_argfile_is_an_argv_error(tmp_path: Path) -> None:
    with refused(ArgvError, match="cannot read argument file: .*missing"):
        A.expand_argfiles([f"@{tmp_path / 'missing'}"])
    with refused(ArgvError):
        A.expand_argfiles([f"@{tmp_path}"])  # a directory
    with refused(ArgvError):
        A.expand_argfiles(["@"])
    with refused(ArgvError):
        A.expand_argfiles(["@a\x00b"])


@pytest.mark.hostile
def test_non_utf8_argfile_is_an_argv_error(tmp_path: Path) -> None:
    f = tmp_path / "bin"
    f.write_bytes(b"--cfg\n\xff\n")
    with refused(ArgvError, match="not valid UTF-8"):
        A.expand_argfiles([f"@{f}"])


def test_shell_argfile_is_refused_only_after_z_shell_argfiles(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "shell:args").write_text("--test\n")
    monkeypatch.chdir(tmp_path)
    assert A.expand_argfiles(["@shell:args"]) == ["--test"]
    with pytest.raises(ArgvError, match="shell-quoted"):
        A.expand_argfiles(["-Zshell-argfiles", "@shell:args"])
    with pytest.raises(ArgvError, match="shell-quoted"):
        A.expand_argfiles(["-Z", "shell-argfiles", "@shell:args"])


def test_cargo_style_argfile_is_parsed_and_raw_args_are_kept(tmp_path: Path) -> None:
    f = tmp_path / "cargo-argfile.x"
    f.write_text("\n".join(CARGO_LIB[1:]) + "\n")
    call = parse([RUSTC, f"@{f}"])
    assert call.args == CARGO_LIB[1:]
    assert call.raw_args == [f"@{f}"]
    assert call.crate_name == "util"
    clippy = parse([CLIPPY, RUSTC, f"@{f}"])
    assert clippy.compiler_args_prefix == [RUSTC]
    assert clippy.args == CARGO_LIB[1:]


# --- never crash ---------------------------------------------------------------------

_TOKENS = st.sampled_from([
    "-", "--", "-C", "-Cincremental=x", "incremental=/i", "-L", "-l", "-o", "-g", "-O", "-vV",
    "-gC", "--crate-type", "--crate-type=lib,bin", "--emit", "--emit=link=-", "--extern",
    "priv:a=b", "--print", "--test", "--test=1", "--out-dir", "-W", "help", "--cap-lints",
    "x.rs", "-Z", "@", "@/nonexistent", "--json", "--codegen", "--codegen=incremental=",
    "-Cextra-filename=", "--crate-name", "___", "=", "-Cinstrument-coverage", "rustc",
])
_ARGS = st.lists(st.one_of(_TOKENS, st.text(max_size=12)), max_size=14)


@settings(max_examples=300, deadline=None)
@given(args=_ARGS)
def test_without_incremental_removes_exactly_the_incremental_option(args: list[str]) -> None:
    args = [a for a in args if not a.startswith("@")]
    out = A.without_incremental(args)
    again = parse(["rustc", *out])
    assert again.incremental is None
    assert not any(c.replace("_", "-").startswith("incremental") for c in again.codegen)
    before = parse(["rustc", *args])
    kept = [c for c in before.codegen if c.partition("=")[0].replace("_", "-") != "incremental"]
    assert again.codegen == kept
    assert again.inputs == before.inputs
    assert again.other == before.other
    assert again.flags == before.flags


# --- without_incremental -------------------------------------------------------------

@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["-C", "incremental=/i", "x.rs"], ["x.rs"]),
        (["-Cincremental=/i", "x.rs"], ["x.rs"]),
        (["--codegen", "incremental=/i", "x.rs"], ["x.rs"]),
        (["--codegen=incremental=/i", "x.rs"], ["x.rs"]),
        (["-C", "incremental_=x", "-C", "incremental-verify-ich"], ["-C", "incremental_=x", "-C", "incremental-verify-ich"]),
        (["-C", "opt-level=0", "-C", "incremental=/a", "-C", "incremental=/b", "-g"], ["-C", "opt-level=0", "-g"]),
        (["-gCincremental=/i", "x.rs"], ["-g", "x.rs"]),
        (["-gOC", "incremental=/i", "x.rs"], ["-gO", "x.rs"]),
        (["--cfg", "-Cincremental=/i", "x.rs"], ["--cfg", "-Cincremental=/i", "x.rs"]),
        (["-Z", "incremental=/i"], ["-Z", "incremental=/i"]),
    ],
)
def test_without_incremental_handles_every_spelling(args: list[str], expected: list[str]) -> None:
    assert A.without_incremental(args) == expected


def test_without_incremental_on_cargo_lib_drops_only_that_pair() -> None:
    out = A.without_incremental(CARGO_LIB[1:])
    i = CARGO_LIB.index(f"incremental={T}/incremental")
    assert out == CARGO_LIB[1:i - 1] + CARGO_LIB[i + 1:]


# --- passthrough reasons -------------------------------------------------------------

BASE = ["lib.rs", "--crate-name", "c", "--crate-type", "lib", "--emit=dep-info,metadata,link", "--out-dir", "o"]


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (["-vV"], "version"),
        (["-V"], "version"),
        (["--version"], "version"),
        (["-v"], "version"),
        (["--verbose"], "version"),
        ([*BASE, "-V"], "version"),
        ([*BASE, "-v"], None),
        (["--help"], "help"),
        ([*BASE, "-C", "help"], "help"),
        ([*BASE, "-W", "help"], "help"),
        ([*BASE, "-Zhelp"], "help"),
        ([*BASE, "--print=cfg"], "print"),
        (["-", "--crate-name", "___", "--print=file-names"], "print"),
        (["-", "--crate-type", "lib", "--out-dir", "o"], "stdin"),
        (["--crate-type", "lib", "--out-dir", "o"], "no-source"),
        ([*BASE, "other.rs"], "multiple-sources"),
        (["x.rs", "--crate-name", "___", "--out-dir", "o"], "probe"),
        ([*BASE, "--explain", "E0001"], "explain"),
        ([*BASE, "--emit=asm"], "emit"),
        ([*BASE, "--emit=llvm-ir"], "emit"),
        ([*BASE, "--emit=obj"], "emit"),
        ([*BASE, "--emit=mir"], "emit"),
        ([*BASE, "--emit=link=-"], "emit"),
        ([*BASE, "--emit=dep-info=/x/y.d"], None),
        (["lib.rs", "--crate-type", "lib"], "no-out-dir"),
        (["lib.rs", "--crate-type", "lib", "-o", "x.rlib"], "no-out-dir"),
        (["main.rs", "--out-dir", "o"], "executable"),
        ([*BASE[:4], "dylib", *BASE[5:]], "executable"),
        ([*BASE[:4], "cdylib", *BASE[5:]], "executable"),
        ([*BASE[:4], "lib,cdylib", *BASE[5:]], "executable"),
        ([*BASE[:4], "staticlib", *BASE[5:]], None),
        ([*BASE[:4], "proc-macro", *BASE[5:]], None),
        ([*BASE, "--test"], "executable"),
        ([*BASE, "-C", "instrument-coverage"], "coverage"),
        ([*BASE, "-Cinstrument-coverage=all"], "coverage"),
        ([*BASE, "-C", "instrument_coverage=yes"], "coverage"),
        ([*BASE, "-C", "instrument-coverage=off"], None),
        ([*BASE, "-Zinstrument-coverage"], "coverage"),
        ([*BASE, "-C", "profile-generate"], "coverage"),
        ([*BASE, "-C", "profile-generate=/pgo"], "coverage"),
        ([*BASE, "-C", "profile-use=/pgo/x.profdata"], "coverage"),
        ([*BASE, "-C", "target-cpu=native"], "target-cpu-native"),
        ([*BASE, "-Ctarget_cpu=native"], "target-cpu-native"),
        ([*BASE, "-C", "target-cpu=native", "-C", "target-cpu=x86-64-v3"], None),
        ([*BASE, "-C", "split-debuginfo=unpacked"], "split-debuginfo"),
        ([*BASE, "-C", "split-debuginfo=unpacked", "--target", "aarch64-apple-darwin"], None),
        ([*BASE, "-C", "split-debuginfo=packed"], None),
        ([*BASE, "-C", "incremental=/i"], None),
        ([*BASE, "--cap-lints", "allow", "-Dwarnings"], None),
    ],
)
def test_passthrough_reasons(args: list[str], reason: str | None) -> None:
    assert passthrough_reason(parse([RUSTC, *args]), cache_executables=False) == reason


def test_passthrough_reasons_follow_the_documented_precedence() -> None:
    call = parse([RUSTC, "-", "--crate-name", "___", "--print=cfg", "-vV"])
    assert passthrough_reason(call, False) == "version"
    call = parse([RUSTC, "--crate-name", "___", "x.rs", "--emit=asm"])
    assert passthrough_reason(call, False) == "probe"
    call = parse([RUSTC, "main.rs", "--emit=link", "-Ctarget-cpu=native"])
    assert passthrough_reason(call, False) == "no-out-dir"
    call = parse([RUSTC, "main.rs", "--out-dir", "o", "-Ctarget-cpu=native"])
    assert passthrough_reason(call, False) == "executable"
    assert passthrough_reason(call, True) == "target-cpu-native"


def test_build_script_detection_needs_the_name_and_a_plain_bin() -> None:
    assert A.is_build_script(parse(CARGO_BUILD_SCRIPT))
    assert not A.is_build_script(parse([RUSTC, "--crate-name", "build_script_build", "--crate-type", "lib", "b.rs"]))
    assert not A.is_build_script(parse([RUSTC, "--crate-name", "app", "--crate-type", "bin", "b.rs"]))
    assert A.is_build_script(parse([RUSTC, "--crate-name", "build_script_main", "b.rs"]))


# --- expected_outputs, checked against real rustc ------------------------------------

LIB_RS = "pub fn f() -> u32 { 1 }\n"
MAIN_RS = "fn main() { println!(\"hi\"); }\n"
PM_RS = "extern crate proc_macro;\n"


def _run_rustc(tmp_path: Path, args: list[str], sources: dict[str, str]) -> tuple[RustcCall, set[str]]:
    """Run real rustc with ``args`` in ``tmp_path``; return the parsed call and the files
    it created (relative to tmp_path)."""
    for name, text in sources.items():
        (tmp_path / name).write_text(text)
    call = parse(["rustc", *args])
    if call.out_dir:
        (tmp_path / call.out_dir).mkdir(parents=True, exist_ok=True)
    for p in call.emit.values():
        if p:
            (tmp_path / p).parent.mkdir(parents=True, exist_ok=True)
    if call.output:
        (tmp_path / call.output).parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(["rustc", *args], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    written = {
        os.path.relpath(os.path.join(d, f), tmp_path)
        for d, _, fs in os.walk(tmp_path) for f in fs
    } - set(sources)
    return call, written


X = ["-C", "extra-filename=-abc", "--out-dir", "out"]
OUTPUT_CASES = [
    pytest.param("lib.rs", ["--crate-name", "c", "--crate-type", "lib", "--emit=dep-info,metadata,link", *X],
                 {"out/c-abc.d", "out/libc-abc.rlib", "out/libc-abc.rmeta"}, id="cargo-lib"),
    pytest.param("lib.rs", ["--crate-name", "c", "--crate-type", "lib", "--emit=dep-info,metadata", *X],
                 {"out/c-abc.d", "out/libc-abc.rmeta"}, id="cargo-check-lib"),
    pytest.param("pm.rs", ["--crate-name", "p", "--crate-type", "proc-macro", "--emit=dep-info,link",
                           "-C", "prefer-dynamic", *X],
                 {"out/p-abc.d", "out/libp-abc.so"}, id="proc-macro"),
    pytest.param("main.rs", ["--crate-name", "m", "--crate-type", "bin", "--emit=dep-info,link", *X],
                 {"out/m-abc.d", "out/m-abc"}, id="bin"),
    pytest.param("main.rs", ["--crate-name", "build_script_build", "--crate-type", "bin",
                             "--emit=dep-info,link", "-C", "extra-filename=-9f", "--out-dir", "build/app-9f"],
                 {"build/app-9f/build_script_build-9f.d", "build/app-9f/build_script_build-9f"}, id="build-script"),
    pytest.param("main.rs", ["--crate-name", "m", "--crate-type", "bin", "--emit=dep-info,metadata", *X],
                 {"out/m-abc.d", "out/libm-abc.rmeta"}, id="cargo-check-bin"),
    pytest.param("lib.rs", ["--crate-name", "t", "--test", "--emit=dep-info,link", *X],
                 {"out/t-abc.d", "out/t-abc"}, id="test-harness"),
    pytest.param("lib.rs", ["--crate-name", "t", "--test", "--crate-type", "lib", "--emit=dep-info,link", *X],
                 {"out/t-abc.d", "out/t-abc"}, id="test-harness-ignores-crate-type"),
    pytest.param("lib.rs", ["--crate-name", "c", "--crate-type", "lib,rlib", "--crate-type", "dylib,cdylib,staticlib",
                            "--emit=dep-info,metadata,link", *X],
                 {"out/c-abc.d", "out/libc-abc.rlib", "out/libc-abc.rmeta", "out/libc-abc.so", "out/libc-abc.a"},
                 id="many-crate-types"),
    pytest.param("lib.rs", ["--crate-name", "c", "--crate-type", "lib", "--emit=dep-info=deps/y.d,metadata,link", *X],
                 {"deps/y.d", "out/libc-abc.rlib", "out/libc-abc.rmeta"}, id="explicit-dep-info-path"),
    pytest.param("lib.rs", ["--crate-name", "c", "--crate-type", "lib", "--emit=dep-info", *X],
                 {"out/c-abc.d"}, id="dep-info-only"),
    pytest.param("my-lib.rs", ["--crate-type", "lib", "--out-dir", "out"],
                 {"out/libmy_lib.rlib"}, id="default-emit-and-crate-name-from-file"),
    pytest.param("main.rs", ["--out-dir", "out"], {"out/main"}, id="bare-bin"),
    pytest.param("lib.rs", ["--crate-name", "c", "--crate-type", "lib", "-o", "o/zz.rlib"],
                 {"o/zz.rlib"}, id="dash-o-single"),
    pytest.param("lib.rs", ["--crate-name", "c", "--crate-type", "lib", "--emit=dep-info,link", "-o", "o/zz.rlib",
                            "-C", "extra-filename=-e"],
                 {"o/zz-e.d", "o/libc-e.rlib"}, id="dash-o-several-kinds"),
    pytest.param("lib.rs", ["--crate-name", "c", "--crate-type", "lib", "--emit=metadata,link", "-o", "zz.rlib",
                            "--out-dir", "ignored"],
                 {"libc.rlib", "libc.rmeta"}, id="dash-o-wins-over-out-dir"),
    pytest.param("main.rs", ["--crate-name", "m", "--emit=dep-info,link", "-o", "o/prog"],
                 {"o/prog.d", "o/prog"}, id="dash-o-bin-several-kinds"),
    pytest.param("main.rs", ["--crate-name", "m", "--emit=dep-info,link", "-g", "-C", "split-debuginfo=packed", *X],
                 {"out/m-abc.d", "out/m-abc", "out/m-abc.dwp"}, id="packed-debuginfo-bin"),
    pytest.param("lib.rs", ["--crate-name", "c", "--crate-type", "dylib,rlib", "--emit=dep-info,link",
                            "-C", "debuginfo=line-tables-only", "-C", "split-debuginfo=packed", *X],
                 {"out/c-abc.d", "out/libc-abc.so", "out/libc-abc.so.dwp", "out/libc-abc.rlib"},
                 id="packed-debuginfo-dylib"),
    pytest.param("main.rs", ["--crate-name", "m", "--emit=link", "-g", "-C", "debuginfo=0",
                             "-C", "split-debuginfo=packed", *X],
                 {"out/m-abc"}, id="packed-without-debuginfo-has-no-dwp"),
]


@pytest.mark.skipif(sys.platform != "linux", reason="file names checked on Linux")
@pytest.mark.parametrize(("src", "args", "expected"), OUTPUT_CASES)
def test_expected_outputs_match_what_rustc_writes(
    tmp_path: Path, src: str, args: list[str], expected: set[str]
) -> None:
    text = {"lib.rs": LIB_RS, "my-lib.rs": LIB_RS, "main.rs": MAIN_RS, "pm.rs": PM_RS}[src]
    call, written = _run_rustc(tmp_path, [src, *args], {src: text})
    assert written == expected
    assert set(A.expected_outputs(call)) == expected
    assert len(A.expected_outputs(call)) == len(expected)


@pytest.mark.skipif(sys.platform != "linux", reason="file names checked on Linux")
def test_expected_outputs_agree_with_the_targets_rustc_lists_in_the_dep_info(tmp_path: Path) -> None:
    args = ["lib.rs", "--crate-name", "c", "--crate-type", "lib,dylib,staticlib", "--emit=dep-info,metadata,link", *X]
    call, _ = _run_rustc(tmp_path, args, {"lib.rs": LIB_RS})
    info = depinfo.parse((tmp_path / "out" / "c-abc.d").read_text())
    assert set(info.targets) == set(A.expected_outputs(call))


def test_expected_outputs_are_absolute_when_out_dir_is() -> None:
    assert A.expected_outputs(parse(CARGO_LIB)) == [
        f"{T}/deps/util-dbe8f10e3f5b4e8d.d",
        f"{T}/deps/libutil-dbe8f10e3f5b4e8d.rlib",
        f"{T}/deps/libutil-dbe8f10e3f5b4e8d.rmeta",
    ]


@pytest.mark.parametrize(
    ("target", "crate_type", "expected"),
    [
        ("x86_64-pc-windows-msvc", "bin", "o/c-h.exe"),
        ("x86_64-pc-windows-msvc", "dylib", "o/c-h.dll"),
        ("x86_64-pc-windows-msvc", "staticlib", "o/c-h.lib"),
        ("x86_64-pc-windows-gnu", "staticlib", "o/libc-h.a"),
        ("x86_64-pc-windows-gnu", "proc-macro", "o/c-h.dll"),
        ("aarch64-apple-darwin", "cdylib", "o/libc-h.dylib"),
        ("aarch64-apple-darwin", "bin", "o/c-h"),
        ("wasm32-unknown-unknown", "cdylib", "o/c-h.wasm"),
        ("wasm32-wasip1", "bin", "o/c-h.wasm"),
        ("aarch64-unknown-linux-gnu", "dylib", "o/libc-h.so"),
        ("/specs/my-target.json", "rlib", "o/libc-h.rlib"),
    ],
)
def test_expected_outputs_follow_the_target_naming(target: str, crate_type: str, expected: str) -> None:
    call = parse([RUSTC, "x.rs", "--crate-name", "c", "--crate-type", crate_type, "--emit=link",
                  "-C", "extra-filename=-h", "--out-dir", "o", "--target", target])
    assert A.expected_outputs(call) == [expected]


def test_exe_suffix_replaces_an_extension_like_rust_with_extension() -> None:
    call = parse([RUSTC, "x.rs", "--crate-name", "c", "-C", "extra-filename=-1.2", "--out-dir", "o",
                  "--target", "x86_64-pc-windows-msvc"])
    assert A.expected_outputs(call) == ["o/c-1.exe"]


def test_expected_outputs_skip_stdout_and_unmodelled_kinds() -> None:
    call = parse([RUSTC, "x.rs", "--crate-type", "lib", "--emit=dep-info=-,asm,link", "--out-dir", "o"])
    assert A.expected_outputs(call) == ["o/libx.rlib"]
