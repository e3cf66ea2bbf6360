"""Differential testing: kache against plain cargo on generated workspaces and sequences
of operations (tests/differential/harness.py says what is compared and how).

The bounded run here is what CI affords (about two minutes on 2 cores); the long run is
``benchmarks/differential.py``. Both read ``KACHE_DIFF_*`` variables (see
strategies.py): ``KACHE_DIFF_KACHE=/work/base/.venv/bin/kache pytest
tests/differential`` runs the same machine against another kache, and
``KACHE_DIFF_EXAMPLES`` / ``KACHE_DIFF_STEPS`` make it longer.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.differential.harness import Divergence, Harness, Options
from tests.differential.ops import Command, Nothing, SetV, Step
from tests.differential.strategies import make_property, options_from_env
from tests.differential.workspace import BuildSpec, LibSpec, WsSpec

# The autouse clean_env fixture removes every KACHE_* variable before a test runs: take
# ours now, at import.
_ENV = {k: v for k, v in os.environ.items() if k.startswith("KACHE_DIFF_")}

pytestmark = pytest.mark.e2e


@pytest.mark.timeout(1800)
def test_kache_builds_like_plain_cargo(tmp_path: Path) -> None:
    """Hypothesis generates workspaces and sequences of operations; at every step the
    build through kache behaves as plain cargo's (stdout, exit codes, diagnostics,
    lints, tests). A failure's message is the minimal sequence, both outputs and a shell
    script that reproduces it."""
    env = {"KACHE_DIFF_SHRINK_SECONDS": "180", **_ENV}
    opts = options_from_env(tmp_path / "runs", env, repro_dir=tmp_path / "repro")
    seed = env.get("KACHE_DIFF_SEED")
    prop = make_property(opts, examples=int(env.get("KACHE_DIFF_EXAMPLES", "14")),
                         max_steps=int(env.get("KACHE_DIFF_STEPS", "6")),
                         seed_value=int(seed) if seed else None,
                         max_libs=int(env.get("KACHE_DIFF_MAX_LIBS", "3")))
    try:
        prop()
    finally:
        c = opts.counters
        print(f"sequences tried: {c.sequences} · steps: {c.steps} · builds: {c.builds} · "
              f"oracle notes: {c.notes}")
        for note in opts.notes:
            print(f"oracle note: {note}")


# A RUSTC_WRAPPER with a broken key, for the harness's self-test: it caches each
# library compile of the workspace under its command line alone, ignoring the sources.
STALE_WRAPPER = '''\
import hashlib, os, shutil, subprocess, sys

rustc, args = sys.argv[1], sys.argv[2:]
def value(flag):
    return args[args.index(flag) + 1] if flag in args else None
crate = value("--crate-name") or ""
if crate.startswith("kd_lib") and value("--crate-type") == "lib":
    out_dir = value("--out-dir")
    extra = next(a.split("=", 1)[1] for a in args if a.startswith("extra-filename="))
    names = [f"lib{crate}{extra}.rlib", f"lib{crate}{extra}.rmeta", f"{crate}{extra}.d"]
    key = hashlib.sha256("\\0".join(args).encode()).hexdigest()
    cache = os.path.join(os.environ["KACHE_CACHE_DIR"], "stale", key)
    if os.path.isdir(cache):
        for n in names:
            shutil.copy2(os.path.join(cache, n), os.path.join(out_dir, n))
        sys.exit(0)
    rc = subprocess.call([rustc, *args], close_fds=False)  # keep cargo's jobserver
    if rc == 0:
        os.makedirs(cache)
        for n in names:
            shutil.copy2(os.path.join(out_dir, n), os.path.join(cache, n))
    sys.exit(rc)
os.execvp(rustc, [rustc, *args])
'''


def test_the_harness_catches_a_wrapper_that_serves_stale_libraries(tmp_path: Path, kache_exe: str) -> None:
    """After a same-size edit of V the broken wrapper above serves the first compile: the
    harness reports it with the differing line, and its reproduction script reproduces
    it (exit 1) with that wrapper and not (exit 0) with kache."""
    wrapper = tmp_path / "stale-wrapper"
    wrapper.write_text(f"#!{sys.executable}\n" + STALE_WRAPPER)
    wrapper.chmod(0o755)
    opts = Options(kache=str(wrapper), workdir=tmp_path / "runs", repro_dir=tmp_path / "repro")
    spec = WsSpec(libs=(LibSpec(),))
    with Harness(opts) as h, pytest.raises(Divergence) as caught:
        h.start(spec)
        h.step(Step(Nothing(), Command("build")))
        h.step(Step(SetV(0, 18, same_size=True), Command("build")))
    d = caught.value.saved(tmp_path / "repro")
    assert d.signature.startswith("stdout[") and "kd_lib0:V" in d.signature, d.report
    assert d.signature.endswith("] after change"), d.report
    assert "-kd_lib0: V=18 value=18" in d.report and "+kd_lib0: V=17 value=17" in d.report, d.report
    assert d.script_path is not None
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "RUSTUP_HOME": os.environ.get("RUSTUP_HOME", "")}
    stale = subprocess.run(["bash", d.script_path], env={**env, "KACHE": str(wrapper)}, capture_output=True,
                           text=True, timeout=300)
    assert stale.returncode == 1 and "DIVERGENCE reproduced" in stale.stdout, stale.stdout + stale.stderr
    fine = subprocess.run(["bash", d.script_path], env={**env, "KACHE": kache_exe}, capture_output=True,
                          text=True, timeout=300)
    assert fine.returncode == 0 and "no divergence" in fine.stdout, fine.stdout + fine.stderr


def test_every_facet_builds_and_prints_its_line(tmp_path: Path) -> None:
    """The generator's largest workspace builds with plain cargo, its tests run, clippy
    sees the lint slot, and kd_app prints a line for every facet (a facet without its
    line could not show a stale artifact)."""
    lib0 = LibSpec(feature=True, cfg=True, env=True, env_paths=True, manifest_dir=True, file_paths=True,
                   include=True, symlink=True, build=BuildSpec(gen="out_dir", c="attr"), proc_macro=True,
                   lint="clippy", tests=True)
    lib1 = LibSpec(deps=(0,), macro_env=True, build=BuildSpec(gen="rustc_env", c="verbatim"), lint="rustc")
    lib2 = LibSpec(build=BuildSpec(gen=None, c="directive"))
    opts = Options(kache="/nonexistent/kache", workdir=tmp_path / "runs")
    with Harness(opts) as h:
        h.start(WsSpec(libs=(lib0, lib1, lib2), ext=True, app_test=True))
        build = h.run_side("plain", Command("build"), "build")
        assert build.rc == 0 and build.app_out is not None, build.err
        for label in ("feature extra=", "cfg kd_x=", "env KD_VAL=", "env_paths HOME=", "manifest_dir ",
                      "file_paths file=", "include text=", "symlink linked=a:shared0", 'gen GEN="1|"',
                      "c kd_c=40", "proc_macro scaled=21", "macro_env here=", "c kd_c=41", "c kd_c=42",
                      "kd_ext: V=5"):
            assert label in build.app_out, (label, build.app_out)
        # kd_ext's warning names its file as rustc does: by its absolute path, outside the workspace
        diagnostics = build.aspects("build", [])["diagnostics"]
        assert (f"kd_ext: warning [dead_code] function `kd_ext_unused` is never used @ "
                f"{h.slot_dir()}/ext/kd_ext/src/lib.rs:3") in diagnostics, diagnostics
        h.touch(h.slot_dir() / "ws/kd_lib0/src/lib.rs")
        test = h.run_side("plain", Command("test"), "test")
        # value_is_odd fails for this state (the outcome of tests depends on the values)
        assert test.rc == 101 and "test value_is_odd ... FAILED" in test.out, test.out
        assert "test describe_it ... kd_lib0: V=17" in test.out, test.out
        assert "CARGO_BIN_EXE_kd_app in this checkout: true" in test.out, test.out
        assert "through concat! in this checkout: true" in test.out, test.out
        clippy = h.run_side("plain", Command("clippy"), "clippy")
        assert "clippy::needless_return" in clippy.out
        assert '"code":"dead_code"' in clippy.out
