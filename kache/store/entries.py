"""Read-only views of the entries: listing (``kache list``) and ``kache why-miss``.

Crate names compare with ``-`` and ``_`` alike: cargo's package ``proc-macro2`` is the
rustc crate ``proc_macro2``.

why-miss compares the crate's newest entry with the one of its other entries whose
key *components* (one 16-hex digest per labelled field, recorded in ``meta``) differ
least, and names each differing component in plain words. A component present in one
entry and not the other counts as differing (a source file added, an env var unset).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from kache import units
from kache.store import events, listing
from kache.store.listing import iso
from kache.store.store import Store

__all__ = ["EntryInfo", "ComponentDiff", "WhyMiss", "Table", "TABLE_HEADERS", "list_entries", "list_json", "list_table",
           "why_miss", "describe_component", "crate_key", "iso", "known_names", "entries_named"]

SORTS = ("name", "size", "hits", "age")


def crate_key(name: str) -> str:
    """The form crate names compare in (``proc-macro2`` → ``proc_macro2``)."""
    return name.replace("-", "_")


def known_names(store_root: str) -> list[str]:
    """The crate names of the store's entries, sorted, read without writing anything (for
    shell completion); [] when there is no index."""
    import os
    import sqlite3

    from kache.store import layout

    path = layout.index_path(store_root)
    if not os.path.isfile(path):
        return []
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=0.5)
    try:
        crates = {r[0] for r in db.execute("SELECT DISTINCT crate_name FROM entries")}
        packages = {r[0] for r in db.execute(
            f"SELECT DISTINCT {listing.DISPLAY_NAME_SQL} FROM entries WHERE crate_name GLOB 'build_script_*'")}
    finally:
        db.close()
    # a build script completes as its package's name (why-miss and list take it)
    names = {c for c in crates if not c.startswith(listing.BUILD_SCRIPT_PREFIX)}
    names |= {p[:-len(listing.BUILD_SCRIPT_SUFFIX)] for p in packages if p.endswith(listing.BUILD_SCRIPT_SUFFIX)}
    return sorted(names)


def entries_named(store: Store, name: str) -> tuple[str, list[Any]]:
    """(the name to show, the entries newest first) of ``name``: a crate name, or a
    build script as ``<package> (build script)``, or a package name that no crate has
    whose build script is cached (``-``/``_`` alike)."""
    suffix = listing.BUILD_SCRIPT_SUFFIX
    if not name.endswith(suffix):
        entries = store.entries_like(name)
        if entries:
            return name, entries
    package = name[:-len(suffix)] if name.endswith(suffix) else name
    scripts = store.build_script_entries(package)
    if scripts:  # as the package spells itself
        return listing.display_name(scripts[0].crate_name, scripts[0].meta.get("package")), scripts
    if name.endswith(suffix):
        return name, []
    return name, []


@dataclass
class EntryInfo:
    """One entry as listed; ``files`` only in a crate's detailed listing."""

    key: str
    crate: str
    crate_types: list[str]
    target: str
    profile: str
    size: int
    created: float
    last_used: float
    hits: int
    compile_ms: int
    files: list[dict[str, Any]] | None = None
    package: str | None = None
    """A build script's package, when known (a crate's own listing and why-miss)."""

    @classmethod
    def from_row(cls, row: Any) -> EntryInfo:
        return cls(key=row["key"], crate=row["crate_name"],
                   crate_types=[t for t in row["crate_types"].split(",") if t], target=row["target"],
                   profile=row["profile"], size=row["size"], created=row["created"],
                   last_used=row["last_used"], hits=row["hits"], compile_ms=row["compile_ms"])

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "crate": self.crate, "crate_types": self.crate_types, "target": self.target,
            "profile": self.profile, "size": self.size, "hits": self.hits, "created": iso(self.created),
            "last_used": iso(self.last_used), "compile_ms": self.compile_ms, "key": self.key,
        }
        if self.package is not None:
            doc["package"] = self.package
        if self.files is not None:
            doc["files"] = self.files
        return doc

    @property
    def shown(self) -> str:
        """The name to show: a build script by its package."""
        return listing.display_name(self.crate, self.package)


