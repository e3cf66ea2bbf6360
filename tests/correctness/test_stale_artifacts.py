"""Stale artifacts, through the wrapper alone (no daemon): after a change that plain
cargo sees (a fresh target dir, no wrapper), kache must not serve what it recorded
before. Each test builds the scenario through kache and compares what the program,
the test or clippy does with plain cargo's. test_served_by_daemon.py runs the same
hazards with hits served by the daemon and by the native client."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.project import (
    BIN_EXE_TEST,
    CLIPPY_ORACLE,
    clippy_sequence,
    events_of,
    oracle_printed,
    plain_cargo,
    real_rustc,
)

pytestmark = pytest.mark.e2e


def test_env_value_reached_through_a_macro_names_the_second_checkout(project, tmp_path: Path) -> None:
    """Case 1: env!("CARGO_MANIFEST_DIR") expanded from another crate's macro, turned
    into a String by a workspace lib: a copy of the checkout at another path, over the
    same store, prints its own path."""
    a = project(["envlib"])
    a.build()
    assert a.printed()["envlib"] == str(a.path / "envlib")
    b = a.copy_to(tmp_path / "checkout-b" / "ws")
    b.build()
    expected = oracle_printed(b.path, tmp_path / "oracle-target")["envlib"]
    assert expected == str(b.path / "envlib")
    assert b.printed()["envlib"] == expected, "checkout b's binary prints checkout a's path"


def test_cargo_bin_exe_through_concat_names_the_second_checkouts_bin(project, tmp_path: Path) -> None:
    """Case 1: env!(concat!("CARGO_BIN_EXE_", "app")) in an integration test, with test
    harnesses cached (KACHE_CACHE_EXECUTABLES=1): in the copy, the test sees its own bin."""
    a = project([], app_files={"app/tests/it.rs": BIN_EXE_TEST}, KACHE_CACHE_EXECUTABLES="1")
    a.cargo("test", "-q")
    b = a.copy_to(tmp_path / "checkout-b" / "ws")
    oracle = plain_cargo(b.path, "test", "-q", target_dir=tmp_path / "oracle-target")
    assert oracle.returncode == 0, oracle.stdout + oracle.stderr
    out = b.cargo("test", "-q", "--", "--nocapture", check=False)
    assert out.returncode == oracle.returncode, out.stdout + out.stderr
    assert f"CARGO_BIN_EXE_app={b.path}/target/debug/app" in out.stdout


@pytest.mark.parametrize("part, source, symbol", [
    ("ffi_link", "foo.c", "foo_value"),          # case 2: #[link(name = "foo", kind = "static")]
    ("ffi_verbatim", "bar.c", "bar_value"),      # case 3: cargo:rustc-link-lib=static:+verbatim=libbar.a
], ids=["link-attribute", "verbatim-link-lib"])
def test_a_rebuilt_static_library_is_linked_in(project, tmp_path: Path, part: str, source: str,
                                               symbol: str) -> None:
    """Cases 2 and 3: the build script compiles a C file into OUT_DIR/lib*.a, which rustc
    bundles into the rlib; the C source changes (1 → 2) and the bin prints the new value."""
    p = project([part])
    p.build()
    assert p.printed()[part] == "1"
    (p.path / part / source).write_text(f"int {symbol}(void) {{ return 2; }}\n")
    p.build()
    expected = oracle_printed(p.path, tmp_path / "oracle-target")[part]
    assert expected == "2"
    assert p.printed()[part] == expected, "the rlib with the old static library was served"


def test_a_changed_rustc_script_is_a_changed_compiler(project, tmp_path: Path) -> None:
    """Case 4: RUSTC is a script adding --cfg myflag; it is edited to add --cfg otherflag
    instead; after cargo clean the code sees the new flag."""
    script = tmp_path / "toolchain" / "rustc"
    script.parent.mkdir()
    script.write_text(f'#!/bin/sh\nexec "{real_rustc()}" --cfg myflag "$@"\n')
    script.chmod(0o755)
    p = project(["flags"], RUSTC=str(script))
    p.build()
    assert p.printed()["flags"] == "myflag"
    script.write_text(f'#!/bin/sh\nexec "{real_rustc()}" --cfg otherflag "$@"\n')
    p.clean()
    p.build()
    expected = oracle_printed(p.path, tmp_path / "oracle-target", RUSTC=str(script))["flags"]
    assert expected == "otherflag"
    assert p.printed()["flags"] == expected, "compiled with the old script's --cfg"


def test_clippy_of_a_dependency_then_of_that_package_reports_its_lints(project, tmp_path: Path) -> None:
    """Case 5: `lint` (which has a clippy warning) is checked without lints as app's
    dependency (--no-deps), then linted itself with -D warnings: every run's exit code
    and error are plain cargo's, also when the unlinted check had the same CLIPPY_ARGS
    (the only difference is which package is primary)."""
    p = project(["lint"])
    got = clippy_sequence(lambda *a: p.cargo(*a, check=False))
    oracle_target = tmp_path / "oracle-target"
    oracle = clippy_sequence(lambda *a: plain_cargo(p.path, *a, target_dir=oracle_target))
    assert oracle == CLIPPY_ORACLE
    assert got == oracle, "the check of `lint` as a dependency was served for linting it"


@pytest.mark.parametrize("flags", ["-C link-arg=-L{d} -C link-arg=-lmagic", "-C link-arg=-Wl,@{d}/rsp"])
def test_a_library_named_by_link_args_is_read(project, tmp_path: Path, flags: str) -> None:
    """A neighbour of case 2: a build script (always cached) links a C library that only
    its link arguments name (-L/-l given as link args, or a response file naming an
    object), in a directory outside the package and the target dir. The library
    changes; after cargo clean the build script must run the new code."""
    import subprocess

    lib = tmp_path / "obj"
    lib.mkdir()

    def make(value: int) -> None:
        (lib / "m.c").write_text(f"int magic(void) {{ return {value}; }}\n")
        subprocess.run(["cc", "-c", str(lib / "m.c"), "-o", str(lib / "m.o")], check=True)
        (lib / "libmagic.a").unlink(missing_ok=True)
        subprocess.run(["ar", "rcs", str(lib / "libmagic.a"), str(lib / "m.o")], check=True)

    (lib / "rsp").write_text(f"{lib}/m.o\n")
    rustflags = flags.format(d=lib)
    p = project([], main='fn main() { println!("magic={}", env!("MAGIC")); }\n', app_files={
        "app/build.rs": 'extern "C" { fn magic() -> i32; }\n'
                        'fn main() { println!("cargo:rustc-env=MAGIC={}", unsafe { magic() }); }\n'},
        RUSTFLAGS=rustflags)
    manifest = p.path / "app" / "Cargo.toml"
    manifest.write_text(manifest.read_text().replace('edition = "2021"\n', 'edition = "2021"\nbuild = "build.rs"\n'))
    make(1)
    p.build()
    assert p.printed()["magic"] == "1"
    make(2)
    p.clean()
    p.build()
    expected = oracle_printed(p.path, tmp_path / "oracle-target", RUSTFLAGS=rustflags)["magic"]
    assert expected == "2"
    assert p.printed()["magic"] == expected, "the build script linked with the old library was served"


def test_a_clippy_toml_added_later_is_read(project, tmp_path: Path) -> None:
    """A neighbour of case 5: clippy-driver finds its clippy.toml by walking up from the
    package; a file that appears where none was is not in any dep-info, yet it changes
    the lints. Lint the `lint` crate clean, add a clippy.toml that makes ptr_arg's
    neighbour too_many_arguments fire, clean, lint again: plain cargo's verdict."""
    p = project(["lint"])
    (p.path / "lint" / "src" / "lib.rs").write_text("pub fn sum(a: u8, b: u8, c: u8) -> u8 {\n    a + b + c\n}\n")
    assert p.cargo("clippy", "-p", "lint", "--", "-D", "warnings", check=False).returncode == 0
    (p.path / "clippy.toml").write_text("too-many-arguments-threshold = 2\n")
    p.clean()
    got = p.cargo("clippy", "-p", "lint", "--", "-D", "warnings", check=False)
    oracle = plain_cargo(p.path, "clippy", "-p", "lint", "--", "-D", "warnings", target_dir=tmp_path / "oracle")
    assert oracle.returncode == 101 and "too many arguments" in oracle.stderr
    assert got.returncode == oracle.returncode and "too many arguments" in got.stderr, got.stderr


