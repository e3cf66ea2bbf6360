"""Hypothesis strategies for workspaces and operations, and the property that runs them.

A sequence: draw a :class:`WsSpec`, build it (both sides), then draw up to ``steps``
steps one at a time (each from the current state, so every operation applies to
something that exists) and run each; the first divergence raises a
:class:`~tests.differential.harness.Divergence` subclass named after its signature.
Drawing lazily means a failing sequence ends at its diverging step. Each test case
costs several cargo builds, so a divergence is minimised by replaying concrete
sequences (minimize.py: big, domain-aware cuts first) rather than by hypothesis's
generic shrinker, which stays available (``KACHE_DIFF_SHRINK=hypothesis``).

Configuration by environment (the bounded CI run and benchmarks/differential.py):

* ``KACHE_DIFF_KACHE``     kache executable (default: the venv's)
* ``KACHE_DIFF_EXAMPLES``  number of sequences
* ``KACHE_DIFF_STEPS``     most steps per sequence
* ``KACHE_DIFF_SEED``      seed (default: derandomized)
* ``KACHE_DIFF_DAEMON``    1: a daemon serves the hits
* ``KACHE_DIFF_BYTES``     1: compare hits' artifacts byte for byte
* ``KACHE_DIFF_SHRINK``     how a divergence is minimised: ``replay`` (default,
  tests/differential/minimize.py), ``hypothesis`` (its own shrinker), ``none``
* ``KACHE_DIFF_SHRINK_SECONDS`` the minimiser's budget per divergence (default 300)
* ``KACHE_DIFF_KEEP``      1: keep run directories
* ``KACHE_DIFF_VERBOSE``   1: progress lines (each sequence and step) on stderr
* ``KACHE_DIFF_MAX_LIBS``  most libraries per workspace
* ``KACHE_DIFF_STRICT_PATHS`` 1: no trim-paths equivalence (observe.py)
* ``KACHE_DIFF_REPRO_DIR`` where reproduction scripts are written
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

from tests.differential.harness import Divergence, Harness, Options, SequenceStopped
from tests.differential.minimize import minimize
from tests.differential.ops import (
    AddModule,
    Clean,
    Command,
    EditC,
    EditExt,
    EditGen,
    EditMacro,
    EditRustcScript,
    EditText,
    KacheSetting,
    Nothing,
    Relocate,
    Repoint,
    Revert,
    SetEnv,
    SetLint,
    SetProfile,
    SetRustc,
    SetRustflags,
    SetTargetDir,
    SetV,
    SetWorkspaceWrapper,
    Step,
    ToggleFeature,
    Touch,
)
from tests.differential.workspace import C_LINKS, LINT_MODES, BuildSpec, LibSpec, Symlink, WsSpec, render

# Values are templates: {ws}, {slot} (the checkout), {home}, {cargo_home} are expanded at
# each build, so a path-valued variable follows the checkout as a user's would.
ENV_VALUES = ("v1", "v2", "{ws}/conf", "{home}/conf", "{cargo_home}/conf", "w1", "a longer value")
ENV = {"KD_VAL": ENV_VALUES, "KD_OPT": (None,) + ENV_VALUES, "KD_MAC": (None,) + ENV_VALUES,
       "KD_GEN": (None,) + ENV_VALUES, "CARGO_INCREMENTAL": (None, "0")}
RUSTFLAGS = (None, "--cfg kd_x", "--cfg kd_y", "--cfg kd_x --cfg kd_y", "-C debug-assertions=off",
             "--remap-path-prefix={ws}=/remapped", "--remap-path-prefix={slot}/ext=EXT")
RUSTC_FLAGS = ("", "--cfg kd_r", "--cfg kd_x")
# Settings of the kache side only (README: configuration by KACHE_* variables).
KACHE_SETTINGS = {"KACHE_INCREMENTAL": (None, "auto", "keep", "drop"), "KACHE_CACHE_EXECUTABLES": (None, "1"),
                  "KACHE_COMPRESSION_LEVEL": (None, "99")}
TEXTS = st.text(alphabet="abxy", max_size=6)


def default_kache(env: Mapping[str, str] = os.environ) -> str:
    exe = env.get("KACHE_DIFF_KACHE")
    if exe:
        return exe
    here = Path(sys.executable).with_name("kache")
    return str(here) if here.exists() else (shutil.which("kache") or "kache")


# Facets are drawn sparsely: one facet can hide another's hazard (a crate that names
# CARGO_MANIFEST_DIR itself is keyed by its path, which hides what a macro's env! does),
# so small combinations are what finds bugs.
SOMETIMES = st.sampled_from((False, False, True))


@st.composite
def lib_specs(draw: st.DrawFn, i: int) -> LibSpec:
    deps = set(draw(st.sets(st.integers(0, i - 1), max_size=2))) if i else set()
    macro_env = bool(i) and draw(SOMETIMES)
    if macro_env:
        deps.add(0)
    build = None
    if draw(SOMETIMES):
        gen = draw(st.sampled_from((None, "out_dir", "rustc_env")))
        c = draw(st.sampled_from((None,) + C_LINKS))
        if gen or c:
            build = BuildSpec(gen=gen, c=c)
    return LibSpec(deps=tuple(sorted(deps)), feature=draw(SOMETIMES), cfg=draw(SOMETIMES), env=draw(SOMETIMES),
                   env_paths=draw(SOMETIMES), manifest_dir=draw(SOMETIMES), file_paths=draw(SOMETIMES),
                   macro_env=macro_env, include=draw(SOMETIMES), symlink=draw(SOMETIMES), build=build,
                   proc_macro=draw(SOMETIMES), lint=draw(st.sampled_from((None, None, None) + LINT_MODES)),
                   tests=draw(SOMETIMES))


@st.composite
def ws_specs(draw: st.DrawFn, max_libs: int = 3) -> WsSpec:
    n = draw(st.integers(1, max_libs))
    libs = tuple(draw(lib_specs(i)) for i in range(n))
    rustc = draw(st.sampled_from((None, None, None, None, "path", "bare")))
    flags = draw(st.sampled_from(RUSTC_FLAGS)) if rustc else ""
    return WsSpec(libs=libs, ext=draw(SOMETIMES), app_test=draw(SOMETIMES), rustc=rustc, rustc_flags=flags)


def _same_size(v: int) -> st.SearchStrategy[int]:
    d = len(str(v))
    lo = 10 ** (d - 1) if d > 1 else 1
    return st.integers(lo, 10 ** d - 1).filter(lambda x: x != v)


@st.composite
def steps(draw: st.DrawFn, h: Harness, clippy_deny: bool = False) -> Step:
    spec, content, env = h.spec, h.content, h.env
    assert spec is not None and content is not None
    libs = range(len(spec.libs))
    with_ = lambda pred: [i for i in libs if pred(spec.libs[i])]  # noqa: E731
    # First the kind of hazard (Op.op_class), then the operation. Hits, where stale
    # artifacts come from, follow "place" operations; "change" operations probe whether
    # kache notices an input changed, most of them edits of what a facet reads.
    # (Hypothesis favours the first of a sampled_from; minimize.py does the shrinking.)
    facet_kinds = [k for k, present in (
        ("edit_text", with_(lambda lib: lib.include or lib.symlink)),
        ("repoint", with_(lambda lib: lib.symlink)),
        ("edit_gen", with_(lambda lib: lib.build is not None and lib.build.gen)),
        ("edit_c", with_(lambda lib: lib.build is not None and lib.build.c)),
        ("edit_macro", spec.has_macros),
        ("edit_ext", spec.ext),
        ("lint", with_(lambda lib: lib.lint is not None))) if present]
    change = ["touch", "same_size", "edit", "add_file"] + (["revert"] if len(h.history) >= 2 else []) \
        + facet_kinds * 3
    place = ["relocate", "relocate", "relocate", "clean", "clean", "target_dir"]
    config = ["env", "env", "rustflags", "profile", "rustc", "rustc_script", "workspace_wrapper", "kache_setting"] \
        + (["feature"] if with_(lambda lib: lib.feature) else [])
    category = draw(st.sampled_from(("place", "change", "config", "change", "place", "nothing")))
    kinds = {"place": place, "change": change, "config": config, "nothing": ["nothing"]}[category]
    kind = draw(st.sampled_from(kinds))
    lib = lambda pred=lambda _: True: draw(st.sampled_from(with_(pred)))  # noqa: E731
    if kind == "nothing":
        op = Nothing()
    elif kind == "clean":
        op = Clean()
    elif kind == "touch":
        files = sorted(p for p, c in render(spec, content).items()
                       if not isinstance(c, Symlink) and not p.startswith("tools/"))
        op = Touch(draw(st.sampled_from(files)))
    elif kind == "same_size":
        i = lib()
        op = SetV(i, draw(_same_size(content.libs[i].v)), True)
    elif kind == "edit":
        i = lib()
        op = SetV(i, draw(st.integers(1, 999).filter(lambda x: x != content.libs[i].v)), False)
    elif kind == "env":
        name = draw(st.sampled_from(sorted(ENV)))
        op = SetEnv(name, draw(st.sampled_from([v for v in ENV[name] if v != env.get(name)])))
    elif kind == "kache_setting":
        name = draw(st.sampled_from(sorted(KACHE_SETTINGS)))
        current = dict(env.kache_vars).get(name)
        op = KacheSetting(name, draw(st.sampled_from([v for v in KACHE_SETTINGS[name] if v != current])))
    elif kind == "rustc_script":
        op = EditRustcScript(draw(st.sampled_from([f for f in RUSTC_FLAGS if f != content.rustc_flags])))
    elif kind == "workspace_wrapper":
        op = SetWorkspaceWrapper(draw(st.sampled_from([m for m in ("bare", "path", None)
                                                       if m != env.workspace_wrapper])))
    elif kind == "target_dir":
        op = SetTargetDir(draw(st.sampled_from([m for m in ("relative", "absolute", None) if m != env.kache_target])))
    elif kind == "edit_ext":
        op = EditExt(draw(st.integers(1, 99).filter(lambda v: v != content.ext_v)))
    elif kind == "relocate":
        op = Relocate(slot=draw(st.integers(0, 2)), home=draw(st.integers(0, 1)), cargo_home=draw(st.integers(0, 1)),
                      mode=draw(st.sampled_from(("clone", "switch", "move", "copy"))))
    elif kind == "add_file":
        op = AddModule(lib(), draw(st.integers(1, 99)))
    elif kind == "rustflags":
        op = SetRustflags(draw(st.sampled_from([f for f in RUSTFLAGS if f != env.rustflags])))
    elif kind == "profile":
        op = SetProfile("release" if env.profile == "dev" else "dev")
    elif kind == "rustc":
        op = SetRustc(draw(st.sampled_from([m for m in ("path", "bare", None) if m != env.rustc])))
    elif kind == "revert":
        op = Revert(draw(st.integers(1, min(3, len(h.history) - 1))))
    elif kind == "edit_text":
        i = lib(lambda x: x.include or x.symlink)
        which = draw(st.sampled_from([w for w, ok in (("text", spec.libs[i].include),
                                                      ("shared", spec.libs[i].symlink),
                                                      ("decoy", spec.libs[i].symlink)) if ok]))
        old = {"text": content.libs[i].text, "shared": content.libs[i].shared_text,
               "decoy": content.libs[i].decoy}[which]
        op = EditText(i, which, draw(TEXTS.filter(lambda t: t != old)))
    elif kind == "repoint":
        i = lib(lambda x: x.symlink)
        op = Repoint(i, "b" if content.libs[i].link == "a" else "a")
    elif kind == "edit_gen":
        i = lib(lambda x: x.build is not None and x.build.gen)
        op = EditGen(i, draw(st.sampled_from(["2", "1", "10", "abc"]).filter(lambda g: g != content.libs[i].gen)))
    elif kind == "edit_c":
        i = lib(lambda x: x.build is not None and bool(x.build.c))
        op = EditC(i, draw(st.integers(1, 99).filter(lambda v: v != content.libs[i].c_val)))
    elif kind == "edit_macro":
        op = EditMacro(draw(st.integers(1, 9).filter(lambda k: k != content.macro_k)))
    elif kind == "lint":
        i = lib(lambda x: x.lint is not None)
        op = SetLint(i, draw(st.sampled_from([m for m in LINT_MODES if m != content.libs[i].lint])))
    elif kind == "feature":
        op = ToggleFeature(lib(lambda x: x.feature))
    else:  # pragma: no cover
        raise AssertionError(kind)
    verb = draw(st.sampled_from(("build", "clippy", "build", "test", "clippy", "check", "build")))
    package, no_deps = None, False
    if verb == "clippy":
        package = draw(st.sampled_from([None] + spec.lib_names() + ["kd_app"]))
        no_deps = draw(st.booleans())
    # A project passes the same arguments to clippy every time (`-- -D warnings` or not).
    return Step(op, Command(verb, package, no_deps, clippy_deny and verb == "clippy"))


def run_sequence(data: st.DataObject, opts: Options, max_steps: int, max_libs: int = 3) -> None:
    """The property: one generated workspace, one generated sequence, no divergence.

    With ``opts.shrink == "replay"``, a divergence is first minimised by
    :func:`tests.differential.minimize.minimize` and the minimal one raised; memoised
    on the sequence, so hypothesis's final replay of the failing example costs one run."""
    spec = data.draw(ws_specs(max_libs), label="workspace")
    clippy_deny = data.draw(st.booleans(), label="clippy -- -D warnings")
    n = max_steps  # a failing sequence ends at its diverging step anyway
    opts.counters.sequences += 1
    if opts.log:
        opts.log(f"sequence {opts.counters.sequences}: {len(spec.libs)} lib(s), up to {n} step(s): "
                 + "; ".join(" ".join(lib.facets()) or "-" for lib in spec.libs))
    done: list[Step] = [Step(Nothing(), Command("build"))]
    try:
        with Harness(opts) as h:
            h.start(spec)
            h.step(done[0])
            for k in range(n):
                done.append(data.draw(steps(h, clippy_deny), label=f"step {k + 1}"))
                h.step(done[-1])
    except SequenceStopped:
        return
    except Divergence as d:
        if opts.shrink != "replay":
            raise d.saved(opts.repro_dir) from None
        key = (spec, tuple(done))
        if key not in opts.minimized:
            opts.minimized[key] = minimize(opts, spec, done, d, opts.shrink_seconds)
        raise opts.minimized[key] from None


