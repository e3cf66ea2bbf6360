"""Settings in real cargo builds: an invalid setting degrades alone and is said once per
build, on the terminal and in kache.log, never where cargo keeps a unit's output;
settings without which caching is unsafe turn it off; KACHE_LOG=kache=debug leaves
each call's decision in kache.log. (No test name here holds the word the output is
searched for: cargo prints the workspace's path, and pytest's tmp dir holds the name.)"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support.env import kache_log
from tests.support.tty import STOPPED, run_in_pty, run_in_pty_background
from tests.support.workspace import CACHEABLE_CRATES, Workspace, outcomes

pytestmark = pytest.mark.e2e

LEVEL_WARNING = ("kache: warning: invalid setting in environment variable KACHE_COMPRESSION_LEVEL: "
                 "cache.compression_level = 99: must be between 1 and 22; using 3 (the default)")


def build_on_a_terminal(ws: Workspace, **env: str) -> str:
    status, out = run_in_pty(["cargo", "build", "--offline"], ws.path, {**os.environ, **ws.env, **env})
    assert status == 0, out
    return out


def said(out: str) -> list[str]:
    return [line.strip() for line in out.splitlines() if "kache:" in line]


def unit_outputs(ws: Workspace) -> str:
    """What cargo stored of every unit's messages (replayed when the unit is fresh)."""
    return "".join(p.read_text(errors="replace") for p in (ws.target / "debug" / ".fingerprint").glob("*/output-*"))


def test_a_build_in_the_terminals_background_is_not_stopped_by_a_warning(workspace: Workspace, user_config: Path,
                                                                         tmp_path: Path) -> None:
    # `cargo build &` under `stty tostop`: the warning written to the terminal stopped
    # the build (SIGTTOU) until it was brought to the foreground. kache.log has it.
    status, out = run_in_pty_background(["cargo", "build", "--offline"], workspace.path,
                                        {**os.environ, **workspace.env, "KACHE_COMPRESSION_LEVEL": "99"},
                                        tmp_path / "cargo.out", timeout=300)
    assert status != STOPPED, "cargo was stopped by the terminal"
    assert status == 0, (tmp_path / "cargo.out").read_text()
    assert said(out) == []
    assert kache_log(workspace.store).count(LEVEL_WARNING) == 1
    workspace.verify_app()


def test_an_invalid_level_still_caches_and_warns_once_per_build(workspace: Workspace, user_config: Path) -> None:
    out = build_on_a_terminal(workspace, KACHE_COMPRESSION_LEVEL="99")
    assert said(out) == [LEVEL_WARNING]
    cold = outcomes(workspace.take_events())
    assert {c: cold[c] for c in CACHEABLE_CRATES} == {c: "miss" for c in CACHEABLE_CRATES}  # recorded
    log = kache_log(workspace.store)
    assert log.count(LEVEL_WARNING) == 1, log
    workspace.verify_app()

    (workspace.path / "app" / "src" / "main.rs").touch()  # one unit to run: a new build
    out = build_on_a_terminal(workspace, KACHE_COMPRESSION_LEVEL="99")
    assert said(out) == [LEVEL_WARNING]
    assert kache_log(workspace.store).count(LEVEL_WARNING) == 2

    out = build_on_a_terminal(workspace, KACHE_COMPRESSION_LEVEL="99")  # nothing to do: nothing said
    assert "kache" not in out, out
    assert "kache" not in unit_outputs(workspace)
    assert kache_log(workspace.store).count(LEVEL_WARNING) == 2


@pytest.mark.parametrize(("env", "toml", "problem"), [
    ({"KACHE_CACHE_DIR": "relative/store"}, "", "cache.local_store = \"relative/store\": expected an absolute path"),
    ({"KACHE_KEY_SALT": "s" * 300}, "", "must be at most 256 characters long"),
    ({}, '[cache.extra_inputs.kc-core]\nfiles = [""]\n', "cache.extra_inputs = "),
])
def test_an_unsafe_setting_turns_caching_off_once(workspace: Workspace, user_config: Path, env: dict[str, str],
                                                  toml: str, problem: str) -> None:
    user_config.write_text(toml)
    out = build_on_a_terminal(workspace, **env)
    lines = said(out)
    assert len(lines) == 1 and lines[0].startswith("kache: warning: caching is off: invalid setting in "), out
    assert problem in lines[0]
    assert lines[0].endswith("; every rustc call runs directly until it is fixed")
    workspace.verify_app()  # rustc ran
    default_store = Path(os.environ["XDG_CACHE_HOME"]) / "kache"
    for store in (workspace.store, default_store):
        assert not (store / "index.db").exists()  # nothing recorded anywhere
        assert not (store / "events.jsonl").exists()
    assert "kache" not in unit_outputs(workspace)


def test_an_invalid_remote_setting_turns_the_remote_off_and_caches_locally(workspace: Workspace,
                                                                          user_config: Path) -> None:
    user_config.write_text('[cache.remote]\nbucket = "team-cache"\nendpoint = "http://127.0.0.1:9"\n')
    out = build_on_a_terminal(workspace, KACHE_REMOTE_READ_ONLY="perhaps")
    assert said(out) == [
        "kache: warning: the remote is off: invalid setting in environment variable KACHE_REMOTE_READ_ONLY: "
        'cache.remote.read_only = "perhaps": expected true or false; local caching goes on']
    cold = outcomes(workspace.take_events())
    assert {c: cold[c] for c in CACHEABLE_CRATES} == {c: "miss" for c in CACHEABLE_CRATES}
    assert not [p for p in (workspace.store / "uploads").rglob("*") if p.is_file()]  # nothing queued
    assert not (workspace.store / "daemon.sock").exists()  # no daemon started for a remote


def test_debug_log_holds_each_call_decision(workspace: Workspace, user_config: Path) -> None:
    workspace.build()
    assert "DEBUG" not in kache_log(workspace.store)  # unset: no decision lines
    workspace.clean()
    workspace.build(KACHE_LOG="kache=debug")
    lines = [line for line in kache_log(workspace.store).splitlines() if " DEBUG kache.wrapper[" in line]
    decided = {line.split("]: ", 1)[1].split(":")[0]: line for line in lines}
    for crate in CACHEABLE_CRATES:
        assert "local_hit key " in decided[crate], lines
        assert decided[crate].endswith(" ms")
    assert "kc_app: passthrough (" in "\n".join(lines)
