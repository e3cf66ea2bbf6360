"""`kache list`, `stats`, `why-miss`, `gc`, `purge` over synthetic stores."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from kache.cli import main, root
from kache.store.entries import list_entries, list_json, why_miss
from kache.store.store import Store
from tests.support.entries import add_entry, event


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Store]:
    path = tmp_path / "cache"
    monkeypatch.setenv("KACHE_CACHE_DIR", str(path))
    s = Store(str(path))
    s.open()
    yield s
    s.close()


def run(capsys: pytest.CaptureFixture[str], *args: str, code: int = 0) -> str:
    assert main(list(args)) == code
    return capsys.readouterr().out


def run_json(capsys: pytest.CaptureFixture[str], *args: str) -> object:
    return json.loads(run(capsys, *args))


# --------------------------------------------------------------------------- list


def test_list_without_a_store_is_empty_not_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("KACHE_CACHE_DIR", str(tmp_path / "none"))
    assert "the cache is empty" in run(capsys, "list")
    assert run_json(capsys, "list", "--json") == []
    assert not (tmp_path / "none").exists()


def test_a_store_that_is_not_a_directory_is_an_error_not_an_empty_cache(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Was (review): KACHE_CACHE_DIR=/dev/null listed "the cache is empty", gc "evicted 0"
    and purge "nothing to purge", each exiting 0."""
    blocker = tmp_path / "file"
    blocker.write_text("not a store")
    monkeypatch.setenv("KACHE_CACHE_DIR", str(blocker))
    for args in (["list"], ["list", "--json"], ["gc"], ["purge", "--yes"]):
        assert main(args) == 1, args
        err = capsys.readouterr().err
        assert f"the store {blocker} is not a directory; point cache.local_store (KACHE_CACHE_DIR) at a " \
               "directory" in err, (args, err)
    assert blocker.read_text() == "not a store"


def test_list_sorts(store: Store, capsys: pytest.CaptureFixture[str]) -> None:
    now = time.time()
    add_entry(store, "b", blobs=[b"x" * 300], hits=1, last_used=now - 60)
    add_entry(store, "a", blobs=[b"y" * 100], hits=5, last_used=now - 3600)
    add_entry(store, "c", blobs=[b"z" * 200], hits=3, last_used=now - 10)

    def order(sort: str) -> list[str]:
        return [e["crate"] for e in run_json(capsys, "list", "--json", "--sort", sort)]  # type: ignore[union-attr]

    assert order("name") == ["a", "b", "c"]
    assert order("size") == ["b", "c", "a"]
    assert order("hits") == ["a", "c", "b"]
    assert order("age") == ["c", "b", "a"]


def test_list_json_fields(store: Store, capsys: pytest.CaptureFixture[str]) -> None:
    e = add_entry(store, "serde", blobs=[b"rlib", b"rmeta!"], hits=2, crate_types="lib", compile_ms=1234,
                  created=1_700_000_000.0, last_used=1_700_000_060.0)
    [doc] = run_json(capsys, "list", "--json")  # type: ignore[misc]
    assert doc == {"crate": "serde", "crate_types": ["lib"], "target": "", "profile": "dev", "size": 10,
                   "hits": 2, "created": "2023-11-14T22:13:20+00:00", "last_used": "2023-11-14T22:14:20+00:00",
                   "compile_ms": 1234, "key": e.key}