@pytest.mark.parametrize(("where", "declared"), [("target-dir", "data/words.txt"), ("build-dir", "data/words.txt"),
                                               ("target-dir", "data"), ("target-dir", "data/**/*.txt")])
def test_a_declared_extra_input_counts_when_the_target_dir_is_elsewhere(project, tmp_path: Path,
                                                                        where: str, declared: str) -> None:
    """Case 6: cache.extra_inputs declares data/words.txt (workspace-relative; or the
    directory holding it, or a glob matching it) for the crate whose proc macro reads
    it; the target dir (CARGO_TARGET_DIR) or the build dir (CARGO_BUILD_BUILD_DIR) is
    outside the workspace. The file changes: after cargo clean the new words are used."""
    config = tmp_path / "kache.toml"
    config.write_text(f'[cache.extra_inputs.words]\nfiles = ["{declared}"]\n')
    var = "CARGO_TARGET_DIR" if where == "target-dir" else "CARGO_BUILD_BUILD_DIR"
    p = project(["words"], KACHE_CONFIG=str(config), **{var: str(tmp_path / "elsewhere" / where)})
    p.build()
    assert p.printed()["words"] == "alpha"
    (p.path / "data" / "words.txt").write_text("beta\n")
    p.clean()
    p.build()
    expected = oracle_printed(p.path, tmp_path / "oracle-target")["words"]
    assert expected == "beta"
    assert p.printed()["words"] == expected, "the expansion of the old words.txt was served"


