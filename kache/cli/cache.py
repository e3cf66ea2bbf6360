"""``kache list``, ``stats``, ``why-miss``, ``gc``, ``purge``: the local store's commands.

Each opens the store named by the settings (``cache.local_store``), calls one function
of ``kache.store`` and prints the result. A store that does not exist yet is not an
error: it lists nothing, counts zero and has nothing to collect.
"""

from __future__ import annotations

import os
import sqlite3
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import click

from kache import settings as settings_mod
from kache import units
from kache.cli.completion import complete_crates
from kache.cli.output import echo_aligned, echo_json, echo_json_lines, echo_json_list, echo_table, warn
from kache.errors import KacheError
from kache.store import layout
from kache.store.store import Store, StoreError

__all__ = ["COMMANDS"]


def _settings() -> settings_mod.Settings:
    s = settings_mod.load_checked()
    for w in s.warnings:
        warn(w)
    return s


def _store_root(s: settings_mod.Settings) -> str:
    return str(s.local_store)


@contextmanager
def _open_store(root: str, what: str, *, recover: bool = False) -> Iterator[Store | None]:
    """The store at ``root``, or None when there is none yet (nothing is created).
    ``recover``: an index that does not open as one is moved aside and a new one
    started (``store.recovered`` says where it went), instead of an error."""
    if not os.path.exists(layout.index_path(root)):
        if os.path.exists(root) and not os.path.isdir(root):
            raise KacheError(f"{what} failed: the store {root} is not a directory; point cache.local_store "
                             "(KACHE_CACHE_DIR) at a directory")
        yield None
        return
    from kache.store.store import is_damage

    store = Store(root, create=recover)
    try:
        try:
            store.open()  # now, so a broken index is reported as such
            yield store
        except (StoreError, sqlite3.DatabaseError) as e:
            if is_damage(e):
                raise KacheError(f"{what} failed: the cache index {layout.index_path(root)} is damaged ({e}); "
                                 "`kache gc` or `kache doctor --fix` moves it aside and starts a new one") from None
            raise KacheError(f"{what} failed: {root}: {e}") from None
    finally:
        store.close()


def _interactive() -> bool:
    return sys.stdin.isatty()


def _duration(value: str | None, flag: str) -> float | None:
    if value is None:
        return None
    try:
        return units.parse_duration(value)
    except units.UnitError as e:
        raise click.BadParameter(str(e), param_hint=flag) from None


def _percent(rate: float | None) -> str:
    return "—" if rate is None else f"{rate * 100:.1f}%"


# --------------------------------------------------------------------------- list


