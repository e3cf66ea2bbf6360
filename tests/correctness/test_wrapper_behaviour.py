"""What a build through kache (the wrapper alone, no daemon) shows its user, and which
units it caches: compilers named on PATH (case 8), source paths in errors and panics
(case 9), kache's own warnings (case 10), private copies of executables (case 11),
hits that variables and flags without effect on the output must not miss (case 12), and
a relative target dir (case 13). Each compares with plain cargo where it applies."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.support.project import (
    Project,
    error_locations,
    kache_env,
    oracle_env,
    panic_location,
    printed,
    real_rustc,
    run_exe,
    write_files,
)

pytestmark = pytest.mark.e2e


# --------------------------------------------------------------------------- case 8


@pytest.mark.parametrize("variable, name, script", [
    ("RUSTC_WORKSPACE_WRAPPER", "mywrap", '#!/bin/sh\nexec "$@"\n'),
    ("RUSTC", "myrustc", '#!/bin/sh\nexec "{rustc}" "$@"\n'),
], ids=["workspace-wrapper", "rustc"])
def test_a_compiler_named_by_a_bare_name_on_path_builds(project, tmp_path: Path, variable: str, name: str,
                                                        script: str) -> None:
    """Case 8: RUSTC_WORKSPACE_WRAPPER=mywrap, or RUSTC=myrustc, each a bare name found
    on PATH: the build succeeds through kache as without it, and with KACHE_DISABLED=1."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / name).write_text(script.format(rustc=real_rustc()))
    (bindir / name).chmod(0o755)
    path = f"{bindir}{os.pathsep}{os.environ['PATH']}"
    p = project(["mid"], PATH=path, **{variable: name})
    oracle = p.plain("build", "-q", target_dir=tmp_path / "oracle-target", PATH=path, **{variable: name})
    assert oracle.returncode == 0, oracle.stderr
    expected = printed(run_exe(tmp_path / "oracle-target" / "debug" / "app").stdout)
    out = p.cargo("build", check=False)
    assert out.returncode == 0, f"through kache:\n{out.stderr}"
    assert p.printed() == expected
    p.clean()
    out = p.cargo("build", check=False, KACHE_DISABLED="1")
    assert out.returncode == 0, f"through kache, KACHE_DISABLED=1:\n{out.stderr}"
    assert p.printed() == expected


# --------------------------------------------------------------------------- case 9

DEP_ERROR = "pub fn boom() -> u32 {\n    \"not a number\"\n}\n"
DEP_PANIC = "pub fn boom() -> u32 {\n    panic!(\"boom in dep\")\n}\n"
APP_MAIN = ("fn main() {\n"
            "    if std::env::args().nth(1).as_deref() == Some(\"member\") {\n"
            "        panic!(\"boom in app\");\n"
            "    }\n"
            "    println!(\"{}\", dep::boom());\n"
            "}\n")


def outside_dep_project(root: Path, kache: str, dep_source: str, **env: str) -> Project:
    """checkout/ws (the workspace: app) and checkout/dep, a path dependency outside it."""
    write_files(root / "dep", {"Cargo.toml": '[package]\nname = "dep"\nversion = "0.1.0"\nedition = "2021"\n',
                               "src/lib.rs": dep_source})
    write_files(root / "ws", {"Cargo.toml": '[workspace]\nresolver = "2"\nmembers = ["app"]\n',
                              "app/Cargo.toml": '[package]\nname = "app"\nversion = "0.1.0"\n'
                                                'edition = "2021"\n\n'
                                                '[dependencies]\ndep = { path = "../../dep" }\n',
                              "app/src/main.rs": APP_MAIN})
    return Project(root / "ws", root.parent / "store", kache, root / "rustc.log",
                   kache_env(kache, root.parent / "store", **env))


def test_an_error_in_a_dependency_outside_the_workspace_names_its_real_path(tmp_path: Path,
                                                                            kache_exe: str) -> None:
    """Case 9a: a compile error in ../dep (a path dependency, not a member) points at the
    path plain cargo shows, dep's real absolute path, not ./src/lib.rs."""
    p = outside_dep_project(tmp_path / "checkout", kache_exe, DEP_ERROR)
    oracle = p.plain("build", target_dir=tmp_path / "oracle-target")
    assert oracle.returncode != 0
    expected = error_locations(oracle.stderr)
    assert expected and expected[0].startswith(str(tmp_path / "checkout" / "dep" / "src" / "lib.rs") + ":")
    out = p.cargo("build", check=False)
    assert out.returncode == oracle.returncode
    assert error_locations(out.stderr) == expected, out.stderr


