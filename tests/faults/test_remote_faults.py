"""The daemon and S3 under faults, on real builds, a real ``kache daemon run`` process and a
real S3 server (moto) behind an HTTP fault proxy (tests/support/remote_faults.py).

1. The daemon is killed with SIGKILL at each stage of an upload and of a fetch for a
   build: the upload intent survives until an upload really completed, a restarted daemon
   finishes the job, the remote only ever holds complete, valid objects, and another
   machine with an empty store gets a correct app from it.
2. S3 misbehaves (500s, a stalled body, a truncated body, a valid archive of another
   entry in place of the one asked for) while a build runs through the daemon, and while
   ``kache sync`` pulls or pushes: the build succeeds and is correct, nothing wrong is
   stored, and ``kache sync`` says what failed and exits 1.

The upload tests share one prepared store (a build of tests/fixtures/ws with its four
upload intents) and the fetch tests one "golden" bucket holding its four archives.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support import reliability
from tests.support.env import clean_environ
from tests.support.remote_faults import (
    ARCHIVE,
    KACHE_EXE,
    LISTING,
    MKEYS,
    PREFIX,
    REMOTE_HITS,
    DaemonProc,
    FaultProxy,
    assert_whole,
    build,
    copy_store,
    damaged_blobs,
    intents,
    new_bucket,
    remote_env,
    remote_state,
    retarget_intents,
    store_keys,
    store_problems,
)
from tests.support.s3 import s3_client
from tests.support.waiting import wait_for
from tests.support.workspace import CACHEABLE_CRATES, Workspace, kache, make_machine, outcomes

pytestmark = [pytest.mark.faults, pytest.mark.e2e]


@dataclass
class Prepared:
    """What the module's tests start from (built and uploaded once)."""

    store: Path
    """A store after one build of the fixture, with an upload intent per entry."""
    keys: dict[str, str]
    """key → crate of its entries."""
    golden: str
    """A bucket holding the complete upload of those entries."""
    archives: dict[str, bytes]
    """key → the archive object in the golden bucket."""


@pytest.fixture(scope="module")
def prepared(s3: str, tmp_path_factory: pytest.TempPathFactory) -> Prepared:
    with clean_environ():
        base = tmp_path_factory.mktemp("prepared")
        seed = make_machine(base / "seed", KACHE_EXE)
        seed.env.update(remote_env(s3, "kache-faults-unused"))
        build(seed)
        keys = store_keys(seed.store)
        assert set(keys.values()) == CACHEABLE_CRATES
        assert set(keys) == intents(seed.store)
        golden = new_bucket(s3)
        push = kache(seed, "sync", "--push", KACHE_S3_BUCKET=golden)
        assert push.returncode == 0, push.stdout + push.stderr
        state = remote_state(s3, golden)
        assert all(state.complete(k) for k in keys) and not state.invalid
        client = s3_client(s3)
        archives = {k: client.get_object(Bucket=golden, Key=f"{PREFIX}/{c}/{k}.tar.zst")["Body"].read()
                    for k, c in keys.items()}
        return Prepared(seed.store, keys, golden, archives)


def machine(tmp_path: Path, name: str, endpoint: str, bucket: str) -> Workspace:
    ws = make_machine(tmp_path / name, KACHE_EXE)
    ws.env.update(remote_env(endpoint, bucket))
    return ws


def pulls_a_correct_app(tmp_path: Path, name: str, endpoint: str, bucket: str) -> None:
    """Another machine with an empty store pulls the bucket and builds: every cacheable
    crate comes from the remote, only the binary is compiled, and the app is right."""
    other = machine(tmp_path, name, endpoint, bucket)
    out = kache(other, "sync", "--pull", "--json")
    assert out.returncode == 0, out.stdout + out.stderr
    assert json.loads(out.stdout)["pull"]["objects"] == len(CACHEABLE_CRATES)
    build(other)
    evs = outcomes(other.take_events())
    assert {c: evs.get(c) for c in CACHEABLE_CRATES} == dict.fromkeys(CACHEABLE_CRATES, "prefetch_hit"), evs
    assert other.take_rustc_runs() == ["kc_app"]
    other.verify_app()


# --------------------------------------------------------------------------- 1. kill -9 mid-upload

# stage → (fault spec for the daemon, or a proxy rule (action, method, path))
UPLOAD_KILLS: dict[str, str | tuple[str, str, str]] = {
    "packed-before-put": "kill:after:kache.remote.s3:pack_entry#1",
    "put-in-flight": ("hold", "PUT", ARCHIVE),
    "put-stored-reply-lost": ("hold-reply", "PUT", ARCHIVE),
    "archive-put-before-announce": "kill:after:kache.remote.s3:Remote.put#1",
    "uploaded-before-intent-removed": "kill:before:kache.daemon.uploads:Uploads._remove_intent#1",
}


