"""Small cargo workspaces written from Python dicts, built through kache and by plain
cargo (the oracle: no wrapper, no KACHE_* variable, a fresh target dir), and the three
ways a hit can be served: the wrapper alone, a running daemon, the native client.

Every workspace here uses path dependencies only (one test replaces crates.io by a
vendored directory), edition 2021; every cargo runs with --offline.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.workspace import Workspace, outcomes

__all__ = ["BIN_EXE_TEST", "CLIPPY_ORACLE", "PARTS", "NativeClient", "Part", "Project", "Serving",
           "build_native_client", "clippy_sequence",
           "error_locations", "events_of", "kache_env", "make_project", "oracle_env", "oracle_printed",
           "outcomes", "panic_location", "plain_cargo", "printed", "real_rustc", "run_exe", "workspace_files",
           "write_files"]

_WRAPPER_VARS = ("RUSTC_WRAPPER", "RUSTC_WORKSPACE_WRAPPER", "KACHE_")


# --------------------------------------------------------------------------- files


def write_files(root: Path, files: Mapping[str, str], symlinks: Mapping[str, str] | None = None) -> None:
    """Write ``files`` (path relative to ``root`` → text) and ``symlinks`` (path → target)."""
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    for rel, target in (symlinks or {}).items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.symlink_to(target)


def _manifest(name: str, deps: Iterable[str] = (), extra: str = "", build: bool = False,
              proc_macro: bool = False) -> str:
    lines = [f'[package]\nname = "{name}"\nversion = "0.1.0"\nedition = "2021"\n']
    if build:
        lines.append('build = "build.rs"\n')
    if proc_macro:
        lines.append("\n[lib]\nproc-macro = true\n")
    lines.append("\n[dependencies]\n")
    for d in deps:
        lines.append(f'{d} = {{ path = "../{d}" }}\n')
    lines.append(extra)
    return "".join(lines)


@dataclass
class Part:
    """One workspace crate (a directory of the same name) and what the app prints of it:
    ``<name>=<value of prints>``, one line."""

    name: str
    files: dict[str, str]
    prints: str | None = None
    deps: tuple[str, ...] = ()
    symlinks: dict[str, str] = field(default_factory=dict)


def _static_lib_build_rs(source: str, lib: str, link_lib: str | None) -> str:
    """A build script that compiles ``source`` with cc and archives it as ``OUT_DIR/lib``
    with ar (no `cc` crate), and tells cargo where it is."""
    link = f'    println!("cargo:rustc-link-lib={link_lib}");\n' if link_lib else ""
    return (
        "use std::process::Command;\n\n"
        "fn main() {\n"
        '    let out = std::env::var("OUT_DIR").unwrap();\n'
        f'    let obj = format!("{{out}}/{source}.o");\n'
        f'    let lib = format!("{{out}}/{lib}");\n'
        f'    let ok = Command::new("cc").args(["-c", "-fPIC", "{source}", "-o", &obj]).status().unwrap();\n'
        "    assert!(ok.success());\n"
        "    let _ = std::fs::remove_file(&lib);\n"
        '    let ok = Command::new("ar").args(["rcs", &lib, &obj]).status().unwrap();\n'
        "    assert!(ok.success());\n"
        '    println!("cargo:rustc-link-search=native={out}");\n'
        f"{link}"
        f'    println!("cargo:rerun-if-changed={source}");\n'
        '    println!("cargo:rerun-if-changed=build.rs");\n'
        "}\n"
    )


def _parts() -> dict[str, Part]:
    parts = [
        # 1: env! reached through a macro of another crate.
        Part("mac", {"mac/Cargo.toml": _manifest("mac"),
                     "mac/src/lib.rs": "#[macro_export]\nmacro_rules! manifest_dir {\n"
                                       '    () => { env!("CARGO_MANIFEST_DIR") };\n}\n'}),
        Part("envlib", {"envlib/Cargo.toml": _manifest("envlib", ["mac"]),
                        "envlib/src/lib.rs": "pub fn dir() -> String {\n"
                                             "    mac::manifest_dir!().to_string()\n}\n"},
             prints="envlib::dir()", deps=("mac",)),
        # 2: a static library named by #[link] in the source, made by the build script.
        Part("ffi_link", {"ffi_link/Cargo.toml": _manifest("ffi_link", build=True),
                          "ffi_link/build.rs": _static_lib_build_rs("foo.c", "libfoo.a", None),
                          "ffi_link/foo.c": "int foo_value(void) { return 1; }\n",
                          "ffi_link/src/lib.rs": '#[link(name = "foo", kind = "static")]\n'
                                                 'extern "C" {\n    fn foo_value() -> i32;\n}\n\n'
                                                 "pub fn value() -> i32 {\n    unsafe { foo_value() }\n}\n"},
             prints="ffi_link::value()"),
        # 3: a static library given by the build script as static:+verbatim=libbar.a.
        Part("ffi_verbatim", {"ffi_verbatim/Cargo.toml": _manifest("ffi_verbatim", build=True),
                              "ffi_verbatim/build.rs": _static_lib_build_rs("bar.c", "libbar.a",
                                                                            "static:+verbatim=libbar.a"),
                              "ffi_verbatim/bar.c": "int bar_value(void) { return 1; }\n",
                              "ffi_verbatim/src/lib.rs": 'extern "C" {\n    fn bar_value() -> i32;\n}\n\n'
                                                         "pub fn value() -> i32 {\n"
                                                         "    unsafe { bar_value() }\n}\n"},
             prints="ffi_verbatim::value()"),
        # 4: --cfg given by a RUSTC script.
        Part("flags", {"flags/Cargo.toml": _manifest(
            "flags", extra="\n[lints.rust]\nunexpected_cfgs = { level = \"warn\", "
                           "check-cfg = ['cfg(myflag)', 'cfg(otherflag)'] }\n"),
            "flags/src/lib.rs": '#[cfg(myflag)]\npub const FLAG: &str = "myflag";\n'
                                '#[cfg(all(otherflag, not(myflag)))]\npub const FLAG: &str = "otherflag";\n'
                                '#[cfg(not(any(myflag, otherflag)))]\npub const FLAG: &str = "none";\n'},
             prints="flags::FLAG"),
        # 5: a clippy warning (clippy::ptr_arg).
        Part("lint", {"lint/Cargo.toml": _manifest("lint"),
                      "lint/src/lib.rs": "pub fn count(v: &Vec<i32>) -> usize {\n    v.len()\n}\n"},
             prints="lint::count(&vec![1, 2, 3])"),
        # 6: a proc macro that reads a workspace file when it expands.
        Part("words_macro", {"words_macro/Cargo.toml": _manifest("words_macro", proc_macro=True),
                             "words_macro/src/lib.rs":
                                 "use proc_macro::TokenStream;\n\n#[proc_macro]\n"
                                 "pub fn words(_input: TokenStream) -> TokenStream {\n"
                                 '    let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap();\n'
                                 '    let path = std::path::Path::new(&dir).join("../data/words.txt");\n'
                                 "    let text = std::fs::read_to_string(path).unwrap();\n"
                                 '    format!("{:?}", text.trim()).parse().unwrap()\n}\n'}),
        Part("words", {"words/Cargo.toml": _manifest("words", ["words_macro"]),
                       "words/src/lib.rs": "pub const WORDS: &str = words_macro::words!();\n",
                       "data/words.txt": "alpha\n"},
             prints="words::WORDS", deps=("words_macro",)),
        # 7: include_str! in a module reached through a symlinked directory.
        Part("linky", {"linky/Cargo.toml": _manifest("linky"),
                       "linky/src/lib.rs": '#[path = "linked/m.rs"]\nmod m;\n\n'
                                           "pub fn text() -> &'static str {\n    m::TEXT.trim()\n}\n",
                       "linky/src/data.txt": "decoy\n",
                       "shared/dir/m.rs": 'pub const TEXT: &str = include_str!("../data.txt");\n',
                       "shared/data.txt": "real-1\n"},
             prints="linky::text()", symlinks={"linky/src/linked": "../../shared/dir"}),
        # 14: a file the build script writes, named by cargo:rustc-env, include!d.
        Part("gen", {"gen/Cargo.toml": _manifest("gen", build=True),
                     "gen/build.rs": "fn main() {\n"
                                     '    let out = std::env::var("OUT_DIR").unwrap();\n'
                                     '    let path = std::path::Path::new(&out).join("consts.rs");\n'
                                     '    std::fs::write(&path, "pub const ANSWER: u32 = 42;\\n").unwrap();\n'
                                     '    println!("cargo:rustc-env=GEN={}", path.display());\n'
                                     '    println!("cargo:rerun-if-changed=build.rs");\n}\n',
                     "gen/src/lib.rs": 'include!(env!("GEN"));\n'}),
        Part("mid", {"mid/Cargo.toml": _manifest("mid", ["gen"]),
                     "mid/src/lib.rs": "pub fn answer() -> u32 {\n    gen::ANSWER + 1\n}\n"},
             prints="mid::answer()", deps=("gen",)),
    ]
    return {p.name: p for p in parts}


PARTS: dict[str, Part] = _parts()

# The integration test of case 1: CARGO_BIN_EXE_app, reached through concat!, must name
# the bin of this build's own target dir.
BIN_EXE_TEST = (
    "#[test]\n"
    "fn bin_exe_is_this_builds() {\n"
    '    let exe = std::path::Path::new(env!(concat!("CARGO_BIN_EXE_", "app")));\n'
    "    let me = std::env::current_exe().unwrap();\n"
    "    let profile_dir = me.parent().unwrap().parent().unwrap();\n"
    '    println!("CARGO_BIN_EXE_app={}", exe.display());\n'
    "    assert_eq!(exe.parent().unwrap().canonicalize().unwrap(), profile_dir.canonicalize().unwrap(),\n"
    '               "CARGO_BIN_EXE_app names another build: {}", exe.display());\n'
    "}\n"
)


def workspace_files(names: Iterable[str], *, main: str | None = None,
                    app_files: Mapping[str, str] | None = None) -> tuple[dict[str, str], dict[str, str]]:
    """Files and symlinks of a workspace of the parts ``names`` (with what they need) and
    a bin ``app`` that depends on every part that prints and prints ``name=value`` lines."""
    chosen: list[str] = []

    def add(n: str) -> None:
        for d in PARTS[n].deps:
            add(d)
        if n not in chosen:
            chosen.append(n)

    for n in names:
        add(n)
    files: dict[str, str] = {}
    symlinks: dict[str, str] = {}
    for n in chosen:
        files.update(PARTS[n].files)
        symlinks.update(PARTS[n].symlinks)
    printing = [n for n in chosen if PARTS[n].prints]
    if main is None:
        body = "".join(f'    println!("{n}={{}}", {PARTS[n].prints});\n' for n in printing)
        main = f"fn main() {{\n{body}}}\n"
    files["app/Cargo.toml"] = _manifest("app", printing)
    files["app/src/main.rs"] = main
    files.update(app_files or {})
    members = ", ".join(f'"{n}"' for n in ["app", *chosen])
    files["Cargo.toml"] = f'[workspace]\nresolver = "2"\nmembers = [{members}]\n'
    return files, symlinks


# --------------------------------------------------------------------------- running


def oracle_env(**extra: str) -> dict[str, str]:
    """The environment of a plain cargo build: no wrapper, no KACHE_* variable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_WRAPPER_VARS)}
    env["RUST_BACKTRACE"] = "0"
    env.update(extra)
    return env


