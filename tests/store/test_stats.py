"""kache.store.stats: the event log folded into counts, hit rate, reasons and totals."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from kache.store import events, layout
from kache.store import stats as stats_mod
from kache.store.stats import compute
from kache.store.store import Store
from tests.support.entries import add_entry, event


def test_counts_hit_rate_reasons_and_bytes(store: Store) -> None:
    root = store.root
    for ms in (10, 20, 30, 40):
        event(root, "local_hit", bytes=1000, saved_ms=500, ms=ms, root="/ws/a")
    event(root, "remote_hit", bytes=3000, saved_ms=700, ms=100, root="/ws/b")
    event(root, "prefetch_hit", bytes=500, saved_ms=100, ms=5, root="/ws/b")
    event(root, "miss", bytes=4000, compile_ms=900, root="/ws/a")
    event(root, "miss", reason="compile-failed", root="/ws/a")
    event(root, "dup", bytes=50, root="/ws/b")
    event(root, "passthrough", reason="executable")
    event(root, "passthrough", reason="executable")
    event(root, "passthrough", reason="print")
    event(root, "error", reason="store: OSError", root="/ws/a")
    st = compute(root, None)
    assert st.outcomes == {"local_hit": 4, "remote_hit": 1, "prefetch_hit": 1, "miss": 2, "dup": 1,
                           "passthrough": 3, "error": 1}
    assert (st.hits, st.remote_hits, st.misses, st.passthrough, st.errors, st.calls) == (6, 2, 3, 3, 1, 13)
    assert st.to_json()["remote_hits"] == 2 and st.to_json()["hits"] == 6
    assert st.hit_rate == pytest.approx(6 / 9)
    assert st.passthrough_reasons == {"executable": 2, "print": 1}
    assert st.miss_reasons == {"compile-failed": 1}
    assert st.error_reasons == {"store: OSError": 1}
    assert st.bytes_restored == 7500
    assert st.bytes_stored == 4050
    assert st.saved_ms == 2800
    assert st.hit_time() == {"mean": 34.2, "median": 25.0, "p95": 100.0}
    a, b, none = st.projects["/ws/a"], st.projects["/ws/b"], st.projects[""]
    assert (a.hits, a.misses, a.errors, a.saved_ms) == (4, 2, 1, 2000)
    assert (b.hits, b.misses) == (2, 1)
    assert none.passthrough == 3


def test_json_has_the_stable_integer_fields(store: Store) -> None:
    add_entry(store, "serde", blobs=[b"x" * 100, b"shared"])
    add_entry(store, "serde_json", blobs=[b"y" * 10, b"shared"])
    event(store.root, "local_hit", bytes=1)
    event(store.root, "miss")
    doc = compute(store.root, None).to_json()
    for name in ("hits", "misses", "passthrough", "errors", "entries"):
        assert type(doc[name]) is int, name
    assert (doc["hits"], doc["misses"], doc["passthrough"], doc["errors"], doc["entries"]) == (1, 1, 0, 0, 2)
    assert doc["store"] == {"entries": 2, "logical_bytes": 122, "physical_bytes": 116, "dedup_saved_bytes": 6}
    assert doc["hit_rate"] == 0.5


def test_since_counts_only_recent_events(store: Store) -> None:
    now = time.time()
    event(store.root, "local_hit", t=now - 7200)
    event(store.root, "miss", t=now - 7200)
    event(store.root, "local_hit", t=now - 60)
    st = compute(store.root, now - 3600)
    assert (st.hits, st.misses) == (1, 0)
    assert st.hit_rate == 1.0
    assert compute(store.root, None).calls == 3


def test_rotated_log_and_bad_lines(store: Store) -> None:
    event(store.root, "local_hit")
    os.replace(os.path.join(store.root, "events.jsonl"), os.path.join(store.root, "events.1.jsonl"))
    with open(os.path.join(store.root, "events.jsonl"), "a") as f:
        f.write('{"outcome": "miss", "t": 1, "bytes": "lots"}\nnot json\n{"outcome": "weird"}\n[1]\n'
                '{"outcome": "miss", "t": 2}\n')
    st = compute(store.root, None)
    # A line whose fields have the wrong types is damaged or forged: skipped whole.
    assert (st.hits, st.misses, st.calls) == (1, 1, 2)
    assert st.bytes_stored == 0


def test_no_store_counts_zero_and_creates_nothing(tmp_path: Path) -> None:
    root = tmp_path / "nothing"
    st = compute(str(root), None)
    assert (st.calls, st.entries, st.hit_rate) == (0, 0, None)
    assert st.hit_time() is None
    assert not root.exists()


def test_events_without_store_index(tmp_path: Path) -> None:
    root = tmp_path / "events-only"
    root.mkdir()
    events.append(str(root), {"t": time.time(), "crate": "x", "outcome": "passthrough", "reason": "emit"})
    st = compute(str(root), None)
    assert st.passthrough_reasons == {"emit": 1}
    assert st.entries == 0
    assert not (root / "index.db").exists()


# --------------------------------------------------------------------------- the fold cache


def _fresh(root: str) -> dict[str, object]:
    """The stats of the log folded from scratch (``since`` 0 bypasses the cache)."""
    return compute(root, 0.0).to_json() | {"since": None}


def test_the_fold_cache_folds_only_what_was_appended(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    root = store.root
    for i in range(50):
        event(root, ("local_hit", "miss", "passthrough")[i % 3], ms=float(i), reason="emit", root=f"/ws/{i % 4}")
    first = compute(root, None).to_json()
    assert first == _fresh(root)
    cache = Path(layout.tmp_path(root, layout.STATS_FOLD))
    assert cache.exists() and oct(cache.stat().st_mode & 0o777) == "0o600"
    assert cache.name in layout.KEPT_FILES  # gc's sweep of tmp/ leaves it
    folded: list[int] = []
    real_fold = stats_mod._fold
    monkeypatch.setattr(stats_mod, "_fold", lambda evs, f: (folded.append(len(evs)), real_fold(evs, f)))
    assert compute(root, None).to_json() == first
    assert folded == []  # nothing new: nothing parsed
    event(root, "error", reason="store: OSError")
    with open(events.path(root), "ab") as f:
        f.write(b'{"t": 1, "outcome": "miss"')  # a line being written: not folded yet
    assert compute(root, None).errors == 1
    assert folded == [1]
    with open(events.path(root), "ab") as f:
        f.write(b', "crate": "late"}\n')
    after = compute(root, None).to_json()
    assert folded == [1, 1]
    assert after == _fresh(root) and after["misses"] == first["misses"] + 1


def test_the_fold_cache_follows_rotation_and_rewrites(store: Store) -> None:
    root = store.root
    for _ in range(5):
        event(root, "local_hit", bytes=10)
    compute(root, None)
    os.replace(events.path(root), events.path(root, 1))  # rotation: the cached inode moves
    event(root, "miss", bytes=7)
    st = compute(root, None)
    assert (st.hits, st.misses, st.bytes_restored, st.bytes_stored) == (5, 1, 50, 7)
    assert st.to_json() == _fresh(root)
    # rewritten in place, as long as before: the bytes before the cached offset differ
    data = Path(events.path(root, 1)).read_bytes()
    Path(events.path(root, 1)).write_bytes(data.replace(b"\"local_hit\"", b"\"miss\"     "))
    st = compute(root, None)
    assert (st.hits, st.misses) == (0, 6)
    # truncated (kache purge, or by hand): folded afresh
    Path(events.path(root, 1)).write_bytes(b"")
    assert compute(root, None).calls == 1
    os.unlink(events.path(root, 1))
    os.unlink(events.path(root))
    assert compute(root, None).calls == 0


@pytest.mark.parametrize("cache", [
    b"not json", b"[]", b'{"version": 99, "files": []}',
    b'{"version": 1, "files": [{"ino": "x"}]}',
    b'{"version": 1, "files": [{"ino": INO, "offset": 0, "tail": "", "fold": {"outcomes": 1}}]}',
    b'{"version": 1, "files": [{"ino": INO, "offset": 0, "tail": "", "fold": FOLD}]}',
])
def test_a_damaged_or_forged_fold_cache_is_not_used(store: Store, cache: bytes) -> None:
    root = store.root
    event(root, "local_hit")
    event(root, "miss")
    fold = stats_mod._new_fold()
    fold["outcomes"]["local_hit"] = -5  # forged counts
    fold["hit_ms"] = [float("nan")]
    text = cache.replace(b"INO", str(os.stat(events.path(root)).st_ino).encode()).replace(
        b"FOLD", json.dumps(fold).encode())
    Path(layout.tmp_path(root, layout.STATS_FOLD)).write_bytes(text)
    st = compute(root, None)
    assert (st.hits, st.misses) == (1, 1)
    assert st.to_json() == _fresh(root)


def _long_log(root: str) -> None:
    """~3,000 events in many shapes, damaged and forged lines among them, and a line
    still being written at the end."""
    outcomes = ("local_hit", "remote_hit", "prefetch_hit", "miss", "dup", "passthrough", "error")
    for i in range(3000):
        event(root, outcomes[i % 7], crate=f"c{i % 13}", t=1_700_000_000.0 + i, ms=float(i % 97),
              bytes=i, saved_ms=i % 50, compile_ms=i % 70, reason=("emit", None, "x")[i % 3], root=f"/ws/{i % 5}")
    with open(events.path(root), "ab") as f:
        f.write(b'not json\n[1, 2]\n\n{"t": -1, "outcome": "local_hit"}\n{"t": 5, "outcome": "miss", "ms": 1e300}\n'
                b'{"t": 6, "outcome": "dup", "crate": 7}\n{"t": 7, "outcome": "miss", "root": "/ws/\\ud800"}\n')
    for _ in range(50):
        event(root, "local_hit", ms=1.5, root="/ws/late")
    with open(events.path(root), "ab") as f:
        f.write(b'{"t": 8, "outcome": "miss"')


def test_a_long_log_with_damaged_lines_folds_as_a_fresh_read(store: Store) -> None:
    root = store.root
    _long_log(root)
    st = compute(root, None)
    assert st.to_json() == _fresh(root)
    assert st.hit_ms == [ev["ms"] for ev in events.read_all(root) if ev["outcome"] in stats_mod.HIT_OUTCOMES]