def test_a_panic_in_a_dependency_outside_the_workspace_follows_cargos_trim_paths(tmp_path: Path,
                                                                                 kache_exe: str) -> None:
    """Case 9b: a panic in ../dep's code is located as `dep-0.1.0/src/lib.rs:L:C`
    (cargo's trim-paths convention: <package>-<version>/...), never ./src/lib.rs; a panic
    in the workspace member stays `app/src/main.rs:L:C`, as with plain cargo."""
    p = outside_dep_project(tmp_path / "checkout", kache_exe, DEP_PANIC)
    oracle_target = tmp_path / "oracle-target"
    assert p.plain("build", "-q", target_dir=oracle_target).returncode == 0
    oracle_dep = panic_location(run_exe(oracle_target / "debug" / "app", check=False).stderr)
    oracle_app = panic_location(run_exe(oracle_target / "debug" / "app", "member", check=False).stderr)
    dep_src = str(tmp_path / "checkout" / "dep" / "src" / "lib.rs")
    assert oracle_dep.startswith(dep_src + ":") and oracle_app.startswith("app/src/main.rs:")
    p.build()
    got_dep = panic_location(p.run(check=False).stderr)
    got_app = panic_location(p.run("member", check=False).stderr)
    assert got_app == oracle_app
    assert got_dep == "dep-0.1.0/src/lib.rs" + oracle_dep[len(dep_src):]


def test_the_users_remap_path_prefix_wins(tmp_path: Path, kache_exe: str) -> None:
    """Case 9c: RUSTFLAGS=--remap-path-prefix=<abs dep dir>=DEP: the panic in dep is
    located at DEP/src/lib.rs:L:C, exactly as plain cargo with the same RUSTFLAGS."""
    dep_dir = tmp_path / "checkout" / "dep"
    rustflags = f"--remap-path-prefix={dep_dir}=DEP"
    p = outside_dep_project(tmp_path / "checkout", kache_exe, DEP_PANIC, RUSTFLAGS=rustflags)
    oracle_target = tmp_path / "oracle-target"
    assert p.plain("build", "-q", target_dir=oracle_target, RUSTFLAGS=rustflags).returncode == 0
    expected = panic_location(run_exe(oracle_target / "debug" / "app", check=False).stderr)
    assert expected.startswith("DEP/src/lib.rs:")
    p.build()
    assert panic_location(p.run(check=False).stderr) == expected


# --------------------------------------------------------------------------- case 10


@pytest.mark.parametrize("variable, value, words", [
    ("KACHE_COMPRESSION_LEVEL", "99", ("compression", "99")),
    ("KACHE_MAX_SIZE", "banana", ("banana",)),
], ids=["compression-level", "max-size"])
def test_kache_warnings_are_not_stored_in_cargos_output(project, variable: str, value: str,
                                                        words: tuple[str, ...]) -> None:
    """Case 10: a build with an invalid setting makes kache warn; with no controlling
    terminal (cargo runs in a session of its own) the warning goes to kache.log in the
    store, not into what cargo records for the unit: a no-op build after the setting is
    fixed shows no line with `kache`."""
    p = project(["lint"])
    p.build(**{variable: value})
    log = p.store / "kache.log"
    logged = log.read_text() if log.exists() else None
    out = p.build()  # the setting fixed: a no-op build, which replays what cargo stored
    shown = [line for line in (out.stdout + out.stderr).splitlines() if "kache" in line.lower()]
    problems = []
    if shown:
        problems.append(f"cargo replays kache's lines: {shown}")
    if logged is None:
        problems.append(f"{log} was not written")
    elif not all(w in logged.lower() for w in words):
        problems.append(f"{log} does not have the warning: {logged!r}")
    assert not problems, "\n".join(problems)


# --------------------------------------------------------------------------- case 11