def list_entries(store: Store | None, crate: str | None = None, sort: str = "name") -> list[EntryInfo]:
    """Entries, sorted by ``name``, ``size`` (largest first), ``hits`` (most first) or
    ``age`` (most recently used first). With ``crate``, that crate's entries with their
    files. ``store`` None (no store yet) lists nothing."""
    if sort not in SORTS:
        raise ValueError(f"unknown sort {sort!r}; expected one of {', '.join(SORTS)}")
    if store is None:
        return []
    if crate is None:
        infos = [EntryInfo.from_row(r) for r in store.summaries(None, order=sort)]
        packages = store.build_script_packages()
        for info in infos:
            info.package = listing.package_of(info.crate, packages.get(info.key))
        return infos
    _, entries = entries_named(store, crate)
    infos = []
    for e in entries:  # newest first: the order of "name" within one crate
        info = _info(e)
        info.files = [{"name": f.get("name"), "size": f.get("size"), "kind": f.get("kind"),
                       "hash": f.get("hash")} for f in e.meta.get("files", [])]
        infos.append(info)
    order: dict[str, Callable[[EntryInfo], Any]] = {"size": lambda i: -i.size, "hits": lambda i: -i.hits,
                                                     "age": lambda i: -i.last_used}
    if sort in order:
        infos.sort(key=order[sort])
    return infos


def list_json(store: Store | None, sort: str = "name") -> Iterable[str]:
    """Every entry as the JSON text of ``EntryInfo.to_json()``, in ``list_entries`` order,
    made as it is iterated.

    For ``kache list --json`` on a large store: the index keeps each entry's text in
    parts (``kache.store.listing``), so a listing is one concatenation per entry read
    from the listing index: 100,000 entries in ~0.2 s on a slow 2-core machine, against
    ~0.45 s for SQLite formatting each from its columns and ~2.4 s for an ``EntryInfo``
    per entry.
    """
    if sort not in SORTS:
        raise ValueError(f"unknown sort {sort!r}; expected one of {', '.join(SORTS)}")
    if store is None:
        return []

    def expression(query: Callable[..., list[Any]]) -> tuple[str, tuple[Any, ...]] | None:
        return (listing.TEXT_SQL, ()) if query("SELECT 1 FROM entries LIMIT 1") else None

    return store.summary_texts(expression, order=sort)


TABLE_HEADERS = ("crate", "types", "profile", "size", "hits", "last used", "key")
# The widest age ``units.format_ago`` writes below its largest unit (a year): each
# smaller unit's count stops one short of the next unit. Not wider than "last used".
AGO_WIDTH_BELOW_A_YEAR = max(len(units.format_ago(larger - 1)) for larger, _ in units.AGO_UNITS)


@dataclass
class Table:
    """``kache list``'s table: the width of each column but the last (at least its
    header's), the lines, aligned to them and made as they are iterated (the read
    snapshot held until the last), and the number and total size of the entries."""

    widths: list[int]
    lines: Iterable[str]
    entries: int
    size: int