@pytest.mark.parametrize("stage", list(UPLOAD_KILLS))
def test_a_daemon_killed_mid_upload_keeps_the_intent_and_a_restart_finishes_it(
        stage: str, prepared: Prepared, s3: str, proxy: FaultProxy,
        daemons: list[DaemonProc], tmp_path: Path) -> None:
    """SIGKILL at each stage of an upload: until an upload really completed its intent is
    on disk; what the remote holds meanwhile is complete or absent, never partial; a
    restarted daemon finishes every upload, and a fresh machine gets a correct app."""
    store = copy_store(prepared.store, tmp_path / "a-cache")
    bucket = new_bucket(s3)
    retarget_intents(store, proxy.url, bucket)
    env = {"KACHE_CACHE_DIR": str(store), **remote_env(proxy.url, bucket), "KACHE_S3_CONCURRENCY": "1"}
    fault = UPLOAD_KILLS[stage]
    if isinstance(fault, str):
        d = DaemonProc(env, tmp_path / "logs", faults=fault)
        assert d.wait_exit() == -signal.SIGKILL, d.log()
        assert d.fired() == [fault]
        reliability.count("faults injected")
    else:
        action, method, path = fault
        proxy.add(action, method, path, times=1)
        d = DaemonProc(env, tmp_path / "logs")
        assert proxy.held.wait(60), d.log()
        d.kill()
        proxy.release.set()

    state = remote_state(s3, bucket)
    assert state.invalid == [] and state.dangling == []
    left = intents(store)
    for key in prepared.keys:  # an intent is removed only once its upload is complete
        assert key in left or state.complete(key), (stage, key[:16])
    assert left, "the upload under way when the daemon died must still have its intent"
    if stage in ("put-stored-reply-lost", "archive-put-before-announce", "uploaded-before-intent-removed"):
        assert state.archives, "the archive reached S3 before the kill"

    proxy.clear()
    again = DaemonProc(env, tmp_path / "logs")
    wait_for(lambda: not intents(store), 60, "the restarted daemon to finish the uploads")
    again.stop()
    state = remote_state(s3, bucket)
    assert state.invalid == [] and state.dangling == []
    assert {k: state.complete(k) for k in prepared.keys} == dict.fromkeys(prepared.keys, True)
    pulls_a_correct_app(tmp_path, "b", s3, bucket)


# --------------------------------------------------------------------------- 1. kill -9 mid-fetch

FETCH_KILLS: dict[str, str | tuple[str, str, str]] = {
    "archive-get-in-flight": ("hold", "GET", ARCHIVE),
    "downloaded-before-import": "kill:before:kache.remote.s3:import_archive#1",
    "import-half-done": "kill:after:kache.remote.archive:_extract_blob#1",
}


@pytest.mark.parametrize("stage", list(FETCH_KILLS))
def test_a_daemon_killed_during_a_fetch_for_a_build_never_fails_it(
        stage: str, prepared: Prepared, s3: str, proxy: FaultProxy,
        daemons: list[DaemonProc], tmp_path: Path) -> None:
    """The wrapper asks the daemon to fetch an entry and the daemon dies mid-fetch: the
    build compiles instead and is correct, the store holds nothing partial, and once the
    daemon is restarted, builds from an empty store get entries from the remote again.

    Listing requests fail (500) while the daemon is faulty, so the workspace prefetch
    cannot bring the entries first: the fetch the wrapper asked for is what is killed."""
    b = machine(tmp_path, "b", proxy.url, prepared.golden)
    env = {**b.env}
    proxy.add("500", "GET", LISTING)
    fault = FETCH_KILLS[stage]
    if isinstance(fault, str):
        d = DaemonProc(env, tmp_path / "logs", faults=fault)
    else:
        proxy.add(fault[0], fault[1], fault[2], times=1)
        d = DaemonProc(env, tmp_path / "logs")
    d.wait_ready()
    with ThreadPoolExecutor(1) as pool:
        done = pool.submit(build, b)
        if isinstance(fault, str):
            assert d.wait_exit() == -signal.SIGKILL, d.log()
            assert d.fired() == [fault]
            reliability.count("faults injected")
        else:
            assert proxy.held.wait(60), d.log()
            d.kill()
            proxy.release.set()
        done.result(timeout=300)
    b.verify_app()
    evs = outcomes(b.take_events())
    # The fetch under way when the daemon died compiled instead. (cargo starts kc_macros
    # and the build script together: the other fetch may finish in the moment the first
    # blob's extraction takes, before the kill, and be served: a remote hit, even when the
    # kill lost its reply and the wrapper's second look-up found it.)
    assert {evs.get(c) for c in CACHEABLE_CRATES} <= REMOTE_HITS | {"miss", "dup"}, evs
    assert any(evs.get(c) in ("miss", "dup") for c in CACHEABLE_CRATES), evs
    # Nothing partial: every entry is whole, and every blob file is what its name says (a
    # blob imported before the kill may be left unreferenced until gc; a half-written one
    # stays in tmp/, never in the store).
    problems = store_problems(b.store)
    assert [p for p in problems if "orphan" not in p] == [], problems
    assert damaged_blobs(b.store) == []

    # A restarted daemon serves the remote again: with an empty store and a clean target,
    # the build gets entries from it (those that arrive within the wrapper's wait; the
    # others are compiled) and is correct.
    proxy.clear()
    shutil.rmtree(b.store)
    b._seen = 0  # type: ignore[attr-defined] # a new events log
    b.clean()
    again = DaemonProc(env, tmp_path / "logs")
    again.wait_ready()
    build(b, KACHE_REMOTE_CHECK_TIMEOUT_MS="3000")
    evs = outcomes(b.take_events())
    assert REMOTE_HITS & {evs.get(c) for c in CACHEABLE_CRATES}, evs
    b.verify_app()
    again.stop()
    # A fetch that lands after the wrapper gave up waiting and compiled records the same
    # key: the entry is whole either way (see assert_whole for the .d blob it may orphan).
    assert_whole(b.store)


