"""S3 for the tests: the test credentials, a moto server in this process, and a local
endpoint that fails every request."""

from __future__ import annotations

import http.server
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

# An access key and secret that must never appear in an error message.
ACCESS_KEY = "AKIAKACHETESTKEY0001"
SECRET_KEY = "kache/test+SECRET/value0123456789abcdef"


@contextmanager
def moto_server() -> Iterator[str]:
    """A moto S3 server on 127.0.0.1 (a free port), in this process: its endpoint."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def s3_client(endpoint: str):  # noqa: ANN201 - a boto3 client
    """A boto3 S3 client with the test credentials."""
    import boto3

    return boto3.session.Session(aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
                                 region_name="us-east-1").client("s3", endpoint_url=endpoint)


class _FailingHandler(http.server.BaseHTTPRequestHandler):
    """Answers 500 with an S3 error whose message echoes the request's Authorization
    header (as a careless server might): the client must not pass that on."""

    protocol_version = "HTTP/1.1"  # answers ``Expect: 100-continue`` at once

    def _fail(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        elif self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            while True:  # read the chunked body, so the client is not left sending it
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                self.rfile.read(size + 2)
                if size == 0:
                    break
        auth = self.headers.get("Authorization", "")
        body = (f"<?xml version='1.0'?><Error><Code>InternalError</Code><Message>boom for {auth} "
                f"and {self.headers.get('X-Amz-Security-Token', '')}</Message></Error>").encode()
        self.send_response(500)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body) if self.command != "HEAD" else 0))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _fail

    def log_message(self, *args: Any) -> None:
        pass


@contextmanager
def failing_server() -> Iterator[str]:
    """A local endpoint that fails every request with HTTP 500."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _FailingHandler)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        host, port = server.server_address[:2]
        yield f"http://{host}:{port}"
    finally:
        server.shutdown()
        server.server_close()
