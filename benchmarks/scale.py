#!/usr/bin/env python3
"""How the store's operations grow with its size: 1,000 → 100,000 entries (tiny blobs).

For each size it builds a synthetic store (real blob files, entries, manifest lines, an
event log of the same length), then times, each as its own process where a user would
run one: the index work of a hit (manifest, entry, touch; in-process), `kache list
--json`, `kache list` (the table), `kache stats --json` twice (the first folds the whole
event log, the second only what was appended since: nothing), `kache gc` under the
limit (nothing to evict) when its daily check of the index file is due and when it is
not, and `kache gc` just over it (evicts the least recently used ~10 %). Each command
but the evicting gc runs `--repeat` times (3) and the median is reported (the first
`stats` without its kept fold each time, the checking gc without its last report).
Prints a table and writes JSON.

    python3 benchmarks/scale.py --sizes 1000 10000 100000

A benchmark, not a test: numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

RESULT = Path(__file__).resolve().parent / "results" / "scale.json"  # this benchmark's one results file

GROUPS = 1000  # entries of the same age share their blobs: 2 per group, 60 bytes each


def build_store(root: Path, n: int) -> str:
    """A store with n entries (2 tiny blobs each, shared by the entries of one of GROUPS
    age groups, so evicting the oldest tenth frees a tenth of the bytes) and n events."""
    from kache.store.store import Store

    store = Store(str(root))
    now = time.time()
    blobs = [store.put_blob_bytes(f"blob {i:04} ".encode() * 6)[0] for i in range(2 * GROUPS)]
    entries, links, manifests = [], [], []
    for i in range(n):
        key = f"{i:064x}"
        g = i * GROUPS // n
        files = [{"name": f"libc{i}.rlib", "hash": blobs[2 * g], "size": 60, "kind": "link"},
                 {"name": f"libc{i}.rmeta", "hash": blobs[2 * g + 1], "size": 60, "kind": "link"}]
        meta = {"files": files, "stdout": "", "stderr": "", "emit": ["link", "metadata"],
                "components": {"args": "0" * 16, "source:<CWD>/src/lib.rs": "1" * 16}}
        entries.append((key, f"crate{i % 2000}", "lib", "", "dev", 120, now - n + i, now - n + i, i % 5, 100, 1,
                        f"{i:064x}"[::-1], json.dumps(meta)))
        links += [(key, f["hash"], f["size"]) for f in files]
        manifests.append((f"{i:064x}"[::-1], key, json.dumps({"files": [["<CWD>/src/lib.rs", "ab" * 32]],
                                                               "env": []}), now - n + i))
    with store.transaction() as db:
        db.executemany("INSERT INTO entries (key, crate_name, crate_types, target, profile, size, created, last_used, "
                       "hits, compile_ms, key_version, mkey, meta) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                       entries)
        db.executemany("INSERT OR IGNORE INTO entry_blobs VALUES (?, ?, ?)", links)
        db.executemany("INSERT INTO manifests VALUES (?, ?, ?, ?)", manifests)
    store.rewrite_listing_texts()  # what Store.add writes with each entry
    store.close()
    with open(root / "events.jsonl", "w") as f:
        for i in range(n):
            f.write(json.dumps({"t": now - n + i, "crate": f"crate{i % 2000}",
                                "outcome": ("local_hit", "miss", "passthrough")[i % 3], "ms": 20.0,
                                "bytes": 128, "root": "/ws"}) + "\n")
    return str(root)


def time_lookup(root: str, n: int, repeats: int = 200) -> float:
    """Median seconds of the index work of a hit: manifest + entry + touch."""
    from kache.store.store import Store

    store = Store(root)
    samples = []
    for r in range(repeats):
        i = (r * 7919) % n
        t0 = time.perf_counter()
        lines = store.manifest(f"{i:064x}"[::-1])
        entry = store.get(lines[0][0])
        with store.transaction():
            store.touch(entry.key)  # type: ignore[union-attr]
        samples.append(time.perf_counter() - t0)
    store.close()
    samples.sort()
    return samples[len(samples) // 2]


def time_command(args: list[str], root: str, **env: str) -> float:
    return run_command(args, root, **env)[0]


def run_command(args: list[str], root: str, **env: str) -> tuple[float, str]:
    """(wall seconds, stdout) of one kache command on the store at root."""
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "kache", *args], capture_output=True, text=True,
                         env={**os.environ, "KACHE_CACHE_DIR": root, **env})
    elapsed = time.perf_counter() - t0
    if out.returncode != 0:
        raise SystemExit(f"kache {' '.join(args)} failed: {out.stderr}")
    return elapsed, out.stdout


def command_medians(root: str, repeat: int) -> dict[str, float]:
    """The median of ``repeat`` runs of each read-only command over the store at ``root``."""
    fold = os.path.join(root, "tmp", "stats-fold.json")

    def stats_first() -> float:
        if os.path.exists(fold):
            os.unlink(fold)  # what stats keeps between calls: gone, the whole log is folded
        return time_command(["stats", "--json"], root)

    def gc_checking() -> float:
        report = os.path.join(root, "tmp", "gc-last.json")
        if os.path.exists(report):
            os.unlink(report)  # no record of the last check: this gc checks the index file
        return time_command(["gc"], root, KACHE_MAX_SIZE="1GiB")

    def median(measure: Callable[[], float]) -> float:
        return round(statistics.median(measure() for _ in range(repeat)), 3)

    return {"list_json_s": median(lambda: time_command(["list", "--json"], root)),
            "list_s": median(lambda: time_command(["list"], root)),
            "stats_first_s": median(stats_first),
            "stats_json_s": median(lambda: time_command(["stats", "--json"], root)),
            "gc_checked_s": median(gc_checking),
            "gc_idle_s": median(lambda: time_command(["gc"], root, KACHE_MAX_SIZE="1GiB"))}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10_000, 100_000])
    ap.add_argument("--json", type=Path, default=RESULT,
                    help="where the results go (default: benchmarks/results/scale.json, overwritten by each run; history is in git)")
    ap.add_argument("--repeat", type=int, default=3, help="runs of each command; the median is reported")
    args = ap.parse_args()
    rows = []
    for n in args.sizes:
        base = Path(tempfile.mkdtemp(prefix=f"kache-scale-{n}-"))
        try:
            t0 = time.perf_counter()
            root = build_store(base / "store", n)
            build_s = time.perf_counter() - t0
            physical = 2 * GROUPS * 60
            row = {"entries": n, "build_s": round(build_s, 2),
                   "lookup_ms": round(time_lookup(root, n) * 1000, 3),
                   **command_medians(root, args.repeat),
                   "repeat": args.repeat}
            # just over the limit: down to 90 % of it, the oldest ~10 % of the entries
            gc_s, out = run_command(["gc", "--json"], root, KACHE_MAX_SIZE=str(physical - 1))
            row.update(gc_s=round(gc_s, 3), gc_evicted=json.loads(out)["entries_evicted"])
            rows.append(row)
            print(json.dumps(row), file=sys.stderr)
        finally:
            shutil.rmtree(base, ignore_errors=True)
    print(f"\n{'entries':>8} {'lookup':>9} {'list --json':>12} {'list':>7} {'stats (first)':>14} "
          f"{'stats':>7} {'gc (check)':>11} {'gc (idle)':>10} {'gc (10%)':>9}")
    for r in rows:
        print(f"{r['entries']:>8} {r['lookup_ms']:>7.2f}ms {r['list_json_s']:>11.3f}s {r['list_s']:>6.3f}s "
              f"{r['stats_first_s']:>13.3f}s {r['stats_json_s']:>6.3f}s {r['gc_checked_s']:>10.3f}s "
              f"{r['gc_idle_s']:>9.3f}s {r['gc_s']:>8.3f}s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
