"""The generated workspaces: their shape (a :class:`WsSpec`, fixed for a sequence), their
mutable content (a :class:`Content`, changed by the operations) and the files both render.

A workspace has 1–3 library crates ``kd_lib0…``, a binary ``kd_app`` that prints
``describe()`` of every library and exits with a code computed from all of them, and,
when a library uses it, a proc-macro crate ``kd_macros``. Each library has a set of
*facets*; every facet adds one labelled line to ``describe()`` (``  <label> …``), so an
artifact built from stale inputs prints a different line, and the label says which input
it was (see :func:`tests.differential.observe.labels`).

Facets (all optional, each a boolean of :class:`LibSpec`):

* ``feature``      ``cfg!(feature = "extra")`` (the operation toggles ``--features``)
* ``cfg``          ``cfg!(kd_x)``, ``cfg!(kd_y)``, ``cfg!(kd_r)`` (RUSTFLAGS / a RUSTC script)
* ``env``          ``env!("KD_VAL")`` and ``option_env!("KD_OPT")``
* ``env_paths``    ``option_env!("HOME")``, ``option_env!("CARGO_HOME")``
* ``manifest_dir`` ``env!("CARGO_MANIFEST_DIR")``
* ``macro_env``    the same through ``kd_lib0::kd_here!()`` / ``kd_lib0::kd_opt!()``, macros
                   of another crate (``option_env!("KD_MAC")``)
* ``include``      ``include_str!("../data/text.txt")``
* ``symlink``      ``mod linked;`` where ``src/linked`` is a symlink to ``shared<i>/a`` or
                   ``shared<i>/b`` at the workspace root, whose ``mod.rs`` does
                   ``include_str!("../data.txt")``: the OS resolves that to
                   ``shared<i>/data.txt``, a lexical normalisation to ``src/data.txt`` (a
                   decoy with other text)
* ``build``        a build script: ``gen`` writes ``$OUT_DIR/gen.rs`` from ``gen.txt`` and
                   ``$KD_GEN``; ``c`` compiles ``csrc/kd.c`` with ``cc``/``ar`` into
                   ``$OUT_DIR/libkd_c<i>.a`` and links it, by ``cargo:rustc-link-lib``
                   (``"directive"``, or ``static:+verbatim=`` ``"verbatim"``) or by
                   ``#[link(kind = "static")]`` (``"attr"``)
* ``proc_macro``   ``kd_macros::scaled!(7)`` (the macro multiplies by its const ``K``)
* ``lint``         a slot for code that triggers a lint: clippy's ``needless_return``
                   (``"clippy"``), clippy's deny-by-default ``approx_constant``
                   (``"deny"``), rustc's ``dead_code`` (``"rustc"``), or nothing
* ``tests``        a unit test and an integration test (``cargo test``)

Every library prints ``debug_assertions`` (the profile) and its value; added modules
(:class:`LibState` ``modules``) print a line each.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

LINT_MODES = ("off", "clippy", "deny", "rustc")
C_LINKS = ("directive", "attr", "verbatim")
CFG_NAMES = ("kd_x", "kd_y", "kd_r")


@dataclass(frozen=True)
class BuildSpec:
    gen: str | None  # None, "out_dir" (include!(concat!(env!("OUT_DIR"), …))) or "rustc_env"
    #                  (cargo:rustc-env=KD_GEN_RS=<path>, include!(env!("KD_GEN_RS")))
    c: str | None  # None, "directive" (cargo:rustc-link-lib=static=kd_cN), "attr" (#[link(…, kind = "static")])
    #               or "verbatim" (cargo:rustc-link-lib=static:+verbatim=libkd_cN.a)


@dataclass(frozen=True)
class LibSpec:
    deps: tuple[int, ...] = ()
    feature: bool = False
    cfg: bool = False
    env: bool = False
    env_paths: bool = False
    manifest_dir: bool = False
    file_paths: bool = False
    macro_env: bool = False
    include: bool = False
    symlink: bool = False
    build: BuildSpec | None = None
    proc_macro: bool = False
    lint: str | None = None  # the lint slot's first mode (LINT_MODES), None: no slot
    tests: bool = False

    def facets(self) -> list[str]:
        out = [f.name for f in dataclasses.fields(self)
               if f.name not in ("deps", "build", "lint") and getattr(self, f.name)]
        if self.lint is not None:
            out.append(f"lint={self.lint}")
        if self.build is not None:
            if self.build.gen:
                out.append(f"build.gen={self.build.gen}")
            if self.build.c:
                out.append(f"build.c={self.build.c}")
        return out


@dataclass(frozen=True)
class WsSpec:
    libs: tuple[LibSpec, ...]
    ext: bool = False  # kd_ext, a path dependency of kd_app outside the workspace (../ext/kd_ext)
    app_test: bool = False  # kd_app/tests/bin.rs, bin_concat.rs: env!("CARGO_BIN_EXE_kd_app"), also via concat!
    rustc: str | None = None  # RUSTC at the start: None, "path" or "bare" (tools/bin/kdrustc)
    rustc_flags: str = ""  # what kdrustc adds to rustc's arguments at the start

    @property
    def has_macros(self) -> bool:
        return any(lib.proc_macro for lib in self.libs)

    def lib_names(self) -> list[str]:
        return [lib_name(i) for i in range(len(self.libs))]

    def packages(self) -> list[str]:
        return self.lib_names() + ["kd_app"] + (["kd_macros"] if self.has_macros else [])

    def describe(self) -> str:
        lines = []
        for i, lib in enumerate(self.libs):
            deps = ",".join(lib_name(d) for d in lib.deps) or "-"
            lines.append(f"{lib_name(i)} (deps {deps}): {' '.join(lib.facets()) or 'no facets'}")
        if self.rustc:
            lines.append(f"RUSTC at the start: {self.rustc} (tools/bin/kdrustc: exec rustc {self.rustc_flags} \"$@\")")
        lines.append("kd_app: prints every library's describe()" + (", kd_macros: proc macro"
                                                                    if self.has_macros else "")
                     + (", kd_ext: path dependency outside the workspace (file!/Location paths)"
                        if self.ext else "")
                     + (", kd_app/tests/bin.rs reads CARGO_BIN_EXE_kd_app" if self.app_test else ""))
        return "\n".join(lines)


@dataclass(frozen=True)
class LibState:
    v: int = 17
    text: str = "hello"
    shared_text: str = "shared"
    decoy: str = "decoy"
    link: str = "a"  # where src/linked points: shared<i>/a or shared<i>/b
    gen: str = "1"
    c_val: int = 40
    lint: str = "off"
    modules: tuple[int, ...] = ()  # the value of each added module, in order


@dataclass(frozen=True)
class Content:
    """What the files say; :func:`render` turns it into files. Snapshots of it are what
    the revert operation goes back to."""

    libs: tuple[LibState, ...]
    macro_k: int = 3
    ext_v: int = 5
    rustc_flags: str = ""  # what the RUSTC script (tools/bin/kdrustc) adds to rustc's arguments

    def with_lib(self, i: int, **changes: object) -> Content:
        libs = list(self.libs)
        libs[i] = dataclasses.replace(libs[i], **changes)  # type: ignore[arg-type]
        return dataclasses.replace(self, libs=tuple(libs))


def initial_content(spec: WsSpec) -> Content:
    return Content(libs=tuple(LibState(v=17 + 10 * i, text=f"hello{i}", shared_text=f"shared{i}",
                                       decoy=f"decoy{i}", gen=str(i + 1), c_val=40 + i,
                                       lint=spec.libs[i].lint or "off")
                              for i in range(len(spec.libs))), rustc_flags=spec.rustc_flags)


def lib_name(i: int) -> str:
    return f"kd_lib{i}"


@dataclass(frozen=True)
class Symlink:
    target: str


@dataclass
class Rendered:
    files: dict[str, str | Symlink] = field(default_factory=dict)

    def add(self, path: str, content: str | Symlink, root: str = "ws/") -> None:
        self.files[root + path] = content


def render(spec: WsSpec, content: Content) -> dict[str, str | Symlink]:
    """Every file of the checkout (paths relative to it: the workspace is ``ws/``, the
    outside dependency ``ext/kd_ext/``, the RUSTC and workspace-wrapper scripts
    ``tools/bin/``), symlinks included."""
    r = Rendered()
    members = spec.lib_names() + ["kd_app"] + (["kd_macros"] if spec.has_macros else [])
    checks = ", ".join(f'"cfg({c})"' for c in CFG_NAMES)
    r.add("Cargo.toml", "[workspace]\nresolver = \"2\"\nmembers = [" + ", ".join(f'"{m}"' for m in members)
          + "]\n\n[workspace.lints.rust]\nunexpected_cfgs = { level = \"warn\", check-cfg = ["
          + checks + "] }\n")
    for i, lib in enumerate(spec.libs):
        _render_lib(r, spec, i, lib, content.libs[i])
    _render_app(r, spec)
    flags = content.rustc_flags + " " if content.rustc_flags else ""
    r.add("tools/bin/kdrustc", f'#!/bin/sh\nexec rustc {flags}"$@"\n', root="")
    r.add("tools/bin/kdwrap", '#!/bin/sh\nexec "$@"\n', root="")
    if spec.ext:
        r.add("ext/kd_ext/Cargo.toml", _package("kd_ext") + "\n[lib]\ndoctest = false\n", root="")
        r.add("ext/kd_ext/src/lib.rs", f"""\