@pytest.mark.parametrize("sort", ["name", "size", "hits", "age"])
def test_list_json_kept_in_the_index_is_entry_info_to_json(store: Store, sort: str) -> None:
    """`list --json` reads each object from the index's listing texts (list_json); it
    must be what EntryInfo.to_json gives, as json.dumps writes it, for any texts, after
    hits and clamped clocks too."""
    add_entry(store, "serde", crate_types="lib", hits=3, created=1_700_000_000.75, last_used=1_700_000_099.999)
    add_entry(store, "proc-macro2", crate_types="proc-macro", created=0.0, last_used=1.5)
    add_entry(store, "multi", crate_types="rlib,cdylib,staticlib", compile_ms=0, target='C:\\spec "x".json\x7f')
    add_entry(store, "none", crate_types="")
    add_entry(store, "odd", crate_types=",lib,,", hits=2**40, compile_ms=2**53 + 1)
    quoted = add_entry(store, 'quo"te\\ü\n\t\x01', crate_types="lib", profile="my-\u00e9\U0001f600",
                       created=253402300799.0)
    add_entry(store, "build_script_build", crate_types="bin", package="serde-derive")  # shown by its package
    add_entry(store, "build_script_main", crate_types="bin", package="evil\x1b[2J")  # forged: not shown
    add_entry(store, "build_script_build", crate_types="bin")  # recorded before packages were
    store.touch(quoted.key)  # a hit: hits and last_used change
    assert store.clamp_future(time.time() - 3600) >= 1  # and "last used" now, for entries used since an hour ago
    texts = list(list_json(store, sort))
    expected = [i.to_json() for i in list_entries(store, None, sort)]
    assert [json.loads(t) for t in texts] == expected
    assert texts == [json.dumps(d) for d in expected]  # byte for byte, keys in the same order
    assert [d["hits"] for d in expected if d["key"] == quoted.key] == [1]
    assert sorted(d.get("package", "-") for d in expected if d["crate"].startswith("build_script_")) == [
        "-", "-", "serde-derive"]
    # the texts written again from the columns (a migration) are the same; a damaged meta
    # reads as no package, and fails neither the rewrite nor the listing
    store.rewrite_listing_texts()
    assert list(list_json(store, sort)) == texts
    with store.db:
        store.db.execute("UPDATE entries SET meta = '{not json' WHERE crate_name = 'build_script_build'")
    store.rewrite_listing_texts()
    assert all("package" not in json.loads(t) for t in list_json(store, sort))
    assert [i.to_json() for i in list_entries(store, None, sort)] == [json.loads(t) for t in list_json(store, sort)]


def test_list_json_holds_one_snapshot_while_it_is_read_and_lets_go_after(store: Store) -> None:
    for i in range(3):
        add_entry(store, f"c{i}")
    texts = iter(list_json(store))
    first = next(texts)
    assert store.db.in_transaction  # the rest is read from the snapshot the first came from
    other = Store(store.root)
    add_entry(other, "late")  # a build records meanwhile: not in this listing
    other.close()
    assert [json.loads(t)["crate"] for t in [first, *texts]] == ["c0", "c1", "c2"]
    assert not store.db.in_transaction
    abandoned = iter(list_json(store))
    next(abandoned)
    del abandoned  # a reader that stops early (a closed pipe) ends the read too
    assert not store.db.in_transaction
    assert [json.loads(t)["crate"] for t in list_json(store)] == ["c0", "c1", "c2", "late"]


