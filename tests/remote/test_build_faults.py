"""Builds through kache with a remote that is down, slow, failing or lying: every build
succeeds and nothing wrong is stored or served."""

from __future__ import annotations

import http.server
import json
import socketserver
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from kache.store.store import Store
from tests.support.daemon import pending_intents
from tests.support.workspace import CACHEABLE_CRATES, Workspace, configure_remote, kache, outcomes

pytestmark = pytest.mark.e2e

EXPECTED_APP = "hello 42 12 / hello 42 12\nLOUD\nfrom-build-script\n"


class _Handler(http.server.BaseHTTPRequestHandler):
    delay = 0.0
    status = 500

    def _reply(self) -> None:
        time.sleep(self.delay)
        body = b"<Error><Code>InternalError</Code><Message>injected</Message></Error>"
        try:
            self.send_response(self.status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)
        except OSError:
            pass  # the client gave up waiting: that is the point of the slow server

    do_GET = do_PUT = do_HEAD = do_POST = do_DELETE = _reply

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def bad_server() -> Iterator[Callable[[float, int], str]]:
    servers: list[socketserver.TCPServer] = []

    def start(delay: float, status: int) -> str:
        handler = type("H", (_Handler,), {"delay": delay, "status": status})
        srv = socketserver.ThreadingTCPServer(("127.0.0.1", 0), handler)
        srv.daemon_threads = True
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        servers.append(srv)
        return f"http://127.0.0.1:{srv.server_address[1]}"

    yield start
    for s in servers:
        s.shutdown()
        s.server_close()


def closed_port() -> str:
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"http://127.0.0.1:{port}"


@pytest.mark.parametrize("kind", ["unreachable", "http-500", "slow"])
def test_a_bad_remote_never_fails_or_stalls_a_build(kind: str, machines: Callable[[str], Workspace],
                                                   bad_server: Callable[[float, int], str],
                                                   started: list[Workspace]) -> None:
    endpoint = {"unreachable": closed_port, "http-500": lambda: bad_server(0.0, 500),
                "slow": lambda: bad_server(10.0, 200)}[kind]()
    ws = machines(f"m-{kind}")
    configure_remote(ws, "kache-faults", endpoint)
    ws.env["KACHE_REMOTE_CHECK_TIMEOUT_MS"] = "500"
    started.append(ws)
    kache(ws, "daemon", "start")
    t0 = time.monotonic()
    ws.build()
    elapsed = time.monotonic() - t0
    assert ws.app() == EXPECTED_APP
    evs = outcomes(ws.take_events())
    assert {evs[c] for c in CACHEABLE_CRATES} <= {"miss", "dup"}
    # At most one 0.5 s remote check per cacheable crate, never the server's 10 s.
    assert elapsed < 30
    assert Store(str(ws.store)).check(verify_hashes=True) == []
    # What could not be uploaded is still queued, for a later daemon or `kache sync --push`.
    time.sleep(0.5)
    assert pending_intents(ws.store)


def test_an_object_with_wrong_content_is_rejected_and_the_build_compiles(
        machines: Callable[[str], Workspace], bucket: str, moto_endpoint: str,
        started: list[Workspace]) -> None:
    import boto3

    from tests.support.s3 import ACCESS_KEY, SECRET_KEY

    a = machines("liar-a")
    configure_remote(a, bucket, moto_endpoint)
    started.append(a)
    a.build()
    uploads = a.store / "uploads"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (not uploads.exists() or pending_intents(a.store)):
        time.sleep(0.2)
    kache(a, "daemon", "stop")
    # Corrupt every archive on the remote: valid-looking names, wrong bytes.
    s3 = boto3.session.Session(aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
                               region_name="us-east-1").client("s3", endpoint_url=moto_endpoint)
    names = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"] if o["Key"].endswith(".tar.zst")]
    assert names
    for name in names:
        body = s3.get_object(Bucket=bucket, Key=name)["Body"].read()
        s3.put_object(Bucket=bucket, Key=name, Body=body[:-40] + bytes(40))
    b = machines("liar-b")
    configure_remote(b, bucket, moto_endpoint)
    started.append(b)
    kache(b, "daemon", "start")
    b.build()
    evs = outcomes(b.take_events())
    assert {evs[c] for c in CACHEABLE_CRATES} <= {"miss", "dup"}, evs
    assert b.app() == EXPECTED_APP
    assert Store(str(b.store)).check(verify_hashes=True) == []
    # A fresh machine pulling explicitly is told why each object was skipped.
    c = machines("liar-c")
    configure_remote(c, bucket, moto_endpoint)
    out = kache(c, "sync", "--pull", "--json")
    report = json.loads(out.stdout)
    assert report["pull"]["objects"] == 0
    assert {s["reason"] for s in report["skipped"]} == {"bad-archive"}, report
    assert not (c.store / "index.db").exists() or Store(str(c.store)).entries() == []
