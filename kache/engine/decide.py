"""What to do with one rustc call, given the settings: the one place that decides.

Both ways a call reaches the engine ask :func:`decide`: the wrapper's own process
(:func:`kache.engine.handle.handle`) and the daemon serving a hit for it
(:func:`kache.engine.hit.serve_hit`). A :class:`Plan` says whether the call passes
through to rustc (and why), whether its stale incremental state is removed first, and
whether kache looks for a recorded compile or compiles anew (``KACHE_RECACHE``).
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing costs ~11 ms to import; annotations are strings here

from kache.engine import argv as argvmod
from kache.settings import env_flag

if TYPE_CHECKING:
    from collections.abc import Mapping

    from kache.settings import Settings

__all__ = ["Plan", "decide", "is_probe", "is_disabled", "drops_incremental", "PROBES"]

PROBES = frozenset({"version", "print", "stdin", "help", "no-source", "probe", "explain"})
"""Pass-through reasons of cargo's probes (``-vV``, ``--print``, stdin…): rustc answers them
at once, before kache reads its settings or opens the store."""


class Plan:
    """The decision about one call."""

    __slots__ = ("passthrough", "clean_incremental", "look_up", "snapshots", "keep_incremental")

    def __init__(self, passthrough: str | None = None, *, clean_incremental: bool = False, look_up: bool = True,
                 snapshots: bool = False, keep_incremental: bool = False) -> None:
        self.passthrough = passthrough
        """Why rustc runs as if kache were absent (``disabled``, or a reason of
        :func:`kache.engine.argv.passthrough_reason`); None when kache handles the call."""
        self.clean_incremental = clean_incremental
        """Remove the crate's incremental state before anything else (``drop`` mode)."""
        self.look_up = look_up
        """Look for a recorded compile; False under ``KACHE_RECACHE`` (compile and record anew)."""
        self.snapshots = snapshots
        """Keep the crate's incremental session with its entry and restore it on a hit (``auto``)."""
        self.keep_incremental = keep_incremental
        """Compile with cargo's ``-C incremental`` (``auto`` and ``keep``); dropped under ``drop``."""


def is_probe(reason: str | None) -> bool:
    """Whether a pass-through reason is one of cargo's probes (:data:`PROBES`)."""
    return reason in PROBES


def is_disabled(env: Mapping[str, str] | None = None) -> bool:
    """``KACHE_DISABLED``: every call runs rustc as if kache were absent."""
    return env_flag("KACHE_DISABLED", env)


def drops_incremental(settings: Settings) -> bool:
    """Whether kache removes cargo's incremental state rather than keeping it (``cache.incremental
    = "drop"`` with ``cache.clean_incremental``): kache compiles without it, so it would go stale."""
    return settings["cache.incremental"] == "drop" and bool(settings["cache.clean_incremental"])


def decide(call: argvmod.RustcCall, settings: Settings, env: Mapping[str, str] | None = None) -> Plan:
    """The plan for ``call`` under ``settings`` and the caller's environment ``env``."""
    if is_disabled(env):
        return Plan("disabled")
    reason = argvmod.passthrough_reason(call, bool(settings["cache.cache_executables"]))
    if reason is not None:
        return Plan(reason)
    incremental = bool(call.incremental)
    mode = settings["cache.incremental"]
    return Plan(clean_incremental=incremental and drops_incremental(settings),
                look_up=not env_flag("KACHE_RECACHE", env),
                snapshots=incremental and mode == "auto",
                keep_incremental=incremental and mode != "drop")