def _store_inodes(store: Path) -> set[tuple[int, int]]:
    out = set()
    for dirpath, _dirs, files in os.walk(store):
        for f in files:
            st = os.lstat(os.path.join(dirpath, f))
            out.add((st.st_dev, st.st_ino))
    return out


def _links_within(directory: Path, st: os.stat_result) -> int:
    n = 0
    for dirpath, _dirs, files in os.walk(directory):
        for f in files:
            s = os.lstat(os.path.join(dirpath, f))
            n += (s.st_dev, s.st_ino) == (st.st_dev, st.st_ino)
    return n


def _bin_files(target: Path) -> list[Path]:
    deps = [f for f in (target / "debug" / "deps").glob("app-*") if f.suffix != ".d"]
    assert len(deps) == 1, deps
    return [target / "debug" / "app", deps[0]]


def test_a_cached_executable_is_a_private_copy(project, tmp_path: Path) -> None:
    """Case 11: with KACHE_CACHE_EXECUTABLES=1, the bin just compiled and recorded, and
    the one restored from the cache after cargo clean, are private: no file of the store
    shares their inode, and every link they have is in the target dir (deps/app-<hash>
    and the copy cargo uplifts to debug/app, as with plain cargo)."""
    p = project(["lint"], KACHE_CACHE_EXECUTABLES="1")
    oracle_target = tmp_path / "oracle-target"
    assert p.plain("build", "-q", target_dir=oracle_target).returncode == 0
    oracle_links = [f.stat().st_nlink for f in _bin_files(oracle_target)]

    def check(when: str) -> None:
        store = _store_inodes(p.store)
        for f, plain_links in zip(_bin_files(p.target), oracle_links, strict=True):
            st = f.stat()
            assert (st.st_dev, st.st_ino) not in store, f"{when}: {f} is a file of the store"
            assert st.st_nlink == _links_within(p.target, st) == plain_links, \
                f"{when}: {f} has {st.st_nlink} links, plain cargo's has {plain_links}"

    p.build()
    assert p.outcomes()["app"] == "miss"
    check("compiled and recorded")
    p.clean()
    p.build()
    assert p.outcomes()["app"] == "local_hit"
    check("restored from the cache")


def test_a_target_dir_kache_filled_builds_without_kache(project, tmp_path: Path) -> None:
    """A neighbour of case 11: after a hit, the outputs kache restored (hardlinks of its
    blobs) are in the target dir. A build of that target dir without kache (an IDE, kache
    switched off) after an edit must work as plain cargo's does: rustc refuses to
    compile over an output it may not write."""
    p = project(["lint", "mac", "envlib", "words", "words_macro"])
    (p.path / "data").mkdir(exist_ok=True)
    p.build()
    p.clean()
    p.build()
    assert set(p.outcomes().values()) >= {"local_hit"}
    for crate in ("lint", "words_macro"):
        lib = p.path / crate / "src" / "lib.rs"
        lib.write_text(lib.read_text() + "\nfn _added() {}\n")
    out = subprocess.run(["cargo", "build", "--offline"], cwd=p.path, env=oracle_env(), capture_output=True,
                         text=True, start_new_session=True)
    assert out.returncode == 0, out.stderr
    assert "not writeable" not in out.stderr
    assert printed(run_exe(p.exe()).stdout)["lint"] == "3"


# --------------------------------------------------------------------------- case 12


# A crate from a "registry" (crates.io replaced by a vendored directory: no network),
# with a build script: cargo gives a registry crate the same command line whatever
# CARGO_INCREMENTAL says (it never compiles one incrementally).
VENDORED = {
    ".cargo/config.toml": '[source.crates-io]\nreplace-with = "vendored"\n\n'
                          '[source.vendored]\ndirectory = "vendor"\n',
    "vendor/vdep/Cargo.toml": '[package]\nname = "vdep"\nversion = "0.1.0"\nedition = "2021"\n'
                              'build = "build.rs"\n',
    "vendor/vdep/.cargo-checksum.json": '{"files": {}, "package": null}\n',
    "vendor/vdep/build.rs": 'fn main() {\n    println!("cargo:rustc-env=VDEP_VALUE=7");\n}\n',
    "vendor/vdep/src/lib.rs": 'pub fn value() -> &\'static str {\n    env!("VDEP_VALUE")\n}\n',
    "app/Cargo.toml": '[package]\nname = "app"\nversion = "0.1.0"\nedition = "2021"\n\n'
                      '[dependencies]\nenvlib = { path = "../envlib" }\nvdep = "0.1"\n',
}
VENDORED_MAIN = ('fn main() {\n    println!("envlib={}", envlib::dir());\n'
                 '    println!("vdep={}", vdep::value());\n}\n')


