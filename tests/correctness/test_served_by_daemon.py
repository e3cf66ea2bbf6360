"""The stale-artifact hazards (cases 1, 2, 3, 4, 5, 6, 7 and 14) with hits served by a
running daemon (`kache daemon start`; events say "via": "daemon") and through the
native client (`kache daemon client`, the wrapper, with the daemon running).

One workspace carries all the hazards at once, to keep the cost down; each hazard is
checked against plain cargo and every one that goes wrong is reported together.
test_stale_artifacts.py has one test per hazard through the wrapper alone."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.project import (
    BIN_EXE_TEST,
    CLIPPY_ORACLE,
    Project,
    Serving,
    clippy_sequence,
    make_project,
    plain_cargo,
    printed,
    real_rustc,
    run_exe,
    workspace_files,
    write_files,
)

pytestmark = pytest.mark.e2e

HAZARDS = ["envlib", "ffi_link", "ffi_verbatim", "lint", "words", "linky", "mid"]


def _via_daemon(events: list[dict], crates: set[str]) -> dict[str, str]:
    """crate → how the last event served it (``local_hit via daemon``, ``miss``…)."""
    return {e["crate"]: f"{e['outcome']} via {e.get('via', 'wrapper')}"
            for e in events if e["crate"] in crates}


@pytest.mark.parametrize("serving", ["daemon", "native"], indirect=True)
def test_stale_artifact_hazards_with_hits_served_by_the_daemon(serving: Serving, tmp_path: Path,
                                                               kache_exe: str) -> None:
    """Checkout a is built (and its tests), then a copy b at another path with another
    HOME and CARGO_HOME, over the same store, target dirs outside both checkouts; with
    cache.extra_inputs for data/words.txt and test harnesses cached.

    In b: case 14 (gen, mid and the build scripts are local hits served by the daemon),
    case 1 (envlib prints b's path; the integration test sees b's CARGO_BIN_EXE_app).
    Then b's foo.c and bar.c (cases 2, 3), shared/data.txt (case 7) and data/words.txt
    (case 6) change, cargo clean, rebuild: the app prints what plain cargo's prints.
    Then case 5's clippy runs, and case 4 in a small checkout c whose RUSTC script
    changes its --cfg."""
    config = tmp_path / "kache.toml"
    config.write_text('[cache.extra_inputs.words]\nfiles = ["data/words.txt"]\n')
    files, links = workspace_files(HAZARDS, app_files={"app/tests/it.rs": BIN_EXE_TEST})
    write_files(tmp_path / "a" / "ws", files, links)
    env = {**serving.env(), "KACHE_CONFIG": str(config), "KACHE_CACHE_EXECUTABLES": "1",
           "CARGO_TARGET_DIR": str(tmp_path / "a-target"), "RUST_BACKTRACE": "0"}
    a = Project(tmp_path / "a" / "ws", serving.store, kache_exe, tmp_path / "rustc.log", env)
    a.build()
    a.cargo("test", "--no-run")
    home = tmp_path / "home-b"
    (home / ".cargo").mkdir(parents=True)
    b = a.copy_to(tmp_path / "b" / "ws", HOME=str(home), CARGO_HOME=str(home / ".cargo"),
                  CARGO_TARGET_DIR=str(tmp_path / "b-target"))
    problems: list[str] = []

    b.build()
    evs = b.take_events()
    # Nothing in kache's fixes may change this: these are plain hits the daemon serves.
    assert _via_daemon(evs, {"mac", "lint"}) == dict.fromkeys(["mac", "lint"], "local_hit via daemon"), evs
    generated = [f"{e['crate']}: {e['outcome']} via {e.get('via', 'wrapper')}" for e in evs
                 if e["crate"] in ("gen", "mid", "build_script_build")]
    if not generated or any(not g.endswith(": local_hit via daemon") for g in generated):
        problems.append(f"case 14: gen, mid and the build scripts are not all served by the daemon: "
                        f"{generated}")
    got = b.printed()
    if got["envlib"] != str(b.path / "envlib"):
        problems.append(f"case 1: b's app prints envlib={got['envlib']}")
    if got["mid"] != "43":
        problems.append(f"case 14: b's app prints mid={got['mid']}")
    test = b.cargo("test", "-q", check=False)
    if test.returncode != 0:
        problems.append("case 1: b's integration test sees another CARGO_BIN_EXE_app:\n"
                        + "\n".join(line for line in test.stdout.splitlines() if "CARGO_BIN_EXE" in line))

    (b.path / "ffi_link" / "foo.c").write_text("int foo_value(void) { return 2; }\n")
    (b.path / "ffi_verbatim" / "bar.c").write_text("int bar_value(void) { return 2; }\n")
    (b.path / "shared" / "data.txt").write_text("real-2\n")
    (b.path / "data" / "words.txt").write_text("beta\n")
    b.clean()
    b.build()
    got = b.printed()
    oracle_target = tmp_path / "oracle-target"
    out = plain_cargo(b.path, "build", "-q", target_dir=oracle_target)
    assert out.returncode == 0, out.stderr
    expected = printed(run_exe(oracle_target / "debug" / "app").stdout)
    assert expected == {**expected, "ffi_link": "2", "ffi_verbatim": "2", "linky": "real-2", "words": "beta",
                        "envlib": str(b.path / "envlib"), "mid": "43"}
    for case, name in (("2", "ffi_link"), ("3", "ffi_verbatim"), ("6", "words"), ("7", "linky")):
        if got[name] != expected[name]:
            problems.append(f"case {case}: after the change b's app prints {name}={got[name]}, "
                            f"plain cargo's {expected[name]}")

    seq = clippy_sequence(lambda *args: b.cargo(*args, check=False))
    oracle = clippy_sequence(lambda *args: plain_cargo(b.path, *args, target_dir=tmp_path / "oracle-clippy"))
    assert oracle == CLIPPY_ORACLE
    if seq != oracle:
        problems.append(f"case 5: clippy runs (exit code, lint error shown) {seq}, plain cargo's {oracle}")

    script = tmp_path / "toolchain" / "rustc"
    script.parent.mkdir()
    script.write_text(f'#!/bin/sh\nexec "{real_rustc()}" --cfg myflag "$@"\n')
    script.chmod(0o755)
    c = make_project(tmp_path / "c" / "ws", serving.store, kache_exe, ["flags"],
                     **{**serving.env(), "RUSTC": str(script)})
    c.build()
    c.clean()
    c.build()
    c_evs = c.take_events()
    assert _via_daemon(c_evs, {"flags"}) == {"flags": "local_hit via daemon"}, c_evs
    script.write_text(f'#!/bin/sh\nexec "{real_rustc()}" --cfg otherflag "$@"\n')
    c.clean()
    c.build()
    flag = c.printed()["flags"]
    if flag != "otherflag":
        problems.append(f"case 4: after the RUSTC script changed, c's app prints flags={flag}, not otherflag")
    assert not problems, "\n".join(problems)