def list_table(store: Store | None, sort: str = "name", now: float | None = None) -> Table | None:
    """The lines of ``kache list`` (``TABLE_HEADERS``: crate, types, profile, size, hits,
    how long ago it was last used at ``now``, the key's first 12 digits) in
    ``list_entries`` order; None when there are no entries.

    SQLite writes each line from the table's index (``entries_table``, without the
    ``--json`` texts), padded to widths it measured first in the same snapshot: a table
    of 100,000 entries streams in ~0.3 s and ~22 MB, where formatting rows in Python took
    ~0.7 s and ~113 MB. Sizes are the index's ``size_text`` (``units.format_size``), ages
    written as ``units.format_ago`` writes them (``_ago_sql``).
    """
    if sort not in SORTS:
        raise ValueError(f"unknown sort {sort!r}; expected one of {', '.join(SORTS)}")
    if store is None:
        return None
    when = time.time() if now is None else now
    name = listing.DISPLAY_NAME_SQL  # a build script by its package
    columns = [name, "crate_types", "profile", "size_text", "hits", _ago_sql("?1", "last_used")]  # ?1: now
    aggregates = ["count(*)", "total(size)", f"max(length({name}))", "max(length(crate_types))",
                  "max(length(profile))", "max(length(size_text))", "length(max(hits))", "min(last_used)"]
    found: list[Any] = []  # entries, total size, widths

    def expression(query: Callable[..., list[Any]]) -> tuple[str, tuple[Any, ...]] | None:
        [row] = query(f"SELECT {', '.join(aggregates)} FROM entries")
        if not row[0]:
            return None
        entries, size, *widths, oldest = row
        # No age under a year is written wider than its header (AGO_WIDTH_BELOW_A_YEAR),
        # and in years the oldest entry's is the widest: no text is made per entry.
        widths.append(max(AGO_WIDTH_BELOW_A_YEAR, len(units.format_ago(when - oldest))))
        widths = [max(len(h), w) for h, w in zip(TABLE_HEADERS, widths, strict=False)]  # "key" is not padded
        found.extend([entries, int(size), widths])
        # `!`: widths in characters, not bytes (a crate named in any script lines up)
        template = "  ".join(["%-!*s"] * len(columns) + ["%s"])
        padded = ", ".join(f"?{n}, {c}" for n, c in enumerate(columns, 2))  # ?2 … ?7: the widths
        return f"printf('{template}', {padded}, substr(key, 1, 12))", (when, *widths)

    lines = store.summary_texts(expression, order=sort)
    if not found:
        return None
    entries, size, widths = found
    return Table(widths=widths, lines=lines, entries=entries, size=size)


def _ago_sql(now: str, then: str) -> str:
    """SQL for :func:`units.format_ago` of ``now - then`` (two SQL expressions in seconds).
    Each unit's test is the one ``format_ago`` makes, on the unrounded difference; the
    whole number of seconds is made only for the unit found (~25 ms less at 100,000)."""
    age = f"({now} - {then})"
    cases = " ".join(f"WHEN {age} >= {size} THEN (CAST({age} AS INTEGER) / {size}) || '{unit} ago'"
                     for size, unit in units.AGO_UNITS)
    return f"(CASE {cases} ELSE CAST(max(0, {age}) AS INTEGER) || 's ago' END)"


# --------------------------------------------------------------------------- why-miss

# Label prefix → (kind, what a difference means). Labels are KeyBuilder's
# (kache.engine.key): the cheap key's fields, then source:<path> and env-dep:<NAME>.
_KINDS: list[tuple[str, str, str]] = [
    ("version", "key-version", "kache's key recipe changed (a kache upgrade)"),
    ("toolchain", "toolchain", "compiler changed (another rustc version or binary)"),
    ("args", "flags", "compiler flags changed (profile, features, RUSTFLAGS, cfg)"),
    ("extern:", "dependency", "dependency changed"),
    ("lib:", "native-lib", "native library changed"),
    ("native-dir:", "native-lib", "a file of a native library directory changed (build script output)"),
    ("linker", "toolchain", "linker program changed (-C linker)"),
    ("link-arg:", "native-lib", "a file named by the link arguments changed"),
    ("link-lib:", "native-lib", "a library named by the link arguments changed"),
    ("clippy-conf", "clippy-conf", "clippy.toml changed, appeared or went away"),
    ("remap", "remap", "where paths are remapped changed (a workspace member vs another package)"),
    ("local:", "local", "the outputs hold this machine's paths, and they differ here"),
    ("target-spec", "target-spec", "target specification file changed"),
    ("env-dep:", "env-dep", "env!/option_env! value read by the crate changed"),
    ("env:", "env", "environment variable changed"),
    ("extra-env:", "extra-env", "declared extra environment variable changed (cache.extra_inputs)"),
    ("extra-file:", "extra-file", "declared extra input file changed (cache.extra_inputs)"),
    ("salt", "salt", "key salt changed (cache.key_salt)"),
    ("source:", "source", "source file changed"),
]