def _cargo_argv(args: tuple[str, ...]) -> list[str]:
    """``cargo ARGS --offline``, the flag before a ``--`` (after it, it would be rustc's)."""
    args_list = list(args)
    if "--" in args_list:
        i = args_list.index("--")
        return ["cargo", *args_list[:i], "--offline", *args_list[i:]]
    return ["cargo", *args_list, "--offline"]


def plain_cargo(path: Path, *args: str, target_dir: Path,
                **extra_env: str) -> subprocess.CompletedProcess[str]:
    """The oracle: plain cargo (no wrapper, no kache) into ``target_dir`` (pass a fresh one)."""
    env = oracle_env(CARGO_TARGET_DIR=str(target_dir), **extra_env)
    return subprocess.run(_cargo_argv(args), cwd=path, env=env, capture_output=True, text=True,
                          start_new_session=True)


def run_exe(exe: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(exe), *args], capture_output=True, text=True, check=check, env=oracle_env())


def printed(text: str) -> dict[str, str]:
    """``name=value`` lines → {name: value}."""
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def real_rustc() -> str:
    """The real rustc of the default toolchain (not the rustup proxy)."""
    sysroot = subprocess.run(["rustc", "--print", "sysroot"], capture_output=True, text=True,
                             check=True).stdout.strip()
    return f"{sysroot}/bin/rustc"