# --------------------------------------------------------------------------- 2. S3 faults during builds


def _swap_with_another_archive(prepared: Prepared) -> Callable[[str], bytes]:
    """For each archive asked for, a complete, valid archive of another entry."""
    keys = sorted(prepared.archives)

    def body(path: str) -> bytes:
        key = path.rsplit("/", 1)[-1].removesuffix(".tar.zst")
        other = keys[(keys.index(key) + 1) % len(keys)] if key in keys else keys[0]
        return prepared.archives[other]

    return body


S3_FAULTS = ["http-500", "stalled-body", "truncated-body", "wrong-archive"]
SAYS = {"http-500": "HTTP 500 InternalError", "stalled-body": "Read timeout",
        "truncated-body": "IncompleteRead", "wrong-archive": "bad archive"}
"""What the daemon's log says about each fault."""


def _add_fault(proxy: FaultProxy, fault: str, prepared: Prepared, method: str = "GET",
               path: str = ARCHIVE, stall: float = 5.0) -> None:
    if fault == "http-500":
        proxy.add("500", method, path)
    elif fault == "stalled-body":
        proxy.add("stall", method, path, seconds=stall)
    elif fault == "truncated-body":
        proxy.add("truncate", method, path)
    elif fault == "wrong-archive":
        proxy.add("swap", method, path, body=_swap_with_another_archive(prepared))
    else:
        proxy.add(fault, method, path)


@pytest.mark.parametrize("fault", S3_FAULTS)
def test_s3_faults_during_a_build_through_the_daemon_change_nothing_but_speed(
        fault: str, prepared: Prepared, s3: str, proxy: FaultProxy,
        daemons: list[DaemonProc], tmp_path: Path) -> None:
    """Every archive download (the wrapper's fetch and the workspace prefetch) meets the
    fault: the build succeeds within the hang guard, compiles what it could not get, is
    correct, and nothing wrong is stored; the next build is correct too."""
    b = machine(tmp_path, "b", proxy.url, prepared.golden)
    _add_fault(proxy, fault, prepared)
    d = DaemonProc(b.env, tmp_path / "logs")
    d.wait_ready()
    build(b, timeout=120)
    b.verify_app()
    # The daemon says why (the fetches it could not finish within the build's wait end
    # later, in failure too), before it is stopped and the store checked.
    wait_for(lambda: re.search(r"fetch failed: .*" + re.escape(SAYS[fault]), d.log()), 60,
             f"the daemon to log a failed fetch saying {SAYS[fault]!r}")
    d.stop()
    fired = proxy.count()
    assert fired > 0
    reliability.count("faults injected", fired)
    evs = outcomes(b.take_events())
    assert not REMOTE_HITS & {evs.get(c) for c in CACHEABLE_CRATES}, evs
    assert store_problems(b.store) == []
    assert set(store_keys(b.store)) == set(prepared.keys)  # its own compiles, nothing else

    proxy.clear()
    b.clean()
    build(b)
    b.verify_app()


