"""The remote follows the build (issue 22), on real cargo and local S3 (moto) servers.

- A fresh machine whose remote is in its environment (or its config file), with no
  daemon running, is served from the remote from its first call: a plain `cargo build`
  compiles only the binary.
- Shells with different remotes over one store each get their own bucket; a shell with
  no remote uploads nowhere; a read-only build pulls and writes nothing.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import pytest

from tests.support.daemon import pending_intents
from tests.support.s3 import ACCESS_KEY, SECRET_KEY
from tests.support.workspace import CACHEABLE_CRATES, Workspace, configure_remote, kache, outcomes

pytestmark = pytest.mark.e2e

REMOTE_HITS = {"remote_hit", "prefetch_hit"}


def env_remote(bucket: str, endpoint: str) -> dict[str, str]:
    return {"KACHE_S3_BUCKET": bucket, "KACHE_S3_ENDPOINT": endpoint, "KACHE_S3_ACCESS_KEY": ACCESS_KEY,
            "KACHE_S3_SECRET_KEY": SECRET_KEY, "KACHE_DAEMON_IDLE_TIMEOUT": "60"}


def objects(endpoint: str, bucket: str) -> list[str]:
    import boto3

    s3 = boto3.session.Session(aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
                               region_name="us-east-1").client("s3", endpoint_url=endpoint)
    return sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", []))


def new_bucket(endpoint: str, name: str) -> str:
    import boto3

    boto3.session.Session(aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
                          region_name="us-east-1").client("s3", endpoint_url=endpoint).create_bucket(Bucket=name)
    return name


def wait_uploads(ws: Workspace, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and pending_intents(ws.store):
        time.sleep(0.2)
    assert not pending_intents(ws.store), kache(ws, "daemon", "--json").stdout


@pytest.mark.parametrize("where", ["environment", "config file"])
def test_a_fresh_machine_is_served_by_the_remote_from_its_first_call(
        where: str, machines: Callable[[str], Workspace], bucket: str, moto_endpoint: str,
        started: list[Workspace]) -> None:
    a = machines("machine-a")
    a.env.update(env_remote(bucket, moto_endpoint))
    started.append(a)
    a.build()  # starts A's daemon, which uploads in the background
    expected = a.app()
    wait_uploads(a)
    kache(a, "daemon", "stop")
    b = machines("machine-b")
    started.append(b)
    if where == "environment":
        b.env.update(env_remote(bucket, moto_endpoint))
    else:
        configure_remote(b, bucket, moto_endpoint)
    assert not (b.store / "daemon.sock").exists()
    b.build()  # no daemon yet: the first call starts one and waits for it, within its budget
    evs = outcomes(b.take_events())
    assert {c: evs.get(c) in REMOTE_HITS for c in CACHEABLE_CRATES} == dict.fromkeys(CACHEABLE_CRATES, True), evs
    assert b.take_rustc_runs() == ["kc_app"]
    assert b.app() == expected
    status = json.loads(kache(b, "daemon", "--json").stdout)
    assert [r["url"] for r in status["remotes"]] == [f"s3://{bucket}/artifacts"], status
    assert SECRET_KEY not in json.dumps(status)
    assert SECRET_KEY not in (b.store / "daemon.log").read_text()


def test_shells_with_other_remotes_over_one_store_each_get_their_own_bucket(
        machines: Callable[[str], Workspace], moto_endpoint: str, second_moto: str,
        started: list[Workspace]) -> None:
    """Three shells, one store, one daemon: shell 1 exports a bucket on one S3, shell 2
    a bucket on another, shell 3 none; each builds entries of its own (its own key
    salt). Each remote holds exactly its shell's entries; shell 3's went nowhere."""
    one = new_bucket(moto_endpoint, "shell-one")
    two = new_bucket(second_moto, "shell-two")
    shells = [machines(f"shell-{i}") for i in (1, 2, 3)]
    store = shells[0].store
    for i, (sh, remote) in enumerate(zip(shells, [(one, moto_endpoint), (two, second_moto), None], strict=True), 1):
        sh.env.update({"KACHE_CACHE_DIR": str(store), "KACHE_KEY_SALT": f"shell {i}",
                       "KACHE_DAEMON_IDLE_TIMEOUT": "60"})
        if remote is not None:
            sh.env.update(env_remote(*remote))
    started.append(shells[0])
    for sh in shells:
        sh.build()
        wait_uploads(sh)
    listed = kache(shells[0], "list", "--json")
    by_key = {e["key"][:16]: e for e in json.loads(listed.stdout)}
    assert len(by_key) == 3 * len(CACHEABLE_CRATES), listed.stdout
    in_one = {name.rsplit("/", 1)[1][:16] for name in objects(moto_endpoint, one) if name.endswith(".tar.zst")}
    in_two = {name.rsplit("/", 1)[1][:16] for name in objects(second_moto, two) if name.endswith(".tar.zst")}
    assert len(in_one) == len(in_two) == len(CACHEABLE_CRATES)
    assert in_one.isdisjoint(in_two) and in_one | in_two < set(by_key)  # shell 3's entries went nowhere
    status = json.loads(kache(shells[0], "daemon", "--json").stdout)
    assert sorted(r["url"] for r in status["remotes"]) == ["s3://shell-one/artifacts", "s3://shell-two/artifacts"]


def test_a_read_only_build_pulls_and_writes_nothing(
        machines: Callable[[str], Workspace], bucket: str, moto_endpoint: str,
        started: list[Workspace]) -> None:
    a = machines("machine-a")
    a.env.update(env_remote(bucket, moto_endpoint))
    started.append(a)
    a.build()
    wait_uploads(a)
    kache(a, "daemon", "stop")
    before = objects(moto_endpoint, bucket)
    fork = machines("fork-pr")
    fork.env.update({**env_remote(bucket, moto_endpoint), "KACHE_REMOTE_READ_ONLY": "1"})
    started.append(fork)
    (fork.path / "util" / "src" / "lib.rs").open("a").write("\npub fn fork_only() {}\n")
    fork.build()
    evs = outcomes(fork.take_events())
    assert evs["kc_util"] == "miss" and evs["kc_core"] in REMOTE_HITS, evs
    time.sleep(1.0)  # what a daemon would upload, it would have started by now
    push = kache(fork, "sync", "--push")  # as a CI workflow's last step does
    assert push.returncode == 0, push.stderr
    assert push.stderr == (f"kache: warning: not pushing: s3://{bucket}/artifacts is read-only for this build "
                           "(cache.remote.read_only, KACHE_REMOTE_READ_ONLY)\n")
    assert objects(moto_endpoint, bucket) == before
    assert pending_intents(fork.store) == []