class Project(Workspace):
    """A workspace written from dicts, built through kache (``env``), with its store.

    Unlike :class:`Workspace`, ``--offline`` goes before a ``--``, every cargo runs in a
    session of its own (no controlling terminal), and ``extra_env`` may remove a variable
    (value None)."""

    def cargo(self, *args: str, check: bool = True,
              **extra_env: str | None) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, **self.env}
        for k, v in extra_env.items():
            if v is None:
                env.pop(k, None)
            else:
                env[k] = v
        out = subprocess.run(_cargo_argv(args), cwd=self.path, env=env, capture_output=True, text=True,
                             start_new_session=True)
        if check and out.returncode != 0:
            raise AssertionError(f"cargo {' '.join(args)} failed:\n{out.stderr}")
        return out

    def exe(self, name: str = "app", profile: str = "debug") -> Path:
        return self.target / profile / name

    def run(self, *args: str, name: str = "app", check: bool = True) -> subprocess.CompletedProcess[str]:
        return run_exe(self.exe(name), *args, check=check)

    def printed(self) -> dict[str, str]:
        return printed(self.run().stdout)

    def plain(self, *args: str, target_dir: Path, **extra_env: str) -> subprocess.CompletedProcess[str]:
        return plain_cargo(self.path, *args, target_dir=target_dir, **extra_env)

    def outcomes(self) -> dict[str, str]:
        return outcomes(self.take_events())

    def copy_to(self, path: Path, **env: str) -> Project:
        """A second checkout: this one's files (not its target dir) at ``path``, the same
        store, the same settings plus ``env``; its events start after this one's."""
        shutil.copytree(self.path, path, symlinks=True, ignore=shutil.ignore_patterns("target"))
        other = Project(path, self.store, self.kache, self.rustc_log, {**self.env, **env})
        other._seen = len(self.events())  # type: ignore[attr-defined]
        return other


