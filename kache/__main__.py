"""Entry point: ``kache <rustc> …`` is wrapper mode, anything else is the CLI.

cargo runs ``$RUSTC_WRAPPER <path-to-rustc> <args…>`` (and under clippy
``kache <clippy-driver> <rustc> <args…>``). Wrapper mode must stay cheap, so this module
imports only the standard library until it knows which mode it is in: click and the
rest of the CLI load only for commands.
"""

from __future__ import annotations

import os
import sys

_COMPILER_NAMES = ("rustc", "clippy-driver")


def is_wrapper_call(argv: list[str]) -> bool:
    """True when argv[1] names a program (the compiler cargo runs, or a workspace wrapper
    such as ``clippy-driver`` or ``sccache`` before it) rather than a kache command.

    cargo runs ``$RUSTC_WRAPPER [$RUSTC_WORKSPACE_WRAPPER] $RUSTC …``, and ``RUSTC`` or
    the workspace wrapper may be a bare name that the shell would find on ``PATH``
    (``RUSTC=myrustc``, ``RUSTC_WORKSPACE_WRAPPER=sccache``). kache's own command names
    come first: ``kache init`` is the command even where ``/sbin/init`` is on ``PATH``.
    """
    if len(argv) < 2 or not argv[1] or argv[1].startswith("-"):
        return False
    first = argv[1]
    base = os.path.basename(first)
    if base.lower().endswith(".exe"):
        base = base[:-4]
    if base.startswith(_COMPILER_NAMES):
        return True
    if os.sep in first:
        # Any other executable given by path (a renamed or custom rustc, as RUSTC allows).
        return os.path.isfile(first) and os.access(first, os.X_OK)
    from kache.command_names import LAZY_COMMANDS

    if first in LAZY_COMMANDS or len(argv) < 3:
        return False  # cargo always passes arguments after the compiler
    from kache.paths import which

    return which(first, os.environ.get("PATH", os.defpath)) is not None


def main(argv: list[str] | None = None) -> int:
    """The ``kache`` command. Called as a process (no ``argv``), wrapper mode ends with
    ``os._exit``: the interpreter's teardown (finalising modules and objects) costs each
    rustc call a few ms and has nothing left to do. Everything the call wrote is written
    with ``os.write`` or committed and closed by then; the streams are flushed here."""
    as_process = argv is None
    argv = sys.argv if argv is None else argv
    if is_wrapper_call(argv):
        from kache.wrapper import run

        status = run(argv[1:])
        if as_process:
            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.flush()
                except (OSError, ValueError):
                    pass  # cargo went away: nobody is left to read it
            if status < 0:  # rustc died of a signal: so does kache (cargo reports the signal)
                from kache.wrapper import die_of

                die_of(-status)
            os._exit(status & 0xFF)
        return status
    from kache.cli import main as cli_main

    return cli_main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
