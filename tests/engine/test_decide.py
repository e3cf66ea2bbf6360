"""kache.engine.decide: the one decision about a call, for the wrapper and the daemon."""

from __future__ import annotations

from pathlib import Path

import pytest

from kache.engine import argv as A
from kache.engine.decide import decide, drops_incremental, is_disabled
from kache.settings import load


def settings(tmp_path: Path, **env: str):  # noqa: ANN201
    base = {"HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path / "cfg")}
    return load({**base, **env})


def lib_call(*extra: str) -> A.RustcCall:
    return A.parse(["rustc", "--crate-name", "c", "--crate-type", "lib", "--emit=dep-info,metadata,link",
                    "src/lib.rs", "--out-dir", "target/debug/deps", *extra], {})


def bin_call() -> A.RustcCall:
    return A.parse(["rustc", "--crate-name", "app", "--crate-type", "bin", "--emit=dep-info,link", "src/main.rs",
                    "--out-dir", "target/debug/deps"], {})


INCREMENTAL = ("-C", "incremental=target/debug/incremental")


def test_a_plain_library_is_looked_up(tmp_path: Path) -> None:
    plan = decide(lib_call(), settings(tmp_path), {})
    assert (plan.passthrough, plan.clean_incremental, plan.look_up, plan.snapshots) == (None, False, True, False)


def test_disabled_passes_through_before_anything_else(tmp_path: Path) -> None:
    env = {"KACHE_DISABLED": "1"}
    assert is_disabled(env)
    assert decide(lib_call(), settings(tmp_path), env).passthrough == "disabled"
    assert not is_disabled({"KACHE_DISABLED": "0"})


def test_recache_compiles_anew(tmp_path: Path) -> None:
    plan = decide(lib_call(), settings(tmp_path), {"KACHE_RECACHE": "1"})
    assert plan.passthrough is None and not plan.look_up


def test_an_executable_passes_through_unless_executables_are_cached(tmp_path: Path) -> None:
    assert decide(bin_call(), settings(tmp_path), {}).passthrough is not None
    assert decide(bin_call(), settings(tmp_path, KACHE_CACHE_EXECUTABLES="true"), {}).passthrough is None


@pytest.mark.parametrize(("mode", "clean", "cleans", "snapshots"), [
    ("auto", "true", False, True),
    ("keep", "true", False, False),
    ("drop", "true", True, False),
    ("drop", "false", False, False),
])
def test_incremental_modes(tmp_path: Path, mode: str, clean: str, cleans: bool, snapshots: bool) -> None:
    s = settings(tmp_path, KACHE_INCREMENTAL=mode, KACHE_CLEAN_INCREMENTAL=clean)
    assert drops_incremental(s) is cleans
    plan = decide(lib_call(*INCREMENTAL), s, {})
    assert (plan.clean_incremental, plan.snapshots) == (cleans, snapshots)
    # without -C incremental there is nothing to clean or keep
    plan = decide(lib_call(), s, {})
    assert (plan.clean_incremental, plan.snapshots) == (False, False)