def make_project(root: Path, store: Path, kache: str, names: Iterable[str], *, main: str | None = None,
                 app_files: Mapping[str, str] | None = None, **env: str) -> Project:
    files, symlinks = workspace_files(names, main=main, app_files=app_files)
    write_files(root, files, symlinks)
    return Project(root, store, kache, root.parent / "rustc.log", kache_env(kache, store, **env))


def kache_env(kache: str, store: Path, **env: str) -> dict[str, str]:
    """What a project built through kache alone adds to the environment."""
    return {"RUSTC_WRAPPER": kache, "KACHE_CACHE_DIR": str(store), "KACHE_DAEMON_AUTOSTART": "0",
            "PYTHONDONTWRITEBYTECODE": "1", "RUST_BACKTRACE": "0", **env}


def events_of(proj: Project, crates: Iterable[str]) -> dict[str, dict]:
    """The last event of each of ``crates`` among the events not yet taken."""
    wanted = set(crates)
    return {e["crate"]: e for e in proj.take_events() if e["crate"] in wanted}


def oracle_printed(path: Path, target: Path, **env: str) -> dict[str, str]:
    """What the app of the workspace at ``path`` prints, built by plain cargo into ``target``."""
    out = plain_cargo(path, "build", "-q", target_dir=target, **env)
    assert out.returncode == 0, out.stderr
    return printed(run_exe(target / "debug" / "app").stdout)


CLIPPY_ERROR = "error: writing `&Vec` instead of `&[_]`"


