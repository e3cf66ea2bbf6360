"""Run a command under a pseudo-terminal, to see what kache writes to ``/dev/tty``."""

from __future__ import annotations

import os
import select
import time
from pathlib import Path

__all__ = ["run_in_pty"]


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