# Plain words for the pass-through reasons of kache.engine.argv and cache.Uncacheable.
PASSTHROUGH_WORDS = {
    "version": "a version query",
    "help": "a help query",
    "print": "a --print query (cargo's probe)",
    "stdin": "the source comes from stdin",
    "no-source": "no source file on the command line",
    "multiple-sources": "more than one source file",
    "probe": "cargo's compiler probe",
    "explain": "an --explain query",
    "emit": "it emits output kinds kache does not store (asm, llvm-ir, mir, …)",
    "no-out-dir": "no --out-dir",
    "executable": "it links an executable, test or dylib (set cache.cache_executables to cache these)",
    "coverage": "coverage instrumentation is on",
    "target-cpu-native": "-C target-cpu=native depends on this machine",
    "split-debuginfo": "unpacked split debuginfo leaves files kache does not track",
    "unknown-argument": "an argument kache does not understand (rustc decides)",
    "unusual-argument": "an argument with a NUL or a byte that is not UTF-8",
    "output-path": "an output is written outside --out-dir",
    "missing-extern": "a dependency (--extern) file is missing",
    "native-library": "a thin archive among its native libraries cannot be read",
    "compiler-identity": "the compiler chain could not be identified (a program missing, or -vV failed)",
}

MISS_WORDS = {
    "compile-failed": "rustc failed",
    "input-changed-during-compile": "a source file changed while rustc ran",
    "input-missing": "an input rustc reported is gone",
    "output-missing": "an output rustc should have written is missing",
    "no-dep-info": "cargo did not ask for dep-info",
}


def describe_component(label: str, in_latest: bool = True, in_nearest: bool = True) -> tuple[str, str]:
    """(kind, plain-words explanation) of a differing key component."""
    for prefix, kind, words in _KINDS:
        if label == prefix or (prefix.endswith(":") and label.startswith(prefix)):
            subject = label[len(prefix):] if prefix.endswith(":") else ""
            if kind == "source":
                words = ("source file added" if not in_nearest else
                         "source file no longer read" if not in_latest else words)
            elif not in_nearest:
                words += " (new in the latest entry)"
            elif not in_latest:
                words += " (absent from the latest entry)"
            return kind, f"{words}: {subject}" if subject else words
    return "other", "key component changed"


@dataclass
class ComponentDiff:
    label: str
    kind: str
    explanation: str
    latest: str | None
    """Digest in the newest entry (None: the component is not in it)."""
    nearest: str | None
    changes: list[str] = field(default_factory=list)
    """For the arguments: each flag that differs, in words (kache.store.flagdiff)."""

    def to_json(self) -> dict[str, Any]:
        return {"label": self.label, "kind": self.kind, "explanation": self.explanation,
                "latest": self.latest, "nearest": self.nearest, "changes": self.changes}


@dataclass
class WhyMiss:
    """The answer to ``kache why-miss CRATE``; ``notes`` are sentences for a person."""

    crate: str
    entries: int
    latest: EntryInfo | None = None
    nearest: EntryInfo | None = None
    differences: list[ComponentDiff] = field(default_factory=list)
    last_event: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "crate": self.crate,
            "entries": self.entries,
            "latest": None if self.latest is None else self.latest.to_json(),
            "nearest": None if self.nearest is None else self.nearest.to_json(),
            "differences": [d.to_json() for d in self.differences],
            "last_event": self.last_event,
            "notes": self.notes,
        }


def _last_event(store_root: str, crate: str) -> dict[str, Any] | None:
    """The last event of ``crate`` (a name as ``entries_named`` shows it)."""
    suffix = listing.BUILD_SCRIPT_SUFFIX
    want = crate_key(crate[:-len(suffix)] if crate.endswith(suffix) else crate)
    last = None
    for ev in events.read(store_root):
        name = ev.get("crate")
        if not isinstance(name, str):
            continue
        if crate.endswith(suffix):
            package = listing.package_of(name, ev.get("package"))
            if package is not None and crate_key(package) == want:
                last = ev
        elif crate_key(name) == want:
            last = ev
    return last


