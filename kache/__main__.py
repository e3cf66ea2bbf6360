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
    """True when argv[1] names a compiler rather than a kache command or option."""
    if len(argv) < 2 or not argv[1] or argv[1].startswith("-"):
        return False
    first = argv[1]
    base = os.path.basename(first)
    if base.lower().endswith(".exe"):
        base = base[:-4]
    if base.startswith(_COMPILER_NAMES):
        return True
    # Any other executable given by path (a renamed or custom rustc, as RUSTC allows).
    return os.sep in first and os.path.isfile(first) and os.access(first, os.X_OK)


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
            os._exit(status & 0xFF)
        return status
    from kache.cli import main as cli_main

    return cli_main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