def make_property(opts: Options, *, examples: int, max_steps: int, seed_value: int | None = None,
                  max_libs: int = 3) -> Callable[[], None]:
    """A zero-argument callable that runs ``examples`` sequences under hypothesis
    (``opts.shrink`` and ``opts.shrink_seconds`` say how failures are minimised)."""
    use_hypothesis = opts.shrink == "hypothesis" and opts.shrink_seconds > 0
    if use_hypothesis:
        _cap_shrinking(int(opts.shrink_seconds))
    phases = [Phase.explicit, Phase.generate] + ([Phase.shrink] if use_hypothesis else [])

    @settings(max_examples=examples, deadline=None, database=None, derandomize=seed_value is None,
              suppress_health_check=list(HealthCheck), phases=phases, report_multiple_bugs=True,
              print_blob=False)
    @given(data=st.data())
    def differential(data: st.DataObject) -> None:
        run_sequence(data, opts, max_steps, max_libs)

    if seed_value is not None:
        differential = seed(seed_value)(differential)
    return differential


def _cap_shrinking(seconds: int) -> None:
    """Hypothesis gives up shrinking after MAX_SHRINKING_SECONDS (300 s); each of our test
    cases runs several cargo builds, so the cap is the knob that bounds a failing run."""
    try:
        from hypothesis.internal.conjecture import engine
    except ImportError:  # pragma: no cover
        return
    if hasattr(engine, "MAX_SHRINKING_SECONDS") and seconds > 0:
        engine.MAX_SHRINKING_SECONDS = seconds


def options_from_env(workdir: Path, env: Mapping[str, str] = os.environ, **overrides: object) -> Options:
    """Options from KACHE_DIFF_* variables of ``env`` (the tests pass a copy taken at
    import: the autouse clean_env fixture removes every KACHE_* variable)."""
    repro = env.get("KACHE_DIFF_REPRO_DIR")
    opts = Options(kache=default_kache(env), workdir=workdir, daemon=env.get("KACHE_DIFF_DAEMON") == "1",
                   bytes_check=env.get("KACHE_DIFF_BYTES") == "1", incremental=env.get("KACHE_DIFF_INCREMENTAL"),
                   keep=env.get("KACHE_DIFF_KEEP") == "1", repro_dir=Path(repro) if repro else None,
                   shrink=env.get("KACHE_DIFF_SHRINK", "replay"),
                   shrink_seconds=float(env.get("KACHE_DIFF_SHRINK_SECONDS", "300")),
                   strict_paths=env.get("KACHE_DIFF_STRICT_PATHS") == "1",
                   log=(lambda line: print(line, file=sys.stderr, flush=True)) if env.get("KACHE_DIFF_VERBOSE") == "1"
                   else None)
    for k, v in overrides.items():
        setattr(opts, k, v)
    return opts