def _info(entry: Any) -> EntryInfo:
    return EntryInfo(key=entry.key, crate=entry.crate_name,
                     crate_types=[t for t in entry.crate_types.split(",") if t], target=entry.target,
                     profile=entry.profile, size=entry.size, created=entry.created,
                     last_used=entry.last_used, hits=entry.hits, compile_ms=entry.compile_ms,
                     package=listing.package_of(entry.crate_name, entry.meta.get("package")))


def _diff(a: dict[str, str], b: dict[str, str]) -> list[str]:
    return sorted(label for label in a.keys() | b.keys() if a.get(label) != b.get(label))


def why_miss(store: Store | None, crate: str, store_root: str | None = None) -> WhyMiss:
    """Compare the crate's newest entry with its nearest other entry, and say what the
    event log knows about the crate's last call. ``store`` None: no store yet."""
    root = store_root if store_root is not None else (store.root if store is not None else None)
    crate, entries = entries_named(store, crate) if store is not None else (crate, [])
    report = WhyMiss(crate=crate, entries=len(entries))
    report.last_event = _last_event(root, crate) if root is not None else None
    ev = report.last_event
    if ev is not None:
        outcome, reason = ev.get("outcome"), ev.get("reason")
        when = ""
        if isinstance(ev.get("t"), (int, float)):
            when = f" ({units.format_ago(time.time() - ev['t'])})"
        if outcome == "passthrough":
            words = PASSTHROUGH_WORDS.get(str(reason), str(reason or "unknown reason"))
            report.notes.append(f"the last call of {crate}{when} was not cacheable: {words} [{reason}]")
        elif outcome in ("local_hit", "remote_hit", "prefetch_hit"):
            report.notes.append(f"the last call of {crate}{when} was a hit ({outcome.replace('_', ' ')})")
        elif outcome == "miss" and reason:
            words = MISS_WORDS.get(str(reason), str(reason))
            report.notes.append(f"the last compile of {crate}{when} was not stored: {words} [{reason}]")
        elif outcome in ("miss", "dup"):
            report.notes.append(f"the last call of {crate}{when} was a miss; it was compiled and stored")
        elif outcome == "error":
            report.notes.append(f"the last call of {crate}{when} hit a store error: {reason or 'unknown'}")
    if not entries:
        if ev is None:
            report.notes.append(f"no cached entries and no recorded calls for {crate} "
                                "(check the name with `kache list`)")
        else:
            report.notes.append(f"{crate} has no cached entries")
        return report
    latest = entries[0]  # newest first
    report.latest = _info(latest)
    if len(entries) == 1:
        report.notes.append(f"{crate} has only one entry: there is nothing to compare it with")
        return report
    mine = latest.meta.get("components") or {}
    best = None
    best_diff: list[str] = []
    for other in entries[1:]:
        diff = _diff(mine, other.meta.get("components") or {})
        if best is None or len(diff) < len(best_diff):
            best, best_diff = other, diff
    assert best is not None
    theirs = best.meta.get("components") or {}
    report.nearest = _info(best)
    for label in best_diff:
        kind, words = describe_component(label, label in mine, label in theirs)
        comp = ComponentDiff(label, kind, words, mine.get(label), theirs.get(label))
        if label == "args":
            from kache.store.flagdiff import flag_changes

            comp.changes, whole = flag_changes(best.meta, latest.meta)
            if comp.changes:
                comp.explanation = "compiler flags changed: " + "; ".join(comp.changes)
                if not whole:
                    comp.changes.append("perhaps other flags too: these entries do not record their arguments")
                    comp.explanation += f" ({comp.changes[-1]})"
        report.differences.append(comp)
    if not best_diff:
        report.notes.append("no recorded key component differs from the nearest entry "
                            "(an entry from another kache version?)")
    return report