@pytest.mark.parametrize("variable", ["CARGO_INCREMENTAL", "CARGO_CACHE_RUSTC_INFO"])
def test_a_cargo_variable_without_effect_on_the_output_is_still_a_hit(project, variable: str) -> None:
    """Case 12: build, cargo clean, rebuild with CARGO_INCREMENTAL=0 (or
    CARGO_CACHE_RUSTC_INFO=0): every cacheable unit whose command line cargo leaves as it
    was is a local hit. CARGO_CACHE_RUSTC_INFO=0 changes no command line; under
    CARGO_INCREMENTAL=0 cargo gives the workspace's own (local) crates another
    -C metadata, so only the registry crate and its build script must hit."""
    p = project(["envlib"], main=VENDORED_MAIN, app_files=VENDORED)
    p.build()
    first = p.outcomes()
    cacheable = {c for c, o in first.items() if o != "passthrough"}
    assert {"vdep", "build_script_build", "envlib", "mac"} <= cacheable, first
    p.clean()
    p.build(**{variable: "0"})
    again = p.outcomes()
    must_hit = {"vdep", "build_script_build"} if variable == "CARGO_INCREMENTAL" else cacheable
    assert {c: again.get(c) for c in must_hit} == dict.fromkeys(must_hit, "local_hit")
    assert p.printed() == {"envlib": str(p.path / "envlib"), "vdep": "7"}


def test_diagnostic_width_does_not_change_the_key(tmp_path: Path, kache_exe: str) -> None:
    """Case 12: cargo passes --diagnostic-width only when it runs on a terminal. The same
    rustc command line, called through kache without it and then with
    --diagnostic-width=80, is a miss and then a local hit."""
    crate = tmp_path / "dw"
    write_files(crate, {"src/lib.rs": "pub fn answer() -> u32 {\n    42\n}\n"})
    store = tmp_path / "store"
    base = [kache_exe, real_rustc(), "--crate-name", "dw", "--edition=2021", "src/lib.rs",
            "--error-format=json", "--json=diagnostic-rendered-ansi,artifacts,future-incompat",
            "--crate-type", "lib", "--emit=dep-info,metadata,link", "-C", "embed-bitcode=no",
            "-C", "debuginfo=2", "-C", "metadata=0123456789abcdef", "-C", "extra-filename=-0123456789abcdef",
            "--out-dir", str(crate / "out")]
    env = oracle_env(KACHE_CACHE_DIR=str(store), KACHE_DAEMON_AUTOSTART="0", CARGO_PKG_NAME="dw",
                     CARGO_PKG_VERSION="0.1.0", CARGO_MANIFEST_DIR=str(crate))
    for argv in (base, [*base, "--diagnostic-width=80"]):
        out = subprocess.run(argv, cwd=crate, env=env, capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
    project = Project(crate, store, kache_exe, tmp_path / "rustc.log")
    assert [e["outcome"] for e in project.take_events()] == ["miss", "local_hit"]


# --------------------------------------------------------------------------- case 13


def test_a_relative_target_dir_is_cached(project) -> None:
    """Case 13: CARGO_TARGET_DIR=../target (relative to the workspace, where cargo runs):
    units are cached (misses, then local hits after cargo clean), not passed through
    with reason output-path."""
    p = project(["mid", "envlib"], CARGO_TARGET_DIR="../target")
    p.build()
    first = {e["crate"]: (e["outcome"], e.get("reason")) for e in p.take_events()}
    libs = ["gen", "mid", "build_script_build", "envlib", "mac"]
    assert {c: first.get(c) for c in libs} == dict.fromkeys(libs, ("miss", None))
    p.clean()
    p.build()
    again = p.outcomes()
    assert {c: again.get(c) for c in libs} == dict.fromkeys(libs, "local_hit")
    out = run_exe(p.path.parent / "target" / "debug" / "app").stdout
    assert printed(out)["mid"] == "43"
