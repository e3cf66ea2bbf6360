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

__all__ = ["iso", "texts", "TEXT_SQL", "COLUMNS"]

# The columns ``texts`` fills, in its order; ``TEXT_SQL`` reads the first four.
COLUMNS = ("json_head", "json_mid", "json_used", "json_tail", "size_text")
TEXT_SQL = "json_head || hits || json_mid || json_used || json_tail"


def iso(t: float | None) -> str | None:
    """Unix time → ISO 8601 in UTC, to the second (``2024-05-01T12:00:00+00:00``)."""
    return None if t is None else time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(t))


def texts(crate_name: str, crate_types: str, target: str, profile: str, size: int, created: float,
          compile_ms: int, key: str, last_used: float) -> tuple[str, str, str, str, str]:
    """The values of ``COLUMNS`` for an entry. ``head + str(hits) + mid + used + tail``
    is the JSON text of ``EntryInfo.to_json()``, keys in its order and byte for byte as
    ``json.dumps`` writes it (``crate_types`` is stored comma-separated; empty names are
    dropped, as ``EntryInfo`` drops them)."""
    from kache.units import format_size

    q, num = quickjson.quote, quickjson.dumps
    types = ", ".join(q(t) for t in crate_types.split(",") if t)
    head = (f'{{"crate": {q(crate_name)}, "crate_types": [{types}], "target": {q(target)}, '
            f'"profile": {q(profile)}, "size": {num(size)}, "hits": ')
    mid = f', "created": {q(iso(created) or "")}, "last_used": "'
    tail = f'", "compile_ms": {num(compile_ms)}, "key": {q(key)}}}'
    return head, mid, iso(last_used) or "", tail, format_size(size)