def test_include_str_through_a_symlinked_directory_follows_the_real_file(project, tmp_path: Path) -> None:
    """Case 7: linky/src/linked -> ../../shared/dir; linked/m.rs has
    include_str!("../data.txt"), which is shared/data.txt (the kernel resolves `..` after
    the symlink), not linky/src/data.txt (which exists too, with other text). The real
    file changes: the new text is served."""
    p = project(["linky"])
    p.build()
    assert p.printed()["linky"] == "real-1"
    (p.path / "shared" / "data.txt").write_text("real-2\n")
    p.build()
    expected = oracle_printed(p.path, tmp_path / "oracle-target")["linky"]
    assert expected == "real-2"
    assert p.printed()["linky"] == expected, "the old include_str! was served"


def test_a_build_script_generated_include_is_served_in_another_checkout(project, tmp_path: Path) -> None:
    """Case 14: gen's build script writes OUT_DIR/consts.rs and says
    cargo:rustc-env=GEN=<that path>; gen does include!(env!("GEN")). A second checkout
    (another path, HOME and CARGO_HOME; the same store) gets gen, its build script and
    its dependent mid from the cache, and the bin prints the right value."""
    a = project(["mid"])
    a.build()
    home = tmp_path / "home-b"
    (home / ".cargo").mkdir(parents=True)
    b = a.copy_to(tmp_path / "checkout-b" / "ws", HOME=str(home), CARGO_HOME=str(home / ".cargo"))
    b.build()
    crates = ["gen", "mid", "build_script_build"]
    evs = {c: (e["outcome"], e.get("reason")) for c, e in events_of(b, crates).items()}
    assert evs == dict.fromkeys(crates, ("local_hit", None))
    expected = oracle_printed(b.path, tmp_path / "oracle-target")["mid"]
    assert b.printed()["mid"] == expected == "43"