@pytest.mark.parametrize("fault", S3_FAULTS)
def test_s3_faults_during_kache_sync_pull_are_reported_and_nothing_wrong_is_stored(
        fault: str, prepared: Prepared, s3: str, proxy: FaultProxy, tmp_path: Path) -> None:
    """``kache sync --pull`` whose downloads fail: exit 1 and a line per object naming it
    and the reason; an archive of another entry is skipped as a bad archive. Nothing is
    stored; once S3 behaves the pull completes and the build is served from it."""
    c = machine(tmp_path, "c", proxy.url, prepared.golden)
    _add_fault(proxy, fault, prepared, stall=3.0)
    out = kache(c, "sync", "--pull")
    fired = proxy.count()
    assert fired >= len(prepared.keys)
    reliability.count("faults injected", fired)
    names = [f"s3://{prepared.golden}/{PREFIX}/{crate}/{key}.tar.zst" for key, crate in prepared.keys.items()]
    if fault == "wrong-archive":
        # A bad object is skipped and reported (documented: not a transfer failure).
        assert out.returncode == 0, out.stdout + out.stderr
        assert f"skipped: {len(names)} (bad-archive {len(names)})" in out.stdout, out.stdout
        for key in prepared.keys:
            assert f"expected {key}" in out.stdout
    else:
        assert out.returncode == 1, out.stdout + out.stderr
        assert f"failed: {len(names)}" in out.stdout, out.stdout
        for name in names:
            line = next((x for x in out.stdout.splitlines() if name in x), None)
            assert line is not None and line.strip().startswith(f"remote GET failed: {name}: "), out.stdout
            if fault == "http-500":
                assert "HTTP 500 InternalError" in line
    assert not (c.store / "index.db").exists() or store_keys(c.store) == {}
    assert not (c.store / "index.db").exists() or store_problems(c.store) == []

    proxy.clear()
    out = kache(c, "sync", "--pull")
    assert out.returncode == 0, out.stdout + out.stderr
    build(c)
    evs = outcomes(c.take_events())
    assert {evs.get(x) for x in CACHEABLE_CRATES} == {"prefetch_hit"}, evs
    c.verify_app()


PUSH_FAULTS: dict[str, tuple[str, str, str]] = {
    "archive-put-500": ("500", "PUT", ARCHIVE),
    "archive-put-reply-lost": ("close", "PUT", ARCHIVE),
    "announce-put-500": ("500", "PUT", MKEYS),
}


@pytest.mark.parametrize("fault", list(PUSH_FAULTS))
def test_s3_faults_during_kache_sync_push_are_reported_and_a_second_push_repairs_them(
        fault: str, prepared: Prepared, s3: str, proxy: FaultProxy, tmp_path: Path) -> None:
    """``kache sync --push`` whose uploads fail: exit 1 and a line per entry naming the
    object and the reason; the remote holds only complete objects; the next push (S3
    healthy again) leaves every entry uploaded *and* announced, and a fresh machine gets
    a correct app from it."""
    store = copy_store(prepared.store, tmp_path / "a-cache")
    bucket = new_bucket(s3)
    a = machine(tmp_path, "a", proxy.url, bucket)
    a.env["KACHE_CACHE_DIR"] = str(store)
    action, method, path = PUSH_FAULTS[fault]
    proxy.add(action, method, path)
    out = kache(a, "sync", "--push")
    fired = proxy.count()
    assert fired >= len(prepared.keys)
    reliability.count("faults injected", fired)
    assert out.returncode == 1, out.stdout + out.stderr
    assert f"failed: {len(prepared.keys)}" in out.stdout, out.stdout
    for key, crate in prepared.keys.items():
        obj = f"/{crate}/_mkeys/" if fault.startswith("announce") else f"/{crate}/{key}.tar.zst"
        line = next((x.strip() for x in out.stdout.splitlines() if obj in x), "")
        assert line.startswith(f"remote PUT failed: s3://{bucket}/{PREFIX}/"), out.stdout
        assert ("HTTP 500 InternalError" if "500" in fault else "cannot reach the endpoint") in line, line
    state = remote_state(s3, bucket)
    assert state.invalid == [] and state.dangling == []

    proxy.clear()
    out = kache(a, "sync", "--push", "--json")
    assert out.returncode == 0, out.stdout + out.stderr
    push = json.loads(out.stdout)["push"]
    if fault == "archive-put-500":
        assert push["objects"] == len(prepared.keys), push
    else:  # the archives are there, their announcements are not: written now
        assert push["up_to_date"] == push["announced"] == len(prepared.keys), push
    state = remote_state(s3, bucket)
    assert state.invalid == [] and state.dangling == []
    assert {k: state.complete(k) for k in prepared.keys} == dict.fromkeys(prepared.keys, True)
    pulls_a_correct_app(tmp_path, "b", s3, bucket)