def clippy_sequence(cargo) -> list[tuple[int, bool]]:  # type: ignore[no-untyped-def]
    """Case 5's clippy runs; for each, the exit code and whether `lint`'s clippy::ptr_arg
    is shown as an error. ``cargo(*args)`` runs cargo in the workspace.

    1. `cargo clippy --no-deps -p app`: `lint` is checked as a dependency, not linted;
    2. `cargo clippy --no-deps -p lint -- -D warnings`: `lint` is linted (plain: 101);
    3. `cargo clippy --no-deps -p app -- -D warnings`: `lint` checked, not linted, with the
       same CLIPPY_ARGS as the next run;
    4. `cargo clean`, then `cargo clippy --no-deps -p lint -- -D warnings` (plain: 101).
    """
    runs = [("clippy", "--no-deps", "-p", "app"),
            ("clippy", "--no-deps", "-p", "lint", "--", "-D", "warnings"),
            ("clippy", "--no-deps", "-p", "app", "--", "-D", "warnings"),
            ("clean",),
            ("clippy", "--no-deps", "-p", "lint", "--", "-D", "warnings")]
    seen = []
    for args in runs:
        out = cargo(*args)
        if args[0] == "clippy":
            seen.append((out.returncode, CLIPPY_ERROR in out.stderr))
    return seen


CLIPPY_ORACLE = [(0, False), (101, True), (0, False), (101, True)]


# --------------------------------------------------------------------------- serving


@dataclass
class NativeClient:
    path: Path
    store: Path


def build_native_client(base: Path) -> NativeClient:
    """The native client (``kache daemon client --output``) built under ``base`` for the
    store ``base/nstore`` (its socket path is compiled in)."""
    store = base / "nstore"
    home = base / "home"
    (home / ".cargo").mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(_WRAPPER_VARS + ("CARGO_", "XDG_"))}
    env.update(HOME=str(home), CARGO_HOME=str(home / ".cargo"), XDG_CONFIG_HOME=str(home / ".config"),
               XDG_CACHE_HOME=str(home / ".cache"), KACHE_CACHE_DIR=str(store))
    argv = [_kache_path(), "daemon", "client", "--output", str(base / "kache-client"), "--json"]
    out = subprocess.run(argv, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    built = json.loads(out.stdout)
    assert built["socket"] == str(store / "daemon.sock"), built
    return NativeClient(Path(built["path"]), store)


def _kache_path() -> str:
    exe = Path(sys.executable).with_name("kache")
    return str(exe) if exe.exists() else (shutil.which("kache") or "kache")


class Serving:
    """How hits are served to a project: ``wrapper`` (kache alone), ``daemon`` (a kache
    daemon running on the store serves them) or ``native`` (the native client is the
    wrapper, the daemon serves them)."""

    def __init__(self, mode: str, store: Path, kache: str, client: Path | None = None) -> None:
        self.mode, self.store, self.kache, self.client = mode, store, kache, client
        self.started = False

    @property
    def wrapper(self) -> str:
        return str(self.client) if self.mode == "native" else self.kache

    def env(self) -> dict[str, str]:
        return {"RUSTC_WRAPPER": self.wrapper, "KACHE_CACHE_DIR": str(self.store),
                "KACHE_DAEMON_AUTOSTART": "0", "KACHE_DAEMON_IDLE_TIMEOUT": "300",
                "PYTHONDONTWRITEBYTECODE": "1", "RUST_BACKTRACE": "0"}

    def start(self) -> None:
        if self.mode == "wrapper":
            return
        self.store.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **self.env()}
        out = subprocess.run(["sh", "-c", 'umask 077; exec "$0" daemon start', self.kache], env=env,
                             capture_output=True, text=True, start_new_session=True)
        assert out.returncode == 0, out.stderr
        deadline = time.monotonic() + 15
        while not (self.store / "daemon.sock").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert (self.store / "daemon.sock").exists(), "the daemon did not start"
        self.started = True

    def stop(self) -> None:
        if self.started:
            subprocess.run([self.kache, "daemon", "stop"], env={**os.environ, **self.env()},
                           capture_output=True, start_new_session=True)
            self.started = False


def error_locations(stderr: str) -> list[str]:
    """The ``--> path:line:col`` locations of rustc's rendered errors."""
    return re.findall(r"-->\s+(\S+:\d+:\d+)", stderr)


def panic_location(stderr: str) -> str:
    m = re.search(r"panicked at (\S+:\d+:\d+):", stderr)
    assert m, stderr
    return m.group(1)
