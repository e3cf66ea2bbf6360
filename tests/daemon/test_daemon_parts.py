"""The daemon's parts on their own: the options' defaults, the scrubbing of secrets from
its log, the pid file's lock and the watch for changed code."""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path

import pytest

from kache.daemon import wire
from kache.daemon.lifecycle import AlreadyRunning, Changes, PidFile
from kache.daemon.logs import Redact, secret_values
from kache.daemon.options import DaemonOptions, stand_in


def test_default_options_are_those_of_a_real_daemon() -> None:
    o = DaemonOptions()
    assert o.remote_factory is None and o.sync is None and o.exec_hook is None
    assert o.reexec is False and o.handle_signals is None and o.watch_dir is None
    assert (o.scan_interval, o.max_tries, o.prefetch_dedupe_secs) == (
        wire.INTENT_SCAN_SECS, wire.MAX_TRIES, wire.PREFETCH_DEDUPE_SECS)
    assert (o.watch_interval, o.retry_delay, o.accept_timeout) == (10.0, 30.0, 0.2)
    assert (o.fold_interval, o.fold_bytes) == (60.0, 1 << 20)
    with pytest.raises(dataclasses.FrozenInstanceError):
        o.reexec = True  # type: ignore[misc]


def test_a_stand_in_answers_every_remote() -> None:
    fake = object()
    factory = stand_in(fake)
    assert factory("any spec", True) is fake and factory("another", False) is fake
    assert stand_in(None)("spec", False) is None


def record(msg: str, *args: object, exc: BaseException | None = None) -> logging.LogRecord:
    info = (type(exc), exc, exc.__traceback__) if exc is not None else None
    return logging.LogRecord("kache.daemon", logging.WARNING, __file__, 1, msg, args, info)


def test_secrets_are_redacted_from_messages_arguments_and_tracebacks() -> None:
    redact = Redact(["s3cr3t-key", "abc"])  # shorter than 4: never scrubbed (too common)
    assert redact.secrets == ["s3cr3t-key"]
    r = record("upload failed: %s", "denied for s3cr3t-key (abc)")
    assert redact.filter(r) is True
    assert r.getMessage() == "upload failed: denied for [redacted] (abc)"
    try:
        raise RuntimeError("token s3cr3t-key leaked")
    except RuntimeError as e:
        r = record("fetch failed", exc=e)
    redact.filter(r)
    assert r.exc_text is not None and "token [redacted] leaked" in r.exc_text and "s3cr3t-key" not in r.exc_text


def test_a_builds_credentials_are_redacted_once_sent() -> None:
    redact = Redact([])
    r = record("key %s", "build-secret-1")
    redact.filter(r)
    assert r.getMessage() == "key build-secret-1"
    redact.add(["build-secret-1", "xy"])
    redact.add(["build-secret-1"])
    assert redact.secrets == ["build-secret-1"]
    assert redact.scrub("key build-secret-1") == "key [redacted]"


def test_secret_values_are_the_credentials_set() -> None:
    found = secret_values({"KACHE_S3_SECRET_KEY": " from-kache ", "AWS_SESSION_TOKEN": "tok",
                           "AWS_ACCESS_KEY_ID": "not-a-secret", "KACHE_S3_BUCKET": "b"})
    assert sorted(found) == ["from-kache", "tok"]


def test_a_second_pid_file_lock_says_who_runs(tmp_path: Path) -> None:
    path = str(tmp_path / "daemon.pid")
    first = PidFile(path)
    first.lock()
    with pytest.raises(AlreadyRunning) as e:
        PidFile(path).lock()
    assert e.value.pid == os.getpid() and e.value.pid_path == path
    first.release()
    assert not os.path.exists(path)
    again = PidFile(path)
    again.lock()
    again.release()


def test_changed_code_is_seen(tmp_path: Path, make_settings) -> None:
    code = tmp_path / "code"
    code.mkdir()
    (code / "a.py").write_text("x = 1\n")
    changes = Changes(make_settings(), str(code))
    changes.remember()
    assert changes.reason() is None
    (code / "notes.txt").write_text("not code")
    assert changes.reason() is None
    st = os.stat(code / "a.py")
    os.utime(code / "a.py", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert changes.reason() == "kache's code changed"
