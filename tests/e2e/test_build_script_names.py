"""Build scripts are named after their package: a real cargo build through kache
records the package (cargo's CARGO_PKG_NAME) with the entry and the events, and
``kache list`` / ``why-miss`` show and take ``kc-core (build script)``."""

from __future__ import annotations

import json

import pytest

from tests.support.workspace import Workspace, kache

pytestmark = pytest.mark.e2e


def test_a_build_script_is_shown_by_its_package(workspace: Workspace) -> None:
    workspace.build()
    scripts = [ev for ev in workspace.take_events() if ev["crate"] == "build_script_build"]
    assert [(ev["outcome"], ev.get("package")) for ev in scripts] == [("miss", "kc-core")]
    workspace.clean()
    workspace.build()
    scripts = [ev for ev in workspace.take_events() if ev["crate"] == "build_script_build"]
    assert [(ev["outcome"], ev.get("package")) for ev in scripts] == [("local_hit", "kc-core")]

    listed = kache(workspace, "list")
    assert listed.returncode == 0
    names = [line.split("  ")[0] for line in listed.stdout.splitlines()[1:-1]]
    assert "kc-core (build script)" in names and "build_script_build" not in names
    detail = kache(workspace, "list", "kc-core (build script)", "--json")
    [entry] = json.loads(detail.stdout)
    assert (entry["crate"], entry["package"], entry["crate_types"]) == ("build_script_build", "kc-core", ["bin"])
    why = kache(workspace, "why-miss", "kc-core (build script)", "--json")
    report = json.loads(why.stdout)
    assert (report["crate"], report["entries"]) == ("kc-core (build script)", 1)
    assert report["last_event"]["outcome"] == "local_hit"
    assert report["notes"][-1] == "kc-core (build script) has only one entry: there is nothing to compare it with"


def test_a_hit_the_daemon_serves_names_the_package_too(daemon_ws: Workspace) -> None:
    daemon_ws.take_events()
    daemon_ws.clean()
    daemon_ws.build()
    scripts = [ev for ev in daemon_ws.take_events() if ev["crate"] == "build_script_build"]
    assert [(ev["outcome"], ev.get("via"), ev.get("package")) for ev in scripts] == [
        ("local_hit", "daemon", "kc-core")]