@click.command("list")
@click.argument("crate", required=False, shell_complete=complete_crates)
@click.option("--sort", type=click.Choice(["name", "size", "hits", "age"]), default="name", show_default=True,
              help="Order: name, size (largest first), hits (most first), age (most recently used first).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def list_(crate: str | None, sort: str, as_json: bool) -> None:
    """List cached entries, or the entries of one crate.

    \b
    Example:
      kache list serde --sort hits
    """
    from kache.store.entries import TABLE_HEADERS, list_entries, list_json, list_table

    root = _store_root(_settings())
    if crate is None:
        with _open_store(root, "listing the cache") as store:
            if as_json:
                echo_json_lines(list_json(store, sort))
                return
            table = list_table(store, sort)
            if table is None:
                click.echo("the cache is empty (no entries yet: build something with RUSTC_WRAPPER=kache)")
                return
            echo_aligned(TABLE_HEADERS, table.widths, table.lines)
        click.echo(f"{table.entries} entries, {units.format_size(table.size)}")
        return
    with _open_store(root, "listing the cache") as store:
        infos = list_entries(store, crate, sort)
    if as_json:
        echo_json_list([i.to_json() for i in infos])
        return
    if not infos:
        click.echo(f"no cached entries for {crate}")
        return
    now = time.time()
    for n, i in enumerate(infos):
        if n:
            click.echo()
        click.echo(f"{i.shown}  {','.join(i.crate_types)}  {i.profile}"
                   + (f"  {i.target}" if i.target else "") + f"  key {i.key}")
        click.echo(f"  size {units.format_size(i.size)}, {i.hits} hits, compile time "
                   f"{units.format_duration(i.compile_ms / 1000)}")
        click.echo(f"  created {_local(i.created)} ({units.format_ago(now - i.created)}), "
                   f"last used {_local(i.last_used)} ({units.format_ago(now - i.last_used)})")
        for f in i.files or []:
            click.echo(f"    {f['name']}  {units.format_size(f['size'] or 0)}  {f['kind']}")


def _local(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


# --------------------------------------------------------------------------- stats


@click.command()
@click.option("--since", metavar="DUR", help="Count only events this recent (e.g. 24h).")
@click.option("-z", "--zero", is_flag=True,
              help="Zero the statistics: count from now on. The cached entries are kept.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def stats(since: str | None, zero: bool, as_json: bool) -> None:
    """Hits, misses, pass-throughs by reason, errors and time saved.

    Counts every call since the statistics were last zeroed (--zero), or since the
    oldest event of the log.

    \b
    Example:
      kache stats --since 24h
      kache stats --zero
    """
    from kache.store.stats import compute

    window = _duration(since, "--since")
    root = _store_root(_settings())
    if zero:
        if window is not None:
            raise click.UsageError("--zero and --since do not go together: --zero zeroes all statistics")
        _zero_stats(root, as_json)
        return
    st = compute(root, None if window is None else time.time() - window)
    if as_json:
        echo_json(st.to_json())
        return
    size = units.format_size
    scope = f" in the last {units.format_duration(window)}" if window is not None else ""
    if st.zeroed is not None and (window is None or st.zeroed > time.time() - window):
        scope = f" since the statistics were zeroed ({_local(st.zeroed)})"
    click.echo(f"calls{scope}: {st.calls}")
    o = st.outcomes
    click.echo(f"  hits         {st.hits:>8}   (local {o['local_hit']}, remote {o['remote_hit']}, prefetched {o['prefetch_hit']})")
    click.echo(f"  misses       {st.misses:>8}   (new {o['miss']}, duplicate {o['dup']})")
    for reason, n in st.miss_reasons.items():
        click.echo(f"    {reason:<30} {n:>6}")
    click.echo(f"  passthrough  {st.passthrough:>8}   (not cacheable)")
    for reason, n in st.passthrough_reasons.items():
        click.echo(f"    {reason:<30} {n:>6}")
    click.echo(f"  errors       {st.errors:>8}")
    for reason, n in st.error_reasons.items():
        click.echo(f"    {reason:<30} {n:>6}")
    click.echo(f"hit rate       {_percent(st.hit_rate)} of cacheable calls")
    click.echo(f"time saved     {units.format_duration(st.saved_ms / 1000)}")
    click.echo(f"restored       {size(st.bytes_restored)}; stored {size(st.bytes_stored)}")
    ht = st.hit_time()
    if ht:
        click.echo(f"hit time       mean {ht['mean']:.0f}ms, median {ht['median']:.0f}ms, p95 {ht['p95']:.0f}ms")
    click.echo(f"store          {st.entries} entries, {size(st.logical_bytes)} "
               f"({size(st.physical_bytes)} on disk, {size(st.dedup_saved_bytes)} saved by dedup)")
    if len(st.projects) > 1 or (st.projects and "" not in st.projects):
        click.echo()
        projects = sorted(st.projects.values(), key=lambda p: (-p.calls, p.root))
        echo_table(["project", "calls", "hits", "misses", "passthrough", "hit rate"],
                   [[p.root or "(not recorded)", str(p.calls), str(p.hits), str(p.misses), str(p.passthrough),
                     _percent(p.hit_rate)] for p in projects])


def _zero_stats(root: str, as_json: bool) -> None:
    from kache.store.stats import zero, zeroed_at

    try:
        before = zero(root)
    except StoreError as e:
        raise KacheError(str(e)) from None
    if as_json:
        from kache.store.listing import iso

        echo_json({"zeroed_at": iso(zeroed_at(root)), "zeroed": {
            "calls": before.calls, "hits": before.hits, "misses": before.misses, "passthrough": before.passthrough,
            "errors": before.errors, "time_saved_ms": before.saved_ms},
            "store": {"entries": before.entries, "logical_bytes": before.logical_bytes}})
        return
    def n(count: int, one: str, many: str) -> str:
        return f"{count} {one if count == 1 else many}"

    click.echo(f"statistics zeroed: {n(before.calls, 'call', 'calls')} ({n(before.hits, 'hit', 'hits')}, "
               f"{n(before.misses, 'miss', 'misses')}, {n(before.passthrough, 'pass-through', 'pass-throughs')}, "
               f"{n(before.errors, 'error', 'errors')}, {units.format_duration(before.saved_ms / 1000)} saved) "
               "no longer counted")
    click.echo(f"the cache keeps its {n(before.entries, 'entry', 'entries')} "
               f"({units.format_size(before.logical_bytes)}); `kache stats` counts from now on")


# --------------------------------------------------------------------------- why-miss


@click.command("why-miss")
@click.argument("crate", shell_complete=complete_crates)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def why_miss(crate: str, as_json: bool) -> None:
    """Show which part of the cache key differs from the nearest stored entry.

    Exits 1 when the crate has no cached entry (what the log knows of its last call is
    still shown).

    \b
    Example:
      kache why-miss serde_json
    """
    from kache.store.entries import why_miss as explain

    root = _store_root(_settings())
    with _open_store(root, "reading the cache") as store:
        report = explain(store, crate, store_root=root)
    if as_json:
        echo_json(report.to_json())
    else:
        for note in report.notes:
            click.echo(note)
    if report.entries == 0:
        raise SystemExit(1)
    if as_json or report.latest is None or report.nearest is None:
        return
    now = time.time()
    click.echo(f"latest entry  {report.latest.key[:12]} ({units.format_ago(now - report.latest.created)})")
    click.echo(f"nearest entry {report.nearest.key[:12]} ({units.format_ago(now - report.nearest.created)}), "
               f"{len(report.differences)} component(s) differ:")
    for d in report.differences:
        words = d.explanation.split(":", 1)[0] if d.changes else d.explanation
        click.echo(f"  {words}  [{d.label}: {d.nearest or 'absent'} -> {d.latest or 'absent'}]")
        for change in d.changes:
            click.echo(f"    {change}")


# --------------------------------------------------------------------------- gc


@click.command()
@click.option("--max-age", metavar="DUR",
              help="Also evict entries unused for this long (e.g. 30d); those used in the last two minutes stay.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def gc(max_age: str | None, as_json: bool) -> None:
    """Repair, evict least recently used entries down to local_max_size; remove orphans.

    Entries whose blobs are missing, truncated or altered are removed first. A damaged
    index is moved aside and a new one started: SQLite checks the whole file once a day,
    and whenever gc's own reads find it damaged.

    Over the limit, entries are evicted until the store is at 90% of it; entries used in
    the last two minutes are kept. Also removes blobs no entry uses, stale temp files and,
    with cache.incremental = "drop" and cache.clean_incremental, stale incremental sessions.

    \b
    Example:
      kache gc --max-age 30d
    """
    from kache.engine.decide import drops_incremental
    from kache.store.gc import TARGET_FRACTION, GcReport, checked_gc

    age = _duration(max_age, "--max-age")
    s = _settings()
    max_bytes = int(s.converted("cache.local_max_size"))
    clean_incremental = drops_incremental(s)
    root = _store_root(s)
    with _open_store(root, "garbage collection", recover=True) as store:
        if store is None:
            report = GcReport(max_bytes=max_bytes, target_bytes=int(max_bytes * TARGET_FRACTION), before_bytes=0)
        else:
            report = checked_gc(store, max_bytes, max_age=age, clean_incremental=clean_incremental)
            if store.recovered:  # damaged so that it did not open, or inside
                warn(f"the cache index was damaged; moved it aside to {store.recovered} and started a new one")
    if as_json:
        echo_json(report.to_json())
        return
    size = units.format_size
    ev = report.evicted
    click.echo(f"evicted {report.entries_evicted} entries ({ev['size']} over the size limit, "
               f"{ev['max-age']} unused too long), freeing {size(report.evicted_bytes)}")
    if report.kept_recent:
        from kache.store.store import PIN_SECS

        click.echo(f"kept {report.kept_recent} entries unused for longer than {max_age} because they were used in "
                   f"the last {PIN_SECS / 60:g} minutes (a build may be restoring them); a later gc evicts them")
    if report.broken_removed or report.damaged_blobs:
        click.echo(f"removed {report.damaged_blobs} damaged blobs and the {report.broken_removed} entries "
                   "that used them (missing, truncated or altered since they were stored)")
    click.echo(f"removed {report.orphans_removed} orphan blobs ({size(report.orphan_bytes)}) and "
               f"{report.temp_removed} temp files ({size(report.temp_bytes)})")
    if clean_incremental:
        click.echo(f"removed {report.incremental_removed} incremental directories "
                   f"({size(report.incremental_bytes)})")
    if report.memo_rows_removed:
        click.echo(f"forgot {report.memo_rows_removed} memo rows of files and incremental directories that are gone")
    click.echo(f"store: {size(report.before_bytes)} -> {size(report.after_bytes)} "
               f"(limit {size(report.max_bytes)})")
    if report.pinned:
        warn(f"{report.pinned} entries used in the last 2 minutes were kept; the store is still above "
             f"{size(report.target_bytes)} (run `kache gc` again after the build)")


# --------------------------------------------------------------------------- purge


@click.command()
@click.option("--crate-name", metavar="NAME", shell_complete=complete_crates, help="Only this crate's entries.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
def purge(crate_name: str | None, yes: bool) -> None:
    """Delete the whole local cache, or one crate's entries.

    Asks first when run in a terminal, unless --yes.

    \b
    Example:
      kache purge --crate-name serde
    """
    from kache.store.gc import purge as delete

    root = _store_root(_settings())
    what = f"every cached entry of {crate_name}" if crate_name else f"the whole local cache at {root}"
    with _open_store(root, "purging the cache") as store:
        if store is None:
            click.echo(f"nothing to purge: no store at {root}")
            return
        if not yes and _interactive():
            click.confirm(f"Delete {what}?", abort=True)
        entries, freed = delete(store, crate_name)
    click.echo(f"deleted {entries} {'entry' if entries == 1 else 'entries'}, freed {units.format_size(freed)}")


COMMANDS: list[click.Command] = [list_, stats, why_miss, gc, purge]
