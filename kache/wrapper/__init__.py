"""Wrapper mode: the process shell for every rustc call cargo makes.

``run(argv)`` takes the call in and gives an exit code out: it asks the daemon to serve a
hit (:mod:`kache.wrapper.daemon_hit`), else hands the call to the engine
(:func:`kache.engine.handle.handle`, which reaches the remote through the daemon,
:mod:`kache.wrapper.daemon_remote`), and replaces itself with the real compiler whenever
the engine says so. It never lets kache break a build: any problem with kache itself,
its settings or its store ends in running the real compiler exactly as cargo asked,
after at most one warning (:func:`kache.engine.notices.warn_once`). Once the real
compiler has run, its exit status is what cargo gets, whatever happens while recording.
"""

from __future__ import annotations

import os
import sys
import time

__all__ = ["run", "exec_compiler"]


def exec_compiler(argv: list[str]) -> int:
    """Replace this process with the real compiler (fds, the jobserver's too, stay open)."""
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execvp(argv[0], argv)
    except OSError as e:
        sys.stderr.write(f"kache: error: cannot run {argv[0]}: {e.strerror}\n")
        return 127
    raise AssertionError("unreachable")


def run(argv: list[str]) -> int:
    """Handle one compiler call; ``argv`` is ``[compiler, *args]``."""
    started = time.monotonic()
    try:
        from kache.engine import argv as argvmod
        from kache.engine.decide import is_disabled, is_probe

        call = argvmod.parse(argv)
        reason = argvmod.passthrough_reason(call)
    except Exception:  # noqa: BLE001 - an argv kache cannot read is rustc's business
        return exec_compiler(argv)
    if is_probe(reason):  # cargo's probes (-vV, --print, stdin) never touch settings or the store
        return exec_compiler(argv)
    store: str | None = None
    try:
        from kache.engine.notices import warn_once
        from kache.errors import SettingsError
        from kache.settings import load_checked

        if is_disabled():
            return _pass_through(call, argv)
        try:
            settings = load_checked()
        except SettingsError as e:
            warn_once("invalid configuration: " + "; ".join(e.problems), store=_store_anyway())
            return _pass_through(call, argv)
        store = settings.converted("cache.local_store")
        if settings["cache.daemon_hits"]:
            from kache.wrapper.daemon_hit import served_by_daemon

            if served_by_daemon(argv, settings, started):
                return 0
        from kache.engine.handle import PASSTHROUGH, handle
        from kache.wrapper import daemon_remote

        status = handle(call, argv, settings, started, daemon_remote)
        return exec_compiler(argv) if status == PASSTHROUGH else status
    except Exception as e:  # noqa: BLE001 - nothing in kache may break a build
        try:  # notices is standard library only: it works when the engine itself failed to import
            from kache.engine.notices import warn_once

            warn_once(f"internal error ({type(e).__name__}: {e})", store=store)
        except Exception:  # noqa: BLE001
            pass
    return _pass_through(call, argv)


def _pass_through(call: object, argv: list[str]) -> int:
    """Run rustc as if kache were absent (its outputs that share a blob's inode unlinked first)."""
    try:
        from kache.engine.outputs import unlink_expected_outputs

        unlink_expected_outputs(call)
    except Exception:  # noqa: BLE001 - rustc runs whatever kache's state
        pass
    return exec_compiler(argv)


def _store_anyway() -> str | None:
    """The store a configuration names even when another of its settings is invalid (where
    kache.log goes), or None."""
    try:
        from kache.settings import load

        path = load().converted("cache.local_store")
    except Exception:  # noqa: BLE001 - the default cache dir takes the warning
        return None
    return path if isinstance(path, str) and os.path.isabs(path) else None