pub const V: u32 = {content.ext_v};

fn kd_ext_unused() {{}}

pub fn describe() -> String {{
    format!("kd_ext: V={{}}\\n  file_paths file={{}} caller={{}}\\n  manifest_dir {{}}", V, file!(),
            std::panic::Location::caller(), env!("CARGO_MANIFEST_DIR"))
}}
""", root="")
    if spec.has_macros:
        r.add("kd_macros/Cargo.toml", _package("kd_macros") + "\n[lib]\nproc-macro = true\ndoctest = false\n"
              + "\n[lints]\nworkspace = true\n")
        r.add("kd_macros/src/lib.rs", f"""\
use proc_macro::TokenStream;

const K: u64 = {content.macro_k};

#[proc_macro]
pub fn scaled(input: TokenStream) -> TokenStream {{
    let n: u64 = input.to_string().trim().parse().expect("an integer literal");
    format!("{{}}u64", n * K).parse().unwrap()
}}
""")
    return r.files


def _package(name: str, build: bool = False) -> str:
    return (f"[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2021\"\n"
            + ("build = \"build.rs\"\n" if build else ""))


def _render_lib(r: Rendered, spec: WsSpec, i: int, lib: LibSpec, st: LibState) -> None:
    name = lib_name(i)
    d = name
    deps = [f'{lib_name(j)} = {{ path = "../{lib_name(j)}" }}' for j in lib.deps]
    if lib.proc_macro:
        deps.append('kd_macros = { path = "../kd_macros" }')
    toml = _package(name, build=lib.build is not None) + "\n[lib]\ndoctest = false\n"
    if lib.feature:
        toml += "\n[features]\nextra = []\n"
    if deps:
        toml += "\n[dependencies]\n" + "\n".join(deps) + "\n"
    toml += "\n[lints]\nworkspace = true\n"
    r.add(f"{d}/Cargo.toml", toml)

    top: list[str] = ["// Generated by the kache differential harness (tests/differential).", "",
                      f"pub const V: u32 = {st.v};", ""]
    value: list[str] = []  # terms added to V
    desc: list[str] = [f'    out.push(format!("{name}: V={{}} value={{}}", V, value()));',
                       '    out.push(format!("  profile debug_assertions={}", cfg!(debug_assertions)));']
    for j in lib.deps:
        value.append(f"{lib_name(j)}::value() % 1000")
    for k, mv in enumerate(st.modules):
        top.append(f"pub mod added{k};")
        r.add(f"{d}/src/added{k}.rs", f"pub const A: u32 = {mv};\n")
        value.append(f"added{k}::A as u64")
        desc.append(f'    out.push(format!("  added{k} A={{}}", added{k}::A));')
    if lib.feature:
        desc.append('    out.push(format!("  feature extra={}", cfg!(feature = "extra")));')
    if lib.cfg:
        desc.append('    out.push(format!("  cfg kd_x={} kd_y={} kd_r={}", cfg!(kd_x), cfg!(kd_y), cfg!(kd_r)));')
    if lib.env:
        desc.append('    out.push(format!("  env KD_VAL={:?} KD_OPT={:?}", env!("KD_VAL"), option_env!("KD_OPT")));')
    if lib.env_paths:
        desc.append('    out.push(format!("  env_paths HOME={:?} CARGO_HOME={:?}", option_env!("HOME"), '
                    'option_env!("CARGO_HOME")));')
    if lib.manifest_dir:
        desc.append('    out.push(format!("  manifest_dir {}", env!("CARGO_MANIFEST_DIR")));')
    if lib.file_paths:
        desc.append('    out.push(format!("  file_paths file={} caller={}", file!(), std::panic::Location::caller()));')
    if lib.macro_env:
        desc.append('    out.push(format!("  macro_env here={} KD_MAC={:?}", kd_lib0::kd_here!(), '
                    'kd_lib0::kd_opt!()));')
    if lib.include:
        r.add(f"{d}/data/text.txt", st.text + "\n")
        desc.append('    out.push(format!("  include text={:?}", include_str!("../data/text.txt")));')
    if lib.symlink:
        r.add(f"shared{i}/a/mod.rs", 'pub fn describe() -> String {\n'
              '    format!("a:{}", include_str!("../data.txt").trim())\n}\n')
        r.add(f"shared{i}/b/mod.rs", 'pub fn describe() -> String {\n'
              '    format!("b:{}", include_str!("../data.txt").trim())\n}\n')
        r.add(f"shared{i}/data.txt", st.shared_text + "\n")
        r.add(f"{d}/src/data.txt", st.decoy + "\n")
        r.add(f"{d}/src/linked", Symlink(f"../../shared{i}/{st.link}"))
        top.append("mod linked;")
        desc.append('    out.push(format!("  symlink linked={}", linked::describe()));')
    if lib.build is not None:
        r.add(f"{d}/build.rs", _build_rs(i, lib.build))
        if lib.build.gen:
            r.add(f"{d}/gen.txt", st.gen + "\n")
            if lib.build.gen == "rustc_env":
                top.append('mod gen {\n    include!(env!("KD_GEN_RS"));\n}')
            else:
                top.append('mod gen {\n    include!(concat!(env!("OUT_DIR"), "/gen.rs"));\n}')
            desc.append('    out.push(format!("  gen GEN={:?}", gen::GEN));')
        if lib.build.c:
            r.add(f"{d}/csrc/kd.c", f"int kd_c{i}(void) {{ return {st.c_val}; }}\n")
            if lib.build.c == "attr":
                top.append(f'#[link(name = "kd_c{i}", kind = "static")]')
            top.append(f"extern \"C\" {{\n    fn kd_c{i}() -> i32;\n}}\n\nfn c_val() -> i32 {{\n"
                       f"    unsafe {{ kd_c{i}() }}\n}}")
            value.append("c_val() as u64")
            desc.append('    out.push(format!("  c kd_c={}", c_val()));')
    if lib.proc_macro:
        value.append("kd_macros::scaled!(7)")
        desc.append('    out.push(format!("  proc_macro scaled={}", kd_macros::scaled!(7)));')
    if lib.lint is not None:
        if st.lint == "clippy":
            top.append("pub fn kd_lint() -> u32 {\n    let x = V + 1;\n    return x;\n}")
        elif st.lint == "deny":
            top.append("pub fn kd_pi() -> f64 {\n    3.14\n}")
        elif st.lint == "rustc":
            top.append("fn kd_unused() {}")
    if i == 0:
        top.append("#[macro_export]\nmacro_rules! kd_here {\n    () => {\n        env!(\"CARGO_MANIFEST_DIR\")\n"
                   "    };\n}\n\n#[macro_export]\nmacro_rules! kd_opt {\n    () => {\n"
                   "        option_env!(\"KD_MAC\")\n    };\n}")
    body = "\n".join(top) + "\n\npub fn value() -> u64 {\n    " + " + ".join(["V as u64"] + value) + "\n}\n\n"
    items = [d.strip()[len("out.push("):-len(");")] for d in desc]
    body += ("pub fn describe() -> String {\n    let out: Vec<String> = vec![\n"
             + "".join(f"        {item},\n" for item in items) + '    ];\n    out.join("\\n")\n}\n')
    if lib.tests:
        body += ("\n#[cfg(test)]\nmod tests {\n    #[test]\n    fn v_is_small() {\n"
                 '        assert!(super::V < 500, "V={}", super::V);\n    }\n}\n')
        r.add(f"{d}/tests/it.rs", f"""\
