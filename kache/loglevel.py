"""The one reader of ``KACHE_LOG`` (``kache=debug``, ``info``, ``warn``, ``error``, ``off``).

Standard library only and without ``logging`` (the wrapper reads it on every call):
levels are ``logging``'s numbers. The daemon's log, the wrapper's ``kache.log`` and the
CLI's stderr all take their level from here; unset, it is the schema's default
(``kache=info``: the daemon logs what it does, the wrapper only its warnings).
"""

from __future__ import annotations

__all__ = ["DEBUG", "INFO", "WARNING", "ERROR", "OFF", "DEFAULT", "level"]

DEBUG, INFO, WARNING, ERROR, OFF = 10, 20, 30, 40, 60
DEFAULT = INFO
"""The level when ``KACHE_LOG`` is unset or says nothing readable (the schema's default
of ``KACHE_LOG``; ``tests/test_settings.py`` checks they agree)."""

_LEVELS = {"error": ERROR, "warn": WARNING, "warning": WARNING, "info": INFO, "debug": DEBUG,
           "trace": DEBUG, "off": OFF}


def level(text: str | None) -> int:
    """The level of the ``kache`` logger from ``KACHE_LOG``'s text.

    A ``kache=<level>`` directive (or ``kache.<module>=``, ``kache::…=``) wins over a bare
    level; other crates' directives (``hyper=debug``) are not kache's; anything
    unreadable is :data:`DEFAULT`.
    """
    bare = named = None
    for part in (text or "").split(","):
        name, eq, value = part.strip().partition("=")
        if eq:
            if name.strip() == "kache" or name.strip().startswith(("kache.", "kache::")):
                named = _LEVELS.get(value.strip().lower(), named)
        elif name:
            bare = _LEVELS.get(name.lower(), bare)
    return named if named is not None else bare if bare is not None else DEFAULT
