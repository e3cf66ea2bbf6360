"""The whole story through the daemon, on real cargo and a local S3 (moto) server:
A's uploads happen in the background; B, with an empty store and a daemon running,
gets remote hits on its first build."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import pytest

from tests.support.daemon import pending_intents
from tests.support.workspace import CACHEABLE_CRATES, Workspace, configure_remote, kache, outcomes

pytestmark = pytest.mark.e2e

REMOTE_HITS = {"remote_hit", "prefetch_hit"}


def daemon_status(ws: Workspace) -> dict:
    out = kache(ws, "daemon", "--json")
    return json.loads(out.stdout) if out.stdout.strip() else {}


def test_uploads_in_the_background_and_remote_hits_elsewhere(
        machines: Callable[[str], Workspace], bucket: str, moto_endpoint: str,
        started: list[Workspace]) -> None:
    a = machines("machine-a")
    configure_remote(a, bucket, moto_endpoint)
    started.append(a)
    t0 = time.monotonic()
    a.build()  # the first miss starts A's daemon; every new entry is queued for upload
    build_s = time.monotonic() - t0
    expected = a.app()
    uploads = a.store / "uploads"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (not uploads.exists() or pending_intents(a.store)):
        time.sleep(0.2)
    assert uploads.exists() and not pending_intents(a.store), daemon_status(a)
    status = daemon_status(a)
    assert status.get("uploads_done", 0) >= len(CACHEABLE_CRATES), status
    assert build_s < 60  # the build never waited for the uploads

    b = machines("machine-b")
    configure_remote(b, bucket, moto_endpoint)
    started.append(b)
    out = kache(b, "daemon", "start")
    assert out.returncode == 0, out.stderr
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not daemon_status(b).get("running"):
        time.sleep(0.1)
    b.build()
    evs = outcomes(b.take_events())
    assert {c: evs[c] in REMOTE_HITS for c in CACHEABLE_CRATES} == dict.fromkeys(CACHEABLE_CRATES, True), evs
    assert b.take_rustc_runs() == ["kc_app"]
    assert b.app() == expected
    stats = json.loads(kache(b, "stats", "--json").stdout)
    assert stats["remote_hits"] >= len(CACHEABLE_CRATES) and stats["hits"] >= stats["remote_hits"]