#[test]
fn describe_it() {{
    println!("{{}}", {name}::describe());
}}

#[test]
fn value_is_odd() {{
    assert!({name}::value() % 2 == 1, "value={{}}", {name}::value());
}}
""")
    r.add(f"{d}/src/lib.rs", body)


def _build_rs(i: int, b: BuildSpec) -> str:
    imports = "env, fs, path::PathBuf, process::Command" if b.c else "env, fs, path::PathBuf"
    if not b.gen and not b.c:
        imports = "env, path::PathBuf"
    lines = [f"use std::{{{imports}}};", "", "fn main() {",
             '    let out = PathBuf::from(env::var("OUT_DIR").unwrap());']
    if b.gen:
        lines += ['    println!("cargo:rerun-if-changed=gen.txt");',
                  '    println!("cargo:rerun-if-env-changed=KD_GEN");',
                  '    let n = fs::read_to_string("gen.txt").unwrap();',
                  '    let extra = env::var("KD_GEN").unwrap_or_default();',
                  '    let value = format!("{}|{}", n.trim(), extra);',
                  '    fs::write(out.join("gen.rs"), format!("pub const GEN: &str = {:?};\\n", value)).unwrap();']
        if b.gen == "rustc_env":
            lines.append('    println!("cargo:rustc-env=KD_GEN_RS={}", out.join("gen.rs").display());')
    if b.c:
        lines += ['    println!("cargo:rerun-if-changed=csrc/kd.c");',
                  '    let obj = out.join("kd.o");',
                  '    let ok = Command::new("cc").args(["-c", "-fPIC", "-O0", "csrc/kd.c", "-o"]).arg(&obj)',
                  '        .status().unwrap().success();',
                  '    assert!(ok, "cc failed");',
                  f'    let lib = out.join("libkd_c{i}.a");',
                  '    let _ = fs::remove_file(&lib);',
                  '    let ok = Command::new("ar").arg("crs").arg(&lib).arg(&obj).status().unwrap().success();',
                  '    assert!(ok, "ar failed");',
                  '    println!("cargo:rustc-link-search=native={}", out.display());']
        if b.c == "directive":
            lines.append(f'    println!("cargo:rustc-link-lib=static=kd_c{i}");')
        elif b.c == "verbatim":
            lines.append(f'    println!("cargo:rustc-link-lib=static:+verbatim=libkd_c{i}.a");')
    if not b.gen and not b.c:
        lines.append('    println!("cargo:rerun-if-changed=build.rs");')
        lines.append('    let _ = out;')
    lines.append("}")
    return "\n".join(lines) + "\n"


def _render_app(r: Rendered, spec: WsSpec) -> None:
    deps = "\n".join(f'{n} = {{ path = "../{n}" }}' for n in spec.lib_names())
    if spec.ext:
        deps += '\nkd_ext = { path = "../../ext/kd_ext" }'
    if spec.app_test:
        r.add("kd_app/tests/bin.rs", """\
