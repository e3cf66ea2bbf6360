"""A crate whose build script compiles C (and assembly) into a static library, as cc-rs
does: with absolute source paths and debug information, so each machine's library holds
its own paths. Another checkout with another HOME shares the entries (the library is
keyed by its portable digest), and any real change to the C code is still a miss."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.workspace import Workspace, make_counting_rustc, outcomes

pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(not (shutil.which("cc") and shutil.which("ar")), reason="needs cc and ar")]

ASM = platform.machine() == "x86_64"

BUILD_RS = r'''
use std::{env, path::PathBuf, process::Command};
fn main() {
    let pkg = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let out = PathBuf::from(env::var("OUT_DIR").unwrap());
    let mut objects = Vec::new();
    let objdir = out.join(OBJ_DIR);
    std::fs::create_dir_all(&objdir).unwrap();
    for (src, obj) in SOURCES {
        let o = objdir.join(obj);
        let ok = Command::new("cc").args(["-g", "-O1", "-fPIC", "-c"]).arg(pkg.join(src)).arg("-o").arg(&o)
            .status().unwrap().success();
        assert!(ok, "cc failed");
        println!("cargo:rerun-if-changed={}", src);
        objects.push(o);
    }
    let lib = out.join("libcnat_c.a");
    let _ = std::fs::remove_file(&lib);
    assert!(Command::new("ar").arg(AR_FLAGS).arg(&lib).args(&objects).status().unwrap().success());
    println!("cargo:rustc-link-search=native={}", out.display());
    println!("cargo:rustc-link-lib=static=cnat_c");
}
'''


def sources(thin: bool) -> str:
    """The build script's constants: its sources, and where and how it archives them (a
    thin archive, ``ar crsT``, names objects it does not hold, here in a subdirectory)."""
    pairs = [("c/value.c", "value.o")] + ([("c/asm.S", "asm.o")] if ASM else [])
    return ("const SOURCES: &[(&str, &str)] = &[" + ", ".join(f'("{s}", "{o}")' for s, o in pairs) + "];\n"
            + f'const OBJ_DIR: &str = "{"obj" if thin else ""}";\nconst AR_FLAGS: &str = "{"crsT" if thin else "crs"}";\n')


def write_workspace(root: Path, c_value: int = 40, thin: bool = False) -> None:
    files = {
        "Cargo.toml": '[workspace]\nmembers = ["cnat", "mid", "app"]\nresolver = "2"\n',
        "cnat/Cargo.toml": '[package]\nname = "cnat"\nversion = "0.1.0"\nedition = "2021"\n',
        "cnat/build.rs": sources(thin) + BUILD_RS,
        "cnat/src/lib.rs": 'extern "C" { fn c_value() -> i32; }\n'
                           + ('extern "C" { fn asm_value() -> i32; }\n' if ASM else "")
                           + "pub fn value() -> i32 { unsafe { c_value()"
                           + (" + asm_value()" if ASM else " + 2") + " } }\n",
        "mid/Cargo.toml": '[package]\nname = "mid"\nversion = "0.1.0"\nedition = "2021"\n'
                          '[dependencies]\ncnat = { path = "../cnat" }\n',
        "mid/src/lib.rs": "pub fn answer() -> i32 { cnat::value() }\n",
        "app/Cargo.toml": '[package]\nname = "app"\nversion = "0.1.0"\nedition = "2021"\n'
                          '[dependencies]\nmid = { path = "../mid" }\n',
        "app/src/main.rs": 'fn main() { println!("answer={}", mid::answer()); }\n',
    }
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    set_c(root, c_value)
    if ASM:
        (root / "cnat/c/asm.S").write_text(".text\n.globl asm_value\nasm_value:\n  mov $2, %eax\n  ret\n")


def set_c(root: Path, value: int, lead: str = "") -> None:
    (root / "cnat/c").mkdir(parents=True, exist_ok=True)
    (root / "cnat/c/value.c").write_text(f"{lead}int c_value(void) {{ return {value}; }}\n")


def machine(base: Path, store: Path, kache_exe: str, thin: bool = False) -> Workspace:
    path = base / "src" / "workspace"
    write_workspace(path, thin=thin)
    home = base / "home"
    (home / ".cargo").mkdir(parents=True)
    log = base / "rustc.log"
    rustc = make_counting_rustc(base / "toolchain", log)
    ws = Workspace(path, store, kache_exe, log)
    ws.env = {"RUSTC_WRAPPER": kache_exe, "RUSTC": str(rustc), "KACHE_CACHE_DIR": str(store),
              "HOME": str(home), "CARGO_HOME": str(home / ".cargo"), "PYTHONDONTWRITEBYTECODE": ""}
    return ws


def run_app(ws: Workspace) -> str:
    return subprocess.run([ws.target / "debug" / "app"], capture_output=True, text=True, check=True).stdout


def plain_output(root: Path, target: Path) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUSTC_WRAPPER", "KACHE_"))}
    env["CARGO_TARGET_DIR"] = str(target)
    subprocess.run(["cargo", "build", "--offline", "-q"], cwd=root, env=env, check=True, capture_output=True)
    return subprocess.run([target / "debug" / "app"], capture_output=True, text=True, check=True).stdout


def test_c_code_built_elsewhere_is_shared_and_changes_still_miss(tmp_path: Path, kache_exe: str) -> None:
    store = tmp_path / "store"
    a = machine(tmp_path / "a", store, kache_exe)
    a.build()
    assert run_app(a) == "answer=42\n"
    lib = next((a.target / "debug" / "build").glob("cnat-*/out/libcnat_c.a"))
    assert str(a.path).encode() in lib.read_bytes()  # the paths are there, in the debug strings
    a.take_events()

    b = machine(tmp_path / "machine-b-with-a-longer-name", store, kache_exe)
    b._seen = len(a.events())  # type: ignore[attr-defined]
    b.build()
    got = outcomes(b.take_events())
    assert got["cnat"] == "local_hit" and got["mid"] == "local_hit", got
    assert b.take_rustc_runs() == ["app"]  # the build scripts ran (cargo runs them); nothing else compiled
    assert run_app(b) == "answer=42\n"

    # A real change in the C code: cnat (and mid, which links it) compile again.
    set_c(b.path, 50)
    b.build()
    got = outcomes(b.take_events())
    assert got["cnat"] == "miss" and got["mid"] == "miss", got
    assert run_app(b) == plain_output(b.path, tmp_path / "oracle") == "answer=52\n"

    # A change only to what the debugger sees (line numbers): still a miss, not served.
    set_c(b.path, 50, lead="\n\n")
    b.build()
    assert outcomes(b.take_events())["cnat"] == "miss"


def test_a_thin_archive_is_keyed_by_the_objects_it_names(tmp_path: Path, kache_exe: str) -> None:
    """``ar crsT`` writes only the members' names: a changed object leaves the archive's
    bytes as they were (found by an adversarial review: kache served the old code)."""
    ws = machine(tmp_path / "a", tmp_path / "store", kache_exe, thin=True)
    ws.build()
    lib = next((ws.target / "debug" / "build").glob("cnat-*/out/libcnat_c.a"))
    assert lib.read_bytes().startswith(b"!<thin>\n")
    assert run_app(ws) == "answer=42\n"
    ws.take_events()
    set_c(ws.path, 41)
    ws.build()
    assert outcomes(ws.take_events())["cnat"] == "miss"
    assert run_app(ws) == plain_output(ws.path, tmp_path / "oracle") == "answer=43\n"
    ws.clean()
    ws.build()  # and the entry recorded for the new objects is served for them
    assert outcomes(ws.take_events())["cnat"] == "local_hit"
    assert run_app(ws) == "answer=43\n"
