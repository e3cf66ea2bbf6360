"""Each entry's texts in ``kache list``, as the index keeps them.

The ``--json`` object (``EntryInfo.to_json()`` without ``files``) is written once, when
the entry is recorded, in three parts around the two values a hit changes: ``hits`` (an
integer column) and ``last_used`` (kept beside its number as ``json_used``, the text
``iso`` makes, which every write of ``last_used`` writes too). A listing is then one
concatenation per entry, read from the listing index (``TEXT_SQL``): ~0.2 s for 100,000
entries on a slow 2-core machine, where SQLite formatting each object from its columns
(``printf``, ``json_quote``, ``datetime``) took ~0.45 s. The table's size column
(``units.format_size``) is kept the same way, as ``size_text``.

Imported by the index on the wrapper's hot path: ``time`` and ``quickjson`` only.
"""

from __future__ import annotations

import time

from kache import quickjson

__all__ = ["iso", "texts", "TEXT_SQL", "COLUMNS", "display_name", "package_of", "BUILD_SCRIPT_SUFFIX",
           "DISPLAY_NAME_SQL", "PACKAGE_SQL"]

# The columns ``texts`` fills, in its order; ``TEXT_SQL`` reads the first four.
COLUMNS = ("json_head", "json_mid", "json_used", "json_tail", "size_text")
TEXT_SQL = "json_head || hits || json_mid || json_used || json_tail"


# Build scripts are all crates named ``build_script_build`` (``build_script_<stem>``):
# they are shown by the package they belong to (cargo's CARGO_PKG_NAME, recorded in
# the entry's meta and in the event as ``package``; display data only, not keyed).
BUILD_SCRIPT_PREFIX = "build_script_"
BUILD_SCRIPT_SUFFIX = " (build script)"
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_")
# a damaged meta (not JSON) reads as no package, not as an error of the whole query
PACKAGE_SQL = "(CASE WHEN json_valid(meta) THEN json_extract(meta, '$.package') END)"
DISPLAY_NAME_SQL = (
    # a build script's row (and only one's: CASE) is looked up for its meta's package;
    # every other row is read from the listing's covering index alone
    f"(CASE WHEN crate_name GLOB '{BUILD_SCRIPT_PREFIX}*' THEN coalesce((SELECT p || '{BUILD_SCRIPT_SUFFIX}' FROM "
    f"(SELECT {PACKAGE_SQL} AS p FROM entries AS e2 WHERE e2.key = entries.key) WHERE typeof(p) = 'text' "
    "AND length(p) BETWEEN 1 AND 64 AND p NOT GLOB '*[^A-Za-z0-9_-]*'), crate_name) ELSE crate_name END)")
"""SQL for :func:`display_name` of a row of ``entries``."""


def package_of(crate: str, package: object) -> str | None:
    """The package of a build-script crate when ``package`` is a plausible package name
    (a forged or damaged value is not shown); None otherwise."""
    if (crate.startswith(BUILD_SCRIPT_PREFIX) and isinstance(package, str) and 0 < len(package) <= 64
            and _NAME_CHARS.issuperset(package)):
        return package
    return None


def display_name(crate: str, package: object) -> str:
    """How a crate is shown: a build script as ``<package> (build script)`` when its
    package is known (entries and events from before it was recorded keep the crate
    name), anything else as its crate name."""
    pkg = package_of(crate, package)
    return crate if pkg is None else pkg + BUILD_SCRIPT_SUFFIX


def iso(t: float | None) -> str | None:
    """Unix time → ISO 8601 in UTC, to the second (``2024-05-01T12:00:00+00:00``)."""
    return None if t is None else time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(t))


def texts(crate_name: str, crate_types: str, target: str, profile: str, size: int, created: float,
          compile_ms: int, key: str, last_used: float, package: object = None) -> tuple[str, str, str, str, str]:
    """The values of ``COLUMNS`` for an entry. ``head + str(hits) + mid + used + tail``
    is the JSON text of ``EntryInfo.to_json()``, keys in its order and byte for byte as
    ``json.dumps`` writes it (``crate_types`` is stored comma-separated; empty names are
    dropped, as ``EntryInfo`` drops them; a build script's ``package`` as
    :func:`package_of` accepts it)."""
    from kache.units import format_size

    q, num = quickjson.quote, quickjson.dumps
    types = ", ".join(q(t) for t in crate_types.split(",") if t)
    head = (f'{{"crate": {q(crate_name)}, "crate_types": [{types}], "target": {q(target)}, '
            f'"profile": {q(profile)}, "size": {num(size)}, "hits": ')
    mid = f', "created": {q(iso(created) or "")}, "last_used": "'
    pkg = package_of(crate_name, package)
    tail = (f'", "compile_ms": {num(compile_ms)}, "key": {q(key)}'
            + ("" if pkg is None else f', "package": {q(pkg)}') + "}")
    return head, mid, iso(last_used) or "", tail, format_size(size)