def test_a_listing_stopped_early_ends_quietly_after_its_store_closes(store: Store,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """`kache list | head -1`: the broken pipe closes the store before the listing's
    reader is collected; ending the reader then must not fail on the closed index."""
    import gc
    import sys

    from kache.store.entries import list_table

    unraisable: list[object] = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    for i in range(2):
        add_entry(store, f"c{i}")
    for listing in (list_json, lambda s: list_table(s).lines):  # type: ignore[union-attr]
        reader = Store(store.root)
        texts = iter(listing(reader))
        next(texts)
        reader.close()
        del texts
        gc.collect()
    assert unraisable == []


def test_json_lines_are_written_in_batches_as_one_array(capsys: pytest.CaptureFixture[str]) -> None:
    from kache.cli.output import echo_json_lines

    for n in (0, 1, 2, 4096, 4097, 10_000):
        echo_json_lines(f'{{"n": {i}}}' for i in range(n))
        out = capsys.readouterr().out
        assert json.loads(out) == [{"n": i} for i in range(n)]
        assert out == ("[]\n" if not n else "[\n  " + ",\n  ".join(f'{{"n": {i}}}' for i in range(n)) + "\n]\n")


def test_list_table(store: Store, capsys: pytest.CaptureFixture[str]) -> None:
    e = add_entry(store, "serde", blobs=[b"x" * 2048], hits=7, last_used=time.time() - 190)
    lines = run(capsys, "list").splitlines()
    assert lines[0].split() == ["crate", "types", "profile", "size", "hits", "last", "used", "key"]
    assert lines[1].split() == ["serde", "lib", "dev", "2.0", "KiB", "7", "3m", "ago", e.key[:12]]
    assert lines[-1] == "1 entries, 2.0 KiB"


def test_ages_written_by_sqlite_are_what_units_writes() -> None:
    """`kache list` has SQLite write ages (entries._ago_sql): the same text as
    units.format_ago, at every unit's edges and across magnitudes; and below a year none
    is wider than the column's header (the table measures only the oldest)."""
    import random

    from kache import units
    from kache.store.entries import AGO_WIDTH_BELOW_A_YEAR, TABLE_HEADERS, _ago_sql

    db = sqlite3.connect(":memory:")
    rng = random.Random(8)
    below_a_year = [units.format_ago(s) for s in range(0, 365 * 86400, 37)]
    assert AGO_WIDTH_BELOW_A_YEAR == max(map(len, below_a_year)) <= len(TABLE_HEADERS[5])
    now = 1_700_000_000.25
    ages = {-30.0, 0.0, 0.4, 59.999, 60.0, 61.0, 3599.9, 3600.0, 86399.0, 86400.0, 604800.0, 31535999.5,
            31536000.0, 10 * 31536000.0}
    ages |= {rng.uniform(0, 40 * 31536000) for _ in range(2000)}
    age = _ago_sql("?1", "?2")
    for seconds in sorted(ages):
        last_used = now - seconds
        assert db.execute(f"SELECT {age}", (now, last_used)).fetchone()[0] == units.format_ago(now - last_used), seconds


@pytest.mark.parametrize("sort", ["name", "size", "hits", "age"])
def test_list_table_written_by_sqlite_is_the_table_python_would_print(store: Store, sort: str,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """`kache list` streams lines SQLite pads (list_table): they must be the lines
    echo_table would print for the same rows, in any script, at any width."""
    from kache import units
    from kache.cli.output import echo_table
    from kache.store.entries import TABLE_HEADERS, list_table

    now = time.time()
    add_entry(store, "serde", blobs=[b"x" * 2048], hits=12345, last_used=now - 190)
    add_entry(store, "proc-macro2", crate_types="proc-macro", created=now - 9 * 86400)
    add_entry(store, "z\u00fcrich_\U0001f600", crate_types="rlib,cdylib,staticlib", profile="r\u00e9lease",
              blobs=[b"y" * (3 << 20)], created=now - 400 * 86400, last_used=now + 50)
    add_entry(store, "a_crate_name_longer_than_the_rest_of_them", blobs=[b"z" * 1023], hits=0)
    table = list_table(store, sort, now=now)
    assert table is not None
    lines = list(table.lines)
    expected = [(i.crate, ",".join(i.crate_types), i.profile, units.format_size(i.size), str(i.hits),
                 units.format_ago(now - i.last_used), i.key[:12]) for i in list_entries(store, None, sort)]
    echo_table(TABLE_HEADERS, expected)
    head, *rows = capsys.readouterr().out.splitlines()
    assert lines == rows and len(rows) == 4
    assert table.widths == [max(len(h), *(len(r[n]) for r in expected)) for n, h in enumerate(TABLE_HEADERS[:6])]
    assert table.entries == 4 and table.size == sum(i.size for i in list_entries(store))


def test_list_table_widths_fit_the_widest_size_and_age_of_any_mix(store: Store) -> None:
    """The size and age columns are measured without a text per entry (the kept sizes,
    the oldest age): over random mixes of sizes and ages (up to ~30,000 years), the
    widths are those of the widest texts."""
    import random

    from kache import units
    from kache.store.entries import TABLE_HEADERS, list_table

    rng = random.Random(5)
    now = 1_800_000_000.5
    keys = [add_entry(store, f"c{i}").key for i in range(60)]
    for trial in range(25):
        with store.db:
            for key in keys:
                size = rng.choice([rng.randrange(1024), rng.randrange(2**20), rng.randrange(2**45) >> rng.randrange(45)])
                age = rng.choice([rng.uniform(0, 120), rng.uniform(0, 8e5), rng.uniform(0, 9e8), -5.0,
                                  rng.uniform(0, 10 ** rng.uniform(9, 12))])
                store.db.execute("UPDATE entries SET size = ?, last_used = ?, hits = ? WHERE key = ?",
                                 (size, now - age, rng.randrange(10**rng.randrange(1, 7)), key))
        store.rewrite_listing_texts()
        rows = list_entries(store)
        table = list_table(store, now=now)
        assert table is not None
        texts = [[units.format_size(i.size), str(i.hits), units.format_ago(now - i.last_used)] for i in rows]
        expected = [max(len(TABLE_HEADERS[n]), *(len(t[c]) for t in texts)) for n, c in ((3, 0), (4, 1), (5, 2))]
        assert [table.widths[3], table.widths[4], table.widths[5]] == expected, trial
        assert len(list(table.lines)) == 60


def test_list_table_reads_one_snapshot(store: Store) -> None:
    """The count and widths are measured in the snapshot the lines are read from: an
    entry recorded meanwhile is in neither."""
    from kache.store.entries import list_table

    add_entry(store, "short")
    table = list_table(store)
    assert table is not None
    other = Store(store.root)
    add_entry(other, "a_much_longer_crate_name_recorded_meanwhile")
    other.close()
    assert [line.split()[0] for line in table.lines] == ["short"]
    assert table.entries == 1 and table.widths[0] == len("crate")
    assert not store.db.in_transaction
    empty = Store(str(Path(store.root).parent / "empty"))
    assert list_table(empty) is None and list_table(None) is None
    empty.close()


def test_list_one_crate_in_detail(store: Store, capsys: pytest.CaptureFixture[str]) -> None:
    e = add_entry(store, "proc_macro2", blobs=[b"r" * 3000, b"m" * 10], compile_ms=2500)
    add_entry(store, "quote")
    out = run(capsys, "list", "proc-macro2")
    assert e.key in out and "quote" not in out
    assert "libproc_macro2-0.rlib  2.9 KiB  link" in out
    assert "compile time 2.5s" in out
    [doc] = run_json(capsys, "list", "proc-macro2", "--json")  # type: ignore[misc]
    assert [(f["name"], f["size"]) for f in doc["files"]] == [("libproc_macro2-0.rlib", 3000),
                                                              ("libproc_macro2-1.rlib", 10)]
    assert run(capsys, "list", "nope") == "no cached entries for nope\n"


# --------------------------------------------------------------------------- stats


def test_stats_json_and_since(store: Store, capsys: pytest.CaptureFixture[str]) -> None:
    now = time.time()
    add_entry(store, "serde")
    event(store.root, "local_hit", t=now - 10, bytes=100, saved_ms=900)
    event(store.root, "miss", t=now - 20, bytes=100)
    event(store.root, "passthrough", t=now - 30, reason="executable")
    event(store.root, "error", t=now - 86400 * 2, reason="store: OSError")
    doc = run_json(capsys, "stats", "--json")
    assert isinstance(doc, dict)
    assert {k: doc[k] for k in ("hits", "misses", "passthrough", "errors", "entries")} == {
        "hits": 1, "misses": 1, "passthrough": 1, "errors": 1, "entries": 1}
    assert doc["hit_rate"] == 0.5 and doc["time_saved_ms"] == 900
    assert doc["passthrough_reasons"] == {"executable": 1}
    recent = run_json(capsys, "stats", "--json", "--since", "1d")
    assert isinstance(recent, dict) and recent["errors"] == 0 and recent["hits"] == 1


def test_stats_human(store: Store, capsys: pytest.CaptureFixture[str]) -> None:
    for _ in range(3):
        event(store.root, "local_hit", saved_ms=60_000, root="/ws")
    event(store.root, "miss", reason="compile-failed", root="/ws")
    out = run(capsys, "stats")
    assert "hit rate       75.0% of cacheable calls" in out
    assert "compile-failed" in out
    assert "time saved     3m" in out
    assert "/ws" in out


def test_stats_zero_counts_from_then_on_and_keeps_the_entries(store: Store,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    from kache.store.stats import compute, refresh_fold

    now = time.time()
    add_entry(store, "serde", blobs=[b"x" * 2048])
    event(store.root, "local_hit", t=now - 30, saved_ms=90_000)
    event(store.root, "miss", t=now - 20)
    event(store.root, "passthrough", t=now - 10, reason="executable")
    assert run_json(capsys, "stats", "--json")["calls"] == 3  # type: ignore[index]  # fold kept in tmp/
    assert run(capsys, "stats", "--zero") == (
        "statistics zeroed: 3 calls (1 hit, 1 miss, 1 pass-through, 0 errors, 1m30s saved) no longer counted\n"
        "the cache keeps its 1 entry (2.0 KiB); `kache stats` counts from now on\n")
    time.sleep(0.01)
    event(store.root, "miss", reason="compile-failed")
    refresh_fold(store.root)  # what a running daemon does while idle
    for args in (["stats", "--json"], ["stats", "--json", "--since", "1d"]):
        doc = run_json(capsys, *args)
        assert isinstance(doc, dict)
        assert (doc["calls"], doc["hits"], doc["misses"], doc["passthrough"], doc["entries"]) == (1, 0, 1, 0, 1)
        assert doc["zeroed_at"] is not None and doc["miss_reasons"] == {"compile-failed": 1}
    assert compute(store.root).saved_ms == 0
    out = run(capsys, "stats")
    assert out.startswith("calls since the statistics were zeroed (") and "): 1\n" in out.splitlines(True)[0]
    assert len(store.entries()) == 1

    doc = json.loads(run(capsys, "stats", "--zero", "--json"))
    assert doc["zeroed"] == {"calls": 1, "hits": 0, "misses": 1, "passthrough": 0, "errors": 0, "time_saved_ms": 0}
    assert doc["store"] == {"entries": 1, "logical_bytes": 2048} and doc["zeroed_at"].endswith("+00:00")
    assert run_json(capsys, "stats", "--json")["calls"] == 0  # type: ignore[index]
    assert main(["stats", "--zero", "--since", "1d"]) == 2
    assert "--zero and --since do not go together" in capsys.readouterr().err


def test_stats_bad_since_is_a_usage_error(store: Store, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["stats", "--since", "soon"]) == 2
    assert "expected a duration" in capsys.readouterr().err


# --------------------------------------------------------------------------- why-miss

BASE = {"toolchain": "t1", "args": "a1", "extern:serde": "s1", "env:CARGO_PKG_VERSION": "v1",
        "source:<CWD>/src/lib.rs": "f1"}


def test_why_miss_picks_the_nearest_entry(store: Store) -> None:
    now = time.time()
    far = add_entry(store, "app", created=now - 300, components={**BASE, "toolchain": "t0", "args": "a0"})
    near = add_entry(store, "app", created=now - 200, components={**BASE, "extern:serde": "s0"})
    latest = add_entry(store, "app", created=now - 100,
                       components={**BASE, "source:<CWD>/src/new.rs": "n1"})
    report = why_miss(store, "app")
    assert report.latest is not None and report.latest.key == latest.key
    assert report.nearest is not None and report.nearest.key == near.key != far.key
    assert [(d.label, d.kind, d.latest, d.nearest) for d in report.differences] == [
        ("extern:serde", "dependency", "s1", "s0"),
        ("source:<CWD>/src/new.rs", "source", "n1", None),
    ]
    assert report.differences[0].explanation == "dependency changed: serde"
    assert report.differences[1].explanation == "source file added: <CWD>/src/new.rs"


def test_why_miss_cli_names_the_component(store: Store, capsys: pytest.CaptureFixture[str]) -> None:
    now = time.time()
    add_entry(store, "proc_macro2", created=now - 200, components=BASE)
    add_entry(store, "proc_macro2", created=now - 100,
              components={**BASE, "env:CARGO_PKG_VERSION": "v2", "source:<CWD>/src/lib.rs": "f2"})
    event(store.root, "miss", "proc_macro2")
    out = run(capsys, "why-miss", "proc-macro2")
    assert "the last call of proc-macro2" in out and "was a miss" in out
    assert "environment variable changed: CARGO_PKG_VERSION  [env:CARGO_PKG_VERSION: v1 -> v2]" in out
    assert "source file changed: <CWD>/src/lib.rs" in out
    doc = run_json(capsys, "why-miss", "proc_macro2", "--json")
    assert isinstance(doc, dict) and doc["entries"] == 2
    assert [d["label"] for d in doc["differences"]] == ["env:CARGO_PKG_VERSION", "source:<CWD>/src/lib.rs"]


def _cargo_args(emit: str, metadata: str, *extra: str) -> list[str]:
    """rustc's arguments as cargo gives them for a library, as the key holds them."""
    return ["--crate-name", "kc_util", "--edition=2021", "<CWD>/util/src/lib.rs", "--error-format=json",
            "--json=diagnostic-rendered-ansi,artifacts,future-incompat", "--crate-type", "lib", f"--emit={emit}",
            "-C", "embed-bitcode=no", "-C", "debuginfo=2", *extra, "-C", f"metadata={metadata}",
            "-C", f"extra-filename=-{metadata}", "--out-dir", "<TARGET>/debug/deps",
            "-L", "dependency=<TARGET>/debug/deps"]


def test_why_miss_names_the_flags_that_differ(store: Store, capsys: pytest.CaptureFixture[str]) -> None:
    """`cargo check`, then `cargo build`: the arguments differ in --emit (and cargo's unit
    hash); why-miss names those flags and their values (it said "compiler flags changed
    (profile, features, RUSTFLAGS, cfg)")."""
    now = time.time()
    check = add_entry(store, "kc_util", created=now - 200, components={**BASE, "args": "a0"},
                      args=_cargo_args("dep-info,metadata", "0a1b"))
    build = add_entry(store, "kc_util", created=now - 100, components=BASE,
                      args=_cargo_args("dep-info,metadata,link", "2c3d", "--cfg", 'feature="std"'))
    assert run(capsys, "why-miss", "kc-util").splitlines() == [
        f"latest entry  {build.key[:12]} (1m ago)",
        f"nearest entry {check.key[:12]} (3m ago), 1 component(s) differ:",
        "  compiler flags changed  [args: a0 -> a1]",
        "    --emit changed: dep-info,metadata → dep-info,metadata,link (cargo check vs cargo build)",
        "    --cfg added: feature=\"std\" (features, or cfgs from RUSTFLAGS or a build script)",
        "    -C metadata changed: 0a1b → 2c3d (cargo's hash of the unit: profile, features, dependencies, target)",
        "    -C extra-filename changed: -0a1b → -2c3d (follows -C metadata)"]
    doc = run_json(capsys, "why-miss", "kc_util", "--json")
    assert isinstance(doc, dict)
    [args] = doc["differences"]
    assert args["explanation"] == (
        "compiler flags changed: --emit changed: dep-info,metadata → dep-info,metadata,link (cargo check vs cargo "
        "build); --cfg added: feature=\"std\" (features, or cfgs from RUSTFLAGS or a build script); -C metadata "
        "changed: 0a1b → 2c3d (cargo's hash of the unit: profile, features, dependencies, target); -C "
        "extra-filename changed: -0a1b → -2c3d (follows -C metadata)")
    assert len(args["changes"]) == 4


def test_why_miss_of_entries_without_their_arguments_compares_emit(store: Store,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """Entries recorded before kache kept their arguments: --emit is all there is to name."""
    now = time.time()
    add_entry(store, "kc_util", created=now - 200, components={**BASE, "args": "a0"}, emit=["dep-info", "metadata"])
    add_entry(store, "kc_util", created=now - 100, components=BASE)
    assert run(capsys, "why-miss", "kc_util").splitlines()[2:] == [
        "  compiler flags changed  [args: a0 -> a1]",
        "    --emit changed: dep-info,metadata → dep-info,link,metadata (cargo check vs cargo build)",
        "    perhaps other flags too: these entries do not record their arguments"]
    add_entry(store, "same_emit", created=now - 200, components={**BASE, "args": "a0"})
    add_entry(store, "same_emit", created=now - 100, components=BASE)
    assert run(capsys, "why-miss", "same_emit").splitlines()[2:] == [
        "  compiler flags changed (profile, features, RUSTFLAGS, cfg)  [args: a0 -> a1]"]


def test_why_miss_passthrough_one_entry_and_unknown(store: Store, capsys: pytest.CaptureFixture[str]) -> None:
    add_entry(store, "lonely", components=BASE)
    assert "only one entry" in run(capsys, "why-miss", "lonely")
    event(store.root, "passthrough", "mybin", reason="executable")
    out = run(capsys, "why-miss", "mybin", code=1)
    assert "was not cacheable: it links an executable" in out and "[executable]" in out
    # no entry: exit 1 (it exited 0), for both forms
    assert "no cached entries and no recorded calls for ghost" in run(capsys, "why-miss", "ghost", code=1)
    assert "mybin has no cached entries" in run(capsys, "why-miss", "mybin", code=1)
    assert json.loads(run(capsys, "why-miss", "ghost", "--json", code=1))["entries"] == 0


# --------------------------------------------------------------------------- gc, purge


def test_gc_uses_the_size_setting(store: Store, monkeypatch: pytest.MonkeyPatch,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    now = time.time()
    keys = [add_entry(store, f"c{i}", blobs=[bytes([i]) * 1000], last_used=now - 3600 * (7 - 2 * i)).key
            for i in range(4)]
    monkeypatch.setenv("KACHE_MAX_SIZE", "3000")
    doc = run_json(capsys, "gc", "--json")
    assert isinstance(doc, dict)
    assert doc["evicted"] == {"max-age": 0, "size": 2} and doc["after_bytes"] == 2000
    assert {r["key"] for r in store.summaries()} == set(keys[2:])
    out = run(capsys, "gc", "--max-age", "2h")
    assert "evicted 1 entries (0 over the size limit, 1 unused too long)" in out
    assert "store: 2.0 KiB -> 1000 B" in out


def test_gc_max_age_says_how_many_recent_entries_it_kept(store: Store,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """`gc --max-age 1s` keeps what was used in the last two minutes, and says so (it used
    to say only "evicted 0")."""
    now = time.time()
    old = add_entry(store, "old", blobs=[b"o" * 1000], last_used=now - 3600)
    for crate in ("serde", "log"):
        add_entry(store, crate, blobs=[crate.encode() * 100], last_used=now - 5)
    out = run(capsys, "gc", "--max-age", "1s")
    assert out.splitlines() == [
        "evicted 1 entries (0 over the size limit, 1 unused too long), freeing 1000 B",
        "kept 2 entries unused for longer than 1s because they were used in the last 2 minutes (a build may be "
        "restoring them); a later gc evicts them",
        "removed 0 orphan blobs (0 B) and 0 temp files (0 B)",
        "store: 1.8 KiB -> 800 B (limit 46.6 GiB)"]
    assert old.key not in {r["key"] for r in store.summaries()}
    doc = run_json(capsys, "gc", "--max-age", "1s", "--json")
    assert isinstance(doc, dict)
    assert doc["kept_recent"] == 2 and doc["entries_evicted"] == 0 and doc["pinned"] == 0
    doc = run_json(capsys, "gc", "--max-age", "1h", "--json")  # they are not older than that: nothing kept
    assert isinstance(doc, dict) and doc["kept_recent"] == 0


@pytest.mark.parametrize("damage", ["garbage", "torn"])
def test_gc_moves_a_damaged_index_aside_and_collects_on_a_new_one(
        store: Store, damage: str, capsys: pytest.CaptureFixture[str]) -> None:
    """What the error of every other command advises for a damaged index: `kache gc`
    moves it aside (whether it no longer opens, or opens with its tables garbage) and
    starts a new one, with a warning naming where the old one went."""
    add_entry(store, "serde", blobs=[b"s" * 100])
    store.close()
    index = Path(store.root) / "index.db"
    conn = sqlite3.connect(index)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    keep = 4096 if damage == "torn" else 0
    with open(index, "r+b") as f:
        f.seek(keep)
        f.write(b"\x5a" * (index.stat().st_size - keep))
    assert main(["list"]) == 1
    assert "`kache gc` or `kache doctor --fix` moves it aside" in capsys.readouterr().err
    assert main(["gc", "--json"]) == 0
    out, err = capsys.readouterr()
    doc = json.loads(out)
    assert doc["entries_evicted"] == 0 and doc["after_bytes"] == 0
    [aside] = Path(store.root).glob("index.db.corrupt-*")
    assert f"moved it aside to {aside} and started a new one" in err
    assert run_json(capsys, "list", "--json") == []
    assert run(capsys, "gc").startswith("evicted 0 entries")
    assert "moved it aside" not in capsys.readouterr().err


def test_gc_without_a_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                            capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("KACHE_CACHE_DIR", str(tmp_path / "none"))
    assert "evicted 0 entries" in run(capsys, "gc")
    assert not (tmp_path / "none").exists()


def test_purge_all_and_one_crate(store: Store, capsys: pytest.CaptureFixture[str]) -> None:
    add_entry(store, "proc_macro2", blobs=[b"p" * 100])
    add_entry(store, "quote", blobs=[b"q" * 100])
    add_entry(store, "syn", blobs=[b"s" * 100])
    assert run(capsys, "purge", "--crate-name", "proc-macro2") == "deleted 1 entry, freed 100 B\n"
    assert [e["crate"] for e in run_json(capsys, "list", "--json")] == ["quote", "syn"]  # type: ignore[union-attr]
    assert run(capsys, "purge") == "deleted 2 entries, freed 200 B\n"  # stdin is not a terminal
    assert run_json(capsys, "list", "--json") == []


def test_purge_asks_in_a_terminal(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    add_entry(store, "serde")
    monkeypatch.setattr("kache.cli.cache._interactive", lambda: True)
    result = CliRunner().invoke(root, ["purge"], input="n\n")
    assert result.exit_code == 1 and "Delete the whole local cache" in result.output
    assert store.totals()["entries"] == 1
    result = CliRunner().invoke(root, ["purge"], input="y\n")
    assert result.exit_code == 0 and "deleted 1 entry," in result.output
    result = CliRunner().invoke(root, ["purge", "--yes"])
    assert result.exit_code == 0 and "deleted 0 entries" in result.output


# --------------------------------------------------------------------------- speed


def test_list_and_stats_on_10000_entries(store: Store, capsys: pytest.CaptureFixture[str]) -> None:
    """Prints the times (a benchmark, not a test of them): both should stay well under 0.5 s."""
    import json as _json

    now = time.time()
    shared = [store.put_blob_bytes(f"blob {i}".encode() * 50)[0] for i in range(100)]
    rows = []
    for i in range(10_000):
        key = f"{i:064x}"
        files = [{"name": f"libc{i}.rlib", "hash": shared[i % 100], "size": 400, "kind": "link"},
                 {"name": f"libc{i}.rmeta", "hash": shared[(i + 1) % 100], "size": 400, "kind": "link"}]
        meta = {"files": files, "stdout": "", "stderr": "x" * 200, "emit": ["link"],
                "components": {f"source:src/f{j}.rs": "0" * 16 for j in range(20)}}
        rows.append((key, f"crate{i % 700}", "lib", "", "dev", 800, now - i, now - i, i % 9, 100, 1, key,
                     _json.dumps(meta), files))
    with store.transaction() as db:  # Store.add per entry takes seconds; same rows, one transaction
        db.executemany("INSERT INTO entries (key, crate_name, crate_types, target, profile, size, created, "
                       "last_used, hits, compile_ms, key_version, mkey, meta) "
                       "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", [r[:13] for r in rows])
        db.executemany("INSERT OR IGNORE INTO entry_blobs VALUES (?, ?, ?)",
                       [(r[0], f["hash"], f["size"]) for r in rows for f in r[13]])
    store.rewrite_listing_texts()
    for i in range(10_000):
        event(store.root, ("local_hit", "miss", "passthrough")[i % 3], f"crate{i % 700}", t=now - i,
              bytes=800, saved_ms=90, reason="executable" if i % 3 == 2 else None, root="/ws")
    capsys.readouterr()
    t0 = time.perf_counter()
    assert main(["list", "--json"]) == 0
    t_list = time.perf_counter() - t0
    assert len(json.loads(capsys.readouterr().out)) == 10_000
    t0 = time.perf_counter()
    assert main(["stats", "--json"]) == 0
    t_stats = time.perf_counter() - t0
    doc = json.loads(capsys.readouterr().out)
    assert doc["entries"] == 10_000 and doc["hits"] == 3334
    t0 = time.perf_counter()
    assert main(["list"]) == 0
    t_table = time.perf_counter() - t0
    capsys.readouterr()
    with capsys.disabled():
        print(f"\n10,000 entries: list --json {t_list:.3f}s, list {t_table:.3f}s, stats --json {t_stats:.3f}s")


# --------------------------------------------------------------------------- build scripts


def test_build_scripts_are_listed_and_explained_by_their_package(store: Store,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    now = time.time()
    add_entry(store, "build_script_build", package="serde", key="a" * 64, created=now - 60,
              components={"args": "1" * 16, "source:build.rs": "2" * 16})
    add_entry(store, "build_script_build", package="serde", key="b" * 64, created=now - 30,
              components={"args": "1" * 16, "source:build.rs": "3" * 16})
    add_entry(store, "build_script_build", package="proc-macro2", key="c" * 64, created=now - 20,
              components={"args": "9" * 16})
    add_entry(store, "build_script_build", key="d" * 64, created=now - 10)  # recorded before packages were
    add_entry(store, "build_script_build", package="evil\x1b[2J name", key="e" * 64, created=now - 5)  # forged
    add_entry(store, "serde", key="f" * 64, created=now - 5)
    event(store.root, "miss", "build_script_build", t=now - 30, package="serde")
    event(store.root, "passthrough", "serde", t=now - 1, reason="executable")

    table = run(capsys, "list")
    lines = table.splitlines()
    assert lines[0].split()[0] == "crate"
    shown = [line[:len("proc-macro2 (build script)")].rstrip() for line in lines[1:-1]]
    assert shown == ["build_script_build", "build_script_build", "proc-macro2 (build script)",
                     "serde (build script)", "serde (build script)", "serde"]
    assert lines[-1].startswith("6 entries, ")

    detail = run(capsys, "list", "serde (build script)")
    assert detail.startswith(f"serde (build script)  lib  dev  key {'b' * 64}\n")
    assert f"serde (build script)  lib  dev  key {'a' * 64}\n" in detail
    [doc] = run_json(capsys, "list", "proc-macro2 (build script)", "--json")  # type: ignore[misc]
    assert (doc["crate"], doc["package"], doc["key"]) == ("build_script_build", "proc-macro2", "c" * 64)

    report = run_json(capsys, "why-miss", "serde (build script)", "--json")
    assert isinstance(report, dict)
    assert (report["crate"], report["entries"]) == ("serde (build script)", 2)
    assert report["latest"]["key"] == "b" * 64 and report["nearest"]["key"] == "a" * 64
    assert [d["label"] for d in report["differences"]] == ["source:build.rs"]
    assert report["last_event"]["package"] == "serde"
    # the crate name still means the crate; a package name no crate has means its build script
    assert run_json(capsys, "why-miss", "serde", "--json")["entries"] == 1  # type: ignore[index]
    assert run(capsys, "why-miss", "proc_macro2") == (
        "proc-macro2 (build script) has only one entry: there is nothing to compare it with\n")

    # purge takes the names list shows: a build script by its package, not every build script
    assert run(capsys, "purge", "--crate-name", "serde (build script)", "--yes").startswith("deleted 2 entries")
    assert run(capsys, "purge", "--crate-name", "proc_macro2", "--yes").startswith("deleted 1 entry,")
    left = sorted(str(e.meta.get("package")) for e in store.entries_like("build_script_build"))
    assert left == ["None", "evil\x1b[2J name"]
    assert [e.key for e in store.entries_like("serde")] == ["f" * 64]
