"""Run a command under a pseudo-terminal, to see what kache writes to ``/dev/tty``."""

from __future__ import annotations

import os
import select
import time
from pathlib import Path

__all__ = ["STOPPED", "run_in_pty", "run_in_pty_background"]


def run_in_pty(argv: list[str], cwd: Path | str, env: dict[str, str], timeout: float = 600) -> tuple[int, str]:
    """``argv`` run in ``cwd`` with a new pseudo-terminal as its controlling terminal
    (stdin, stdout and stderr too); its exit status and everything written to the
    terminal (by it or by any process of its session opening ``/dev/tty``)."""
    import pty

    pid, fd = pty.fork()
    if pid == 0:  # the child: a session of its own, the pty its terminal
        try:
            os.chdir(cwd)
            os.execvpe(argv[0], argv, env)
        finally:
            os._exit(127)
    chunks: list[bytes] = []
    status: int | None = None
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 1.0)
            if not ready:
                done, code = os.waitpid(pid, os.WNOHANG)
                if done:
                    status = code
                    break
                continue
            try:
                data = os.read(fd, 65536)
            except OSError:  # EIO: every process of the session closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        else:
            os.kill(pid, 9)
            raise TimeoutError(f"{argv} ran longer than {timeout} s")
    finally:
        os.close(fd)
    if status is None:
        status = os.waitpid(pid, 0)[1]
    return os.waitstatus_to_exitcode(status), b"".join(chunks).decode("utf-8", "replace").replace("\r\n", "\n")


STOPPED = -1000
"""The status :func:`run_in_pty_background` gives a command the terminal stopped."""


def run_in_pty_background(argv: list[str], cwd: Path | str, env: dict[str, str], output: Path,
                          timeout: float = 600) -> tuple[int, str]:
    """``argv`` run as a background job of a new pseudo-terminal set to ``stty tostop``
    (a job that writes to it is stopped with SIGTTOU), as ``cargo build &`` in a shell;
    its stdout and stderr go to ``output``. Its exit status (:data:`STOPPED` when the
    terminal stopped it; it is killed then) and everything written to the terminal."""
    import textwrap

    script = textwrap.dedent("""
        import os, signal, subprocess, sys, termios, time
        attrs = termios.tcgetattr(0)
        attrs[3] |= termios.TOSTOP
        termios.tcsetattr(0, termios.TCSANOW, attrs)
        argv, output, timeout = sys.argv[3:], sys.argv[1], float(sys.argv[2])
        with open(output, "wb") as out:  # the shell's job: a process group of its own, not the foreground
            job = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out, process_group=0)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pid, status = os.waitpid(job.pid, os.WUNTRACED | os.WNOHANG)
            if pid and os.WIFSTOPPED(status):
                os.killpg(job.pid, signal.SIGKILL)
                job.wait()
                os._exit(101)
            if pid:
                os._exit(os.waitstatus_to_exitcode(status) & 0xFF)
            time.sleep(0.05)
        os.killpg(job.pid, signal.SIGKILL)
        os._exit(102)
    """)
    import sys

    status, said = run_in_pty([sys.executable, "-c", script, str(output), str(timeout), *argv], cwd, env,
                              timeout=timeout + 30)
    if status == 101:
        return STOPPED, said
    if status == 102:
        raise TimeoutError(f"{argv} ran longer than {timeout} s")
    return status, said