#[test]
fn bin_exe() {
    // Where the binary is, relative to this checkout (cargo runs tests in kd_app/).
    let exe = std::path::PathBuf::from(env!("CARGO_BIN_EXE_kd_app"));
    let here = std::env::current_dir().unwrap();
    let checkout = here.parent().unwrap().parent().unwrap();
    println!("CARGO_BIN_EXE_kd_app in this checkout: {}", exe.starts_with(checkout));
    let out = std::process::Command::new(&exe).output().unwrap();
    println!("kd_app exited with {:?}, last line {:?}", out.status.code(),
             String::from_utf8_lossy(&out.stdout).lines().last());
}
""")
        # The same through concat!, in a test crate of its own (a crate that also names the
        # variable directly would show a source scan the name).
        r.add("kd_app/tests/bin_concat.rs", """\
#[test]
fn bin_exe_through_concat() {
    let exe = std::path::PathBuf::from(env!(concat!("CARGO_BIN_EXE_", "kd_app")));
    let here = std::env::current_dir().unwrap();
    let checkout = here.parent().unwrap().parent().unwrap();
    println!("CARGO_BIN_EXE_kd_app through concat! in this checkout: {}", exe.starts_with(checkout));
}
""")
    r.add("kd_app/Cargo.toml", _package("kd_app") + "\n[[bin]]\nname = \"kd_app\"\ntest = false\n\n"
          "[dependencies]\n" + deps + "\n\n[lints]\nworkspace = true\n")
    prints = "\n".join(f'    println!("{{}}", {n}::describe());' for n in spec.lib_names()
                       + (["kd_ext"] if spec.ext else []))
    total = " + ".join([f"{n}::value()" for n in spec.lib_names()] + (["kd_ext::V as u64"] if spec.ext else []))
    r.add("kd_app/src/main.rs", f"""\
fn main() {{
{prints}
    let total: u64 = {total};
    println!("total={{}}", total);
    std::process::exit((total % 3) as i32);
}}
""")
