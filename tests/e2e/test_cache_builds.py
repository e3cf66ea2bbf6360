"""The cache on real cargo builds of tests/fixtures/ws (lib + build script + include!,
env!, proc-macro, bin, tests), counting the real rustc runs."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

from kache.store.store import Store
from tests.support.env import kache_log
from tests.support.faults import INJECT
from tests.support.workspace import CACHEABLE_CRATES, Workspace, outcomes

pytestmark = pytest.mark.e2e

EXPECTED_APP = "hello 42 12 / hello 42 12\nLOUD\nfrom-build-script\n"


def cold_then_warm(ws: Workspace) -> None:
    ws.build()
    assert ws.take_rustc_runs()  # compiled for real
    cold = outcomes(ws.take_events())
    assert {c: cold[c] for c in CACHEABLE_CRATES} == {c: "miss" for c in CACHEABLE_CRATES}
    assert cold["kc_app"] == "passthrough"
    ws.clean()


def test_clean_rebuild_is_served_from_the_cache(workspace: Workspace) -> None:
    ws = workspace
    cold_then_warm(ws)
    out = ws.build()
    warm = outcomes(ws.take_events())
    assert {c: warm[c] for c in CACHEABLE_CRATES} == {c: "local_hit" for c in CACHEABLE_CRATES}
    # rustc ran only for the bin (an executable: passed through by default).
    assert ws.take_rustc_runs() == ["kc_app"]
    assert ws.app() == EXPECTED_APP
    # The replayed warning of kc-util reaches the user as on the cold build.
    assert "unused variable: `x`" in out.stderr

    # A third build compiles nothing and never calls the wrapper.
    out = ws.build("-v")
    assert "Compiling" not in out.stderr and "Dirty" not in out.stderr
    assert ws.take_events() == [] and ws.take_rustc_runs() == []


def test_touching_mtimes_recompiles_nothing_for_real(workspace: Workspace) -> None:
    ws = workspace
    ws.build()
    ws.take_events(), ws.take_rustc_runs()
    for src in ws.path.rglob("*.rs"):
        os.utime(src)
    ws.build()
    assert set(outcomes(ws.take_events()).values()) <= {"local_hit", "passthrough"}
    assert ws.take_rustc_runs() in ([], ["kc_app"], ["build_script_build", "kc_app"][1:])
    assert ws.app() == EXPECTED_APP
    out = ws.build("-v")
    assert "Compiling" not in out.stderr


def test_editing_a_source_recompiles_that_crate_and_its_dependents(workspace: Workspace) -> None:
    ws = workspace
    ws.build()
    ws.take_events(), ws.take_rustc_runs()
    shapes = ws.path / "core" / "src" / "shapes.rs"
    shapes.write_text(shapes.read_text().replace("w * h", "w * h + 1"))
    ws.build()
    evs = outcomes(ws.take_events())
    assert evs == {"kc_core": "miss", "kc_util": "miss", "kc_app": "passthrough"}
    assert sorted(ws.take_rustc_runs()) == ["kc_app", "kc_core", "kc_util"]
    assert ws.app() == EXPECTED_APP.replace("12", "13")
    # Undoing the edit goes back to the first entries: hits.
    shapes.write_text(shapes.read_text().replace("w * h + 1", "w * h"))
    ws.build()
    evs = outcomes(ws.take_events())
    assert evs["kc_core"] == "local_hit" and evs["kc_util"] == "local_hit"
    assert ws.app() == EXPECTED_APP


def test_swapping_two_module_files_is_a_miss(workspace: Workspace) -> None:
    ws = workspace
    src = ws.path / "core" / "src"
    (src / "other.rs").write_text("pub fn area(w: u32, h: u32) -> u32 { w + h }\n")
    (src / "lib.rs").write_text((src / "lib.rs").read_text().replace("pub mod shapes;", "pub mod shapes;\npub mod other;"))
    ws.build()
    ws.take_events()
    a, b = (src / "shapes.rs").read_text(), (src / "other.rs").read_text()
    (src / "shapes.rs").write_text(b)
    (src / "other.rs").write_text(a)
    ws.build()
    assert outcomes(ws.take_events())["kc_core"] == "miss"
    assert ws.app() == EXPECTED_APP.replace("12", "7")


@pytest.mark.parametrize(
    ("change", "crates"),
    [
        ("feature", {"kc_core"}),
        ("rustflags", {"kc_core", "kc_util", "kc_macros", "build_script_build"}),
        ("env", {"kc_core"}),
        ("release", {"kc_core", "kc_util", "kc_macros", "build_script_build"}),
        ("check", {"kc_core", "kc_util", "kc_app"}),  # build scripts are shared with build
    ],
)
def test_changed_inputs_are_misses(workspace: Workspace, change: str, crates: set[str]) -> None:
    ws = workspace
    ws.build()
    ws.take_events()
    args: list[str] = []
    env: dict[str, str] = {}
    if change == "feature":
        args = ["-p", "kc-core", "--features", "extra"]
    elif change == "rustflags":
        env = {"RUSTFLAGS": "-C opt-level=1"}
    elif change == "env":
        env = {"KC_GREETING": "howdy"}
    elif change == "release":
        args = ["--release"]
    cmd = "check" if change == "check" else "build"
    ws.cargo(cmd, *args, **env)
    evs = outcomes(ws.take_events())
    missed = {c for c, o in evs.items() if o == "miss"}
    assert crates <= missed, evs
    assert not {c for c, o in evs.items() if o == "local_hit"} & crates
    if change == "env":
        assert subprocess.run([ws.target / "debug" / "kc-app"], capture_output=True, text=True).stdout.startswith("howdy")
        # and back: the first entry is still there
        ws.build()
        assert outcomes(ws.take_events())["kc_core"] == "local_hit"
        assert ws.app() == EXPECTED_APP


def test_relocated_checkout_with_other_home_hits_and_names_its_own_paths(
        workspace: Workspace, tmp_path: Path) -> None:
    ws = workspace
    ws.build()
    ws.take_events()
    other = tmp_path / "elsewhere" / "deeper" / "copy"
    shutil.copytree(ws.path, other, ignore=shutil.ignore_patterns("target"))
    home = tmp_path / "other-home"
    (home / ".cargo").mkdir(parents=True)
    ws2 = Workspace(other, ws.store, ws.kache, ws.rustc_log, dict(ws.env))
    ws2._rustc_seen = len(ws.rustc_log.read_text().splitlines())  # type: ignore[attr-defined]
    ws2._seen = len(ws.events())  # type: ignore[attr-defined]
    ws2.build(HOME=str(home), CARGO_HOME=str(home / ".cargo"))
    evs = outcomes(ws2.take_events())
    assert {c: evs[c] for c in CACHEABLE_CRATES} == {c: "local_hit" for c in CACHEABLE_CRATES}
    assert ws2.take_rustc_runs() == ["kc_app"]
    assert ws2.app() == EXPECTED_APP
    dfiles = list((other / "target" / "debug" / "deps").glob("kc_core-*.d"))
    assert dfiles
    text = dfiles[0].read_text()
    assert str(other) in text and str(ws.path) not in text
    out = ws2.cargo("build", "-v", HOME=str(home), CARGO_HOME=str(home / ".cargo"))
    assert "Compiling" not in out.stderr


def test_cached_binary_is_byte_identical_to_an_uncached_build(workspace: Workspace, tmp_path: Path) -> None:
    ws = workspace
    ws.env["KACHE_CACHE_EXECUTABLES"] = "1"
    ws.build()
    first = (ws.target / "debug" / "kc-app").read_bytes()
    assert outcomes(ws.take_events())["kc_app"] == "miss"
    ws.clean()
    ws.build()
    assert outcomes(ws.take_events())["kc_app"] == "local_hit"
    assert (ws.target / "debug" / "kc-app").read_bytes() == first
    assert ws.app() == EXPECTED_APP
    # A forced recompile of everything (nothing served from the cache) gives the same bytes.
    ws.clean()
    ws.build(KACHE_RECACHE="1")
    assert set(outcomes(ws.take_events()).values()) <= {"miss", "dup"}
    assert (ws.target / "debug" / "kc-app").read_bytes() == first


def test_tests_build_and_pass_through_the_cache(workspace: Workspace) -> None:
    ws = workspace
    out = ws.cargo("test")
    assert "test result: ok" in out.stdout
    ws.clean()
    out = ws.cargo("test")
    assert "test result: ok" in out.stdout


def test_two_builds_at_once_share_one_store(workspace: Workspace, tmp_path: Path) -> None:
    ws = workspace
    results: dict[str, subprocess.CompletedProcess[str]] = {}

    def build(name: str) -> None:
        results[name] = ws.cargo("build", check=False, CARGO_TARGET_DIR=str(tmp_path / f"target-{name}"))

    threads = [threading.Thread(target=build, args=(n,)) for n in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for name, out in results.items():
        assert out.returncode == 0, out.stderr
        exe = tmp_path / f"target-{name}" / "debug" / "kc-app"
        assert subprocess.run([exe], capture_output=True, text=True).stdout == EXPECTED_APP
    store = Store(str(ws.store))
    # Nothing damaged or dangling. Blobs no entry uses are not damage (gc removes them):
    # once in ~20 CI runs under load, a crate was compiled by both builds and recorded
    # twice under one key, the second entry replacing the first and leaving its 3 blobs
    # to gc (the window that made it is closed: see the test after this one).
    assert [p for p in store.check(verify_hashes=True) if "orphan" not in p] == []
    assert store.totals()["entries"] == len(CACHEABLE_CRATES)


def test_unwritable_store_still_builds(workspace: Workspace) -> None:
    ws = workspace
    ws.build()
    ws.clean()
    if os.geteuid() == 0:
        # root ignores permissions: make the store unusable another way (a file in its place)
        shutil.rmtree(ws.store)
        ws.store.write_text("not a directory")
    else:
        for p in [ws.store, *ws.store.rglob("*")]:
            p.chmod(0o555 if p.is_dir() else 0o444)
    try:
        out = ws.build()
    finally:
        if ws.store.is_dir():
            for p in [ws.store, *ws.store.rglob("*")]:
                p.chmod(0o755 if p.is_dir() else 0o644)
    assert ws.app() == EXPECTED_APP
    assert "kache:" not in out.stderr
    assert (kache_log(ws.store) + kache_log()).count("kache: warning:") <= 1


def test_corrupted_index_still_builds(workspace: Workspace) -> None:
    ws = workspace
    ws.build()
    ws.clean()
    db = ws.store / "index.db"
    for suffix in ("-wal", "-shm"):
        Path(str(db) + suffix).unlink(missing_ok=True)
    db.write_bytes(b"this is not an sqlite database" * 100)
    out = ws.build()
    assert ws.app() == EXPECTED_APP
    assert "kache:" not in out.stderr
    assert kache_log(ws.store).count("kache: warning:") <= 1


def test_exception_inside_kache_still_builds(workspace: Workspace, tmp_path: Path) -> None:
    ws = workspace
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(
        "import kache.engine.call as c\n"
        "def boom(*a, **k):\n"
        "    raise RuntimeError('injected fault')\n"
        "c.prepare = boom\n"
    )
    out = ws.build(PYTHONPATH=str(hook))
    assert ws.app() == EXPECTED_APP
    assert "kache:" not in out.stderr  # said to the terminal and the log, never where cargo keeps it
    log = kache_log(ws.store)
    assert "kache: warning: internal error (RuntimeError: injected fault); running rustc directly" in log
    assert log.count("injected fault") == 1
    # every unit was compiled by the real rustc
    assert {"kc_core", "kc_util", "kc_macros", "build_script_build", "kc_app"} <= set(ws.take_rustc_runs())


def test_declared_extra_inputs_are_part_of_the_key(workspace: Workspace, tmp_path: Path) -> None:
    ws = workspace
    config = tmp_path / "kache.toml"
    config.write_text('[cache.extra_inputs.kc-macros]\nenv = ["KC_MACRO_MODE"]\nfiles = ["core/answer.txt"]\n')
    ws.env["KACHE_CONFIG"] = str(config)
    ws.build(KC_MACRO_MODE="a")
    ws.take_events()
    ws.clean()
    ws.build(KC_MACRO_MODE="b")  # undeclared to rustc, declared to kache: a miss
    evs = outcomes(ws.take_events())
    assert evs["kc_macros"] in ("miss", "dup") and evs["kc_util"] == "local_hit"  # dup: same bytes
    ws.clean()
    ws.build(KC_MACRO_MODE="a")
    assert outcomes(ws.take_events())["kc_macros"] == "local_hit"
    (ws.path / "core" / "answer.txt").write_text("42\n\n")  # a declared file changed
    ws.clean()
    ws.build(KC_MACRO_MODE="a")
    assert outcomes(ws.take_events())["kc_macros"] in ("miss", "dup")


def test_an_over_full_store_is_collected_without_a_daemon(workspace: Workspace) -> None:
    import json
    import time

    ws = workspace
    ws.build(KACHE_MAX_SIZE="1MB")  # the proc-macro alone is larger: over the limit at once
    report_file = ws.store / "tmp" / "gc-last.json"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not report_file.exists():
        time.sleep(0.2)  # the wrapper started `kache gc` in the background
    report = json.loads(report_file.read_text())
    # Everything was used seconds ago: pinned (a build may be restoring it), not evicted.
    assert report["before_bytes"] > 1_000_000 and report["pinned"] >= 1


def test_a_build_running_during_gc_succeeds(workspace: Workspace) -> None:
    ws = workspace
    ws.build()
    ws.clean()
    stop = threading.Event()
    runs = []

    def collect() -> None:
        while not stop.is_set():
            out = subprocess.run([ws.kache, "gc", "--max-age", "1s"], capture_output=True, text=True,
                                 env={**os.environ, "KACHE_CACHE_DIR": str(ws.store), "KACHE_MAX_SIZE": "1"})
            runs.append(out.returncode)

    t = threading.Thread(target=collect)
    t.start()
    try:
        ws.build()
    finally:
        stop.set()
        t.join()
    assert runs and set(runs) == {0}
    assert ws.app() == EXPECTED_APP
    assert Store(str(ws.store)).check(verify_hashes=True) == []


@pytest.mark.parametrize("mode", ["keep", "drop", "auto"])
def test_incremental_is_kept_or_dropped_as_configured(workspace: Workspace, mode: str) -> None:
    ws = workspace

    def sessions() -> set[str]:
        return {p.name.split("-")[0] for p in (ws.target / "debug" / "incremental").glob("*-*")}

    ws.build(KACHE_INCREMENTAL=mode)
    if mode in ("keep", "auto"):
        assert {"kc_core", "kc_util"} <= sessions()  # rustc ran incrementally, as cargo asked
    else:
        assert not {"kc_core", "kc_util"} & sessions()  # kache compiled without
    # In every mode the outputs were cached: a clean rebuild is served from the store.
    ws.take_events()
    ws.clean()
    ws.build(KACHE_INCREMENTAL=mode)
    evs = outcomes(ws.take_events())
    assert evs["kc_core"] == "local_hit" and evs["kc_util"] == "local_hit"


def test_build_scripts_and_proc_macros_are_linked_not_copied(workspace: Workspace) -> None:
    """Executables kache caches (build scripts, proc-macro libraries) are ingested by
    hardlink as 0755 blobs, and a restore links them back: no copy either way."""
    ws = workspace
    ws.build()
    deps = ws.target / "debug" / "deps"
    macro = next(deps.glob("libkc_macros-*.so"))
    script = next(p for p in (ws.target / "debug" / "build").glob("kc-core-*/build_script_build-*")
                  if p.suffix != ".d")
    for out in (macro, script):
        st = out.stat()
        assert st.st_nlink >= 2, f"{out.name} was copied into the store, not linked"
        assert st.st_mode & 0o777 == 0o755
    ws.clean()
    ws.take_events()
    ws.build()
    assert outcomes(ws.take_events())["kc_macros"] == "local_hit"
    for out in (macro, script):
        st = out.stat()
        assert st.st_nlink >= 2 and st.st_mode & 0o111 == 0o111  # + cargo's own uplifted link
    ws.verify_app()


CAPTURE = """#!/bin/sh
case " $* " in *" --crate-name kc_util "*) printf '%s\\n' "$@" > "$CAPTURE_TO"; printf '%s' "$PWD" > "$CAPTURE_TO.cwd";; esac
exec "$@"
"""


def test_a_twin_recorded_between_the_look_up_and_the_lock_is_a_hit(workspace: Workspace, tmp_path: Path) -> None:
    """Was: after taking the key's lock, the wrapper looked again only when it had waited
    for it. A call whose look-up missed just before a twin compile recorded, and whose
    lock was free again when it came to it, compiled a second time and re-recorded the
    key, leaving the first entry's blobs to gc (test_two_builds_at_once_share_one_store
    saw it once under load). Call A sleeps before recording, call B before its lock."""
    ws = workspace
    capture, to = tmp_path / "capture.sh", tmp_path / "call.txt"
    capture.write_text(CAPTURE)
    capture.chmod(0o755)
    ws.cargo("build", RUSTC_WRAPPER=str(capture), CAPTURE_TO=str(to))  # kache not involved
    argv, cwd = to.read_text().splitlines(), (tmp_path / "call.txt.cwd").read_text()
    ws.take_rustc_runs()
    env = {**os.environ, **ws.env, "PYTHONPATH": str(INJECT)}
    a = subprocess.Popen([ws.kache, *argv], cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         env={**env, "KACHE_TEST_FAULTS": "slow:before:kache.engine.record:record"})
    time.sleep(0.3)
    b = subprocess.Popen([ws.kache, *argv], cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         env={**env, "KACHE_TEST_FAULTS": "slow:before:kache.engine.record:KeyLock.acquire",
                              "KACHE_TEST_SLOW_SECS": "5"})
    assert a.wait(60) == 0 and b.wait(60) == 0
    assert [e["outcome"] for e in ws.take_events() if e["crate"] == "kc_util"] == ["miss", "local_hit"]
    assert ws.take_rustc_runs() == ["kc_util"]  # compiled once
