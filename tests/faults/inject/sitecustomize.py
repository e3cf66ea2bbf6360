"""Fault injection for kache processes started by the fault tests (never shipped).

The tests put this directory first on ``PYTHONPATH`` and set ``KACHE_TEST_FAULTS``; every
Python process that inherits them (wrapper calls, the daemon, CLI commands) patches the
named functions at start-up, before kache imports anything, so production code carries no
fault hooks. Spec: faults separated by ``;``, each ``action:when:module:qualname[#n]``:

``action``  ``kill`` (SIGKILL to this process), ``enospc`` / ``eio`` / ``erofs`` (raise
            that ``OSError``), ``malformed`` (raise SQLite's "database disk image is
            malformed", as a query on a damaged index does), ``slow`` (sleep 2 s, then go on)
``when``    ``before`` or ``after`` the call
``#n``      act on the n-th call in this process only (default: the first)

Example: ``kill:after:kache.store.blobs:put_file#2`` kills a wrapper right after its second
blob was written. Each fault that fires first appends ``<pid> <spec>`` to the file named by
``KACHE_TEST_FAULTS_LOG`` (when set), so a test knows it really happened.

Two more knobs, read once at start-up: ``KACHE_TEST_SLOW_SECS`` (how long ``slow``
sleeps; default 2) and ``KACHE_TEST_CLOCK_OFFSET`` (seconds added to ``time.time`` and
``time.time_ns`` in this process: e.g. a ``kache gc`` that runs "an hour later", when
temp files and orphan blobs count as left over). Neither needs ``KACHE_TEST_FAULTS``.
"""

import errno
import functools
import importlib
import os
import signal
import time


def _fire(spec: str, action: str) -> None:
    log = os.environ.get("KACHE_TEST_FAULTS_LOG")
    if log:
        fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, f"{os.getpid()} {spec}\n".encode())
        finally:
            os.close(fd)
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(10)  # never reached
    if action == "slow":
        time.sleep(float(os.environ.get("KACHE_TEST_SLOW_SECS") or 2))
        return
    if action == "malformed":
        import _sqlite3

        raise _sqlite3.DatabaseError("database disk image is malformed (injected)")
    code = {"enospc": errno.ENOSPC, "eio": errno.EIO, "erofs": errno.EROFS}[action]
    raise OSError(code, os.strerror(code) + " (injected)")


def _install(spec: str) -> None:
    action, when, module, rest = spec.split(":", 3)
    qualname, _, nth = rest.partition("#")
    nth_call = int(nth or 1)
    mod = importlib.import_module(module)
    owner = mod
    *path, name = qualname.split(".")
    for part in path:
        owner = getattr(owner, part)
    original = getattr(owner, name)
    calls = [0]

    @functools.wraps(original)
    def faulty(*args, **kwargs):
        calls[0] += 1
        hit = calls[0] == nth_call
        if hit and when == "before":
            _fire(spec, action)
        result = original(*args, **kwargs)
        if hit and when == "after":
            _fire(spec, action)
        return result

    if isinstance(owner, type) and isinstance(owner.__dict__.get(name), staticmethod):
        faulty = staticmethod(faulty)
    setattr(owner, name, faulty)


def _shift_clock(offset: float) -> None:
    real_time, real_time_ns = time.time, time.time_ns
    time.time = lambda: real_time() + offset
    time.time_ns = lambda: real_time_ns() + round(offset * 1e9)


if os.environ.get("KACHE_TEST_CLOCK_OFFSET"):
    _shift_clock(float(os.environ["KACHE_TEST_CLOCK_OFFSET"]))

for _spec in filter(None, (s.strip() for s in os.environ.get("KACHE_TEST_FAULTS", "").split(";"))):
    try:
        _install(_spec)
    except Exception as _e:  # a bad spec is the test's bug: say so loudly in the process's stderr
        import sys

        print(f"kache fault injection: cannot install {_spec!r}: {_e!r}", file=sys.stderr)
