"""Wrapper mode: the process shell for every rustc call cargo makes.

``run(argv)`` takes the call in and gives an exit code out: it asks the daemon to serve a
hit (:mod:`kache.wrapper.daemon_hit`), else hands the call to the engine
(:func:`kache.engine.handle.handle`, which reaches the remote through the daemon,
:mod:`kache.wrapper.daemon_remote`), and replaces itself with the real compiler whenever
the engine says so. It never lets kache break a build: any problem with kache itself,
its store ends in running the real compiler exactly as cargo asked, after at most one
warning per build (:func:`kache.engine.notices.warn_once`). An invalid setting is
ignored with a warning, or turns caching off where falling back would be unsafe
(:func:`kache.settings.degrade`). Once the real
compiler has run, its exit status is what cargo gets, whatever happens while recording.
"""

from __future__ import annotations

import os
import sys
import time

__all__ = ["run", "exec_compiler", "die_of"]


def exec_compiler(argv: list[str]) -> int:
    """Replace this process with the real compiler (fds, the jobserver's too, stay open)."""
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        import _signal  # type: ignore[import-not-found]  # `signal` imports enum

        for sig in (_signal.SIGPIPE, _signal.SIGXFSZ):  # CPython ignores them; rustc must not
            _signal.signal(sig, _signal.SIG_DFL)
    except (ImportError, OSError, ValueError):
        pass
    try:
        os.execvp(argv[0], argv)
    except OSError as e:
        sys.stderr.write(f"kache: error: cannot run {argv[0]}: {e.strerror}\n")
        return 127
    raise AssertionError("unreachable")


def die_of(sig: int) -> None:
    """End this process by signal ``sig`` (the compiler died of it: cargo says so, not an
    exit status); returns only if the signal does not kill."""
    import _signal  # `signal` imports enum

    try:
        _signal.signal(sig, _signal.SIG_DFL)
    except (OSError, ValueError):
        pass  # SIGKILL and SIGSTOP have no handler to reset
    try:
        os.kill(os.getpid(), sig)
    except (OSError, ValueError):
        pass


def run(argv: list[str], started: float | None = None) -> int:
    """Handle one compiler call; ``argv`` is ``[compiler, *args]``; ``started``: when the
    call began (a client of the daemon's runner started before this process)."""
    started = time.monotonic() if started is None else started
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
        from kache.engine import notices
        from kache.settings import load_checked

        if is_disabled():
            from kache.settings import env_flag_problem

            problem = env_flag_problem("KACHE_DISABLED")  # KACHE_DISABLED=y is set, and said so
            if problem:
                notices.warn_once(f"{problem}; taken as set (true): kache is off", suffix="")
            return _pass_through(call, argv)
        settings = load_checked()
        store = settings.converted("cache.local_store")
        for warning in settings.warnings:  # each said once per build (notices.warn_once)
            notices.warn_once(warning, suffix="", store=store)
        if settings.caching_off:  # an unsafe setting: said above
            _decision(store, call, "passthrough (caching is off)", started)
            return _pass_through(call, argv)
        if settings["cache.daemon_hits"] and not notices.run_for_client():  # the runner's: declined already
            from kache.wrapper.daemon_hit import served_by_daemon

            if served_by_daemon(argv, settings, started):
                _decision(store, call, "local_hit (served by the daemon)", started)
                return 0
        from kache.engine.handle import PASSTHROUGH, handle
        from kache.wrapper import daemon_remote

        status = handle(call, argv, settings, started, daemon_remote)
        _decision(store, call, None, started)
        return exec_compiler(argv) if status == PASSTHROUGH else status
    except Exception as e:  # noqa: BLE001 - nothing in kache may break a build
        try:  # notices is standard library only: it works when the engine itself failed to import
            from kache.engine.notices import warn_once

            warn_once(f"internal error ({type(e).__name__}: {e})", store=store)
            _decision(store, call, f"passthrough (internal error: {type(e).__name__})", started)
        except Exception:  # noqa: BLE001
            pass
    return _pass_through(call, argv)


def _decision(store: str | None, call: object, outcome: str | None, started: float) -> None:
    """With ``KACHE_LOG=kache=debug``, one line per call in ``kache.log``: the crate, what
    happened and why, the key's first characters, the time. ``outcome`` None: the
    engine's event says (the last one this process wrote)."""
    from kache.engine import notices

    if notices.log_level() > 10:
        return
    from kache.store import events

    ev = events.last if outcome is None else None
    crate = getattr(call, "crate_name", None) or "?"
    ms = (time.monotonic() - started) * 1000
    if ev is not None:
        reason = ev.get("reason")
        outcome = str(ev.get("outcome")) + (f" ({reason})" if reason else "")
        if ev.get("key"):
            outcome += f" key {ev['key']}"
        if ev.get("compile_ms") is not None:
            outcome += f", rustc {ev['compile_ms']} ms"
    by = ", run by the daemon's runner" if notices.run_for_client() else ""
    notices.log_line(store, "DEBUG", f"{crate}: {outcome or 'unknown'} in {ms:.1f} ms{by}")


def _pass_through(call: object, argv: list[str]) -> int:
    """Run rustc as if kache were absent (its outputs that share a blob's inode unlinked first)."""
    try:
        from kache.engine.outputs import unlink_expected_outputs

        unlink_expected_outputs(call)
    except Exception:  # noqa: BLE001 - rustc runs whatever kache's state
        pass
    return exec_compiler(argv)
