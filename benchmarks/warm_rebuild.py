#!/usr/bin/env python3
"""Warm rebuild after `cargo clean`: no wrapper vs kache vs sccache, side by side.

Runs ../shared/bench/bench.sh (or $KACHE_BENCH_DIR/bench.sh) on a corpus made by its
setup-corpus.sh, alternating A B A B per round, then prints a table and writes JSON:
wall time of each step per wrapper, and kache's per-hit wrapper wall time (median,
p95) from its own event log.

    python3 benchmarks/warm_rebuild.py /tmp/kc-corpus --kache "$(command -v kache)" \
        --rounds 2 --steps "cold warm noop" --native

--daemon adds kache with its daemon serving the hits to the Python wrapper, --native
the same daemon serving the native client (`kache daemon client`, built here).

A benchmark, not a test: numbers depend on the machine and on what else runs on it
(bench.sh's other_cpu column says how much did).
"""

from __future__ import annotations

import argparse
import atexit
import csv
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULT = Path(__file__).resolve().parent / "results" / "warm_rebuild.json"  # this benchmark's one results file
DEFAULT_BENCH = HERE.parent.parent / "shared" / "bench"


def run_bench(bench: Path, corpus: Path, wrapper: str | None, steps: str, events_out: Path | None,
              daemon: bool = False, kache: str | None = None) -> list[dict]:
    with tempfile.TemporaryDirectory() as tmp:
        tsv = Path(tmp) / "out.tsv"
        env = {**os.environ, "BENCH_STEPS": steps, "BENCH_TSV": str(tsv)}
        if wrapper and Path(wrapper).name.startswith("kache"):
            env["BENCH_CACHE_DIR_VAR"] = "KACHE_CACHE_DIR"
            # keep kache's events: the cache dir is removed when bench.sh exits
            env["BENCH_STATS_CMD"] = f'cp "$KACHE_CACHE_DIR/events.jsonl" "{events_out}" 2>/dev/null || true'
            if daemon:
                # A daemon on the step's store from the second step on (the cold build runs
                # without one); it serves hits (cache.daemon_hits) and exits when idle.
                env["KACHE_DAEMON_IDLE_TIMEOUT"] = "20"
                env["BENCH_RESET_CMD"] = f'"{wrapper}" daemon start >/dev/null 2>&1; sleep 0.5'
                if kache is not None:
                    # The native client (the wrapper here) asks the socket of the store it
                    # was built for, and bench.sh makes a new store per run: build it again
                    # for this one (not timed). The cold step runs with the client built
                    # before, which falls back to kache.
                    env["BENCH_RESET_CMD"] = (f'"{kache}" daemon client --output "{wrapper}" >/dev/null 2>&1; '
                                              f'"{kache}" daemon start >/dev/null 2>&1; sleep 0.5')
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        cmd = [str(bench / "bench.sh"), str(corpus)] + ([wrapper] if wrapper else [])
        if subprocess.run(cmd, env=env, stdout=sys.stderr).returncode != 0:
            # Once more: a run that could not start (sccache's server timing out at start
            # on a busy machine) should not cost the rounds already measured.
            print(f"bench.sh failed for {wrapper or 'no wrapper'}; running it again", file=sys.stderr)
            subprocess.run(cmd, env=env, check=True, stdout=sys.stderr)
        with open(tsv) as f:
            return list(csv.DictReader(f, delimiter="\t"))


def hit_times(events_path: Path) -> dict[str, float | int]:
    if not events_path.exists():
        return {}
    ms = []
    via_daemon = 0
    for line in events_path.read_text().splitlines():
        ev = json.loads(line)
        if ev.get("outcome") == "local_hit":
            ms.append(float(ev["ms"]))
            via_daemon += ev.get("via") == "daemon"
    if not ms:
        return {}
    ms.sort()
    return {"hits": len(ms), "median_ms": round(statistics.median(ms), 1),
            "p95_ms": round(ms[min(len(ms) - 1, int(0.95 * len(ms)))], 1), "via_daemon": via_daemon}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("corpus", type=Path)
    ap.add_argument("--bench", type=Path, default=Path(os.environ.get("KACHE_BENCH_DIR", DEFAULT_BENCH)))
    ap.add_argument("--kache", default=shutil.which("kache"))
    ap.add_argument("--sccache", default=shutil.which("sccache"))
    ap.add_argument("--daemon", action="store_true",
                    help="also run kache with a daemon serving hits (column kache+daemon)")
    ap.add_argument("--native", action="store_true",
                    help="also run kache with a daemon serving hits to the native client, `kache daemon "
                         "client`, as the wrapper (column kache+native)")
    ap.add_argument("--steps", default="cold warm noop")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--json", type=Path, default=RESULT,
                    help="where the results go (default: benchmarks/results/warm_rebuild.json, overwritten by each run; history is in git)")
    args = ap.parse_args()

    wrappers: dict[str, str | None] = {"none": None}
    if args.kache:
        wrappers["kache"] = args.kache
        if args.daemon:
            wrappers["kache+daemon"] = args.kache
        if args.native:
            native_dir = Path(tempfile.mkdtemp(prefix="kache-bench-native-"))
            atexit.register(shutil.rmtree, native_dir, True)
            wrappers["kache+native"] = str(native_dir / "kache-client")
            subprocess.run([args.kache, "daemon", "client", "--output", wrappers["kache+native"]], check=True,
                           stdout=sys.stderr)
    if args.sccache:
        wrappers["sccache"] = args.sccache
    results: dict[str, list[list[dict]]] = {name: [] for name in wrappers}
    hits: dict[str, list[dict]] = {name: [] for name in wrappers if name.startswith("kache")}
    for r in range(args.rounds):
        order = list(wrappers.items()) if r % 2 == 0 else list(reversed(wrappers.items()))
        for name, wrapper in order:
            print(f"round {r + 1}: {name}", file=sys.stderr)
            with tempfile.TemporaryDirectory() as tmp:
                ev = Path(tmp) / "events.jsonl"
                results[name].append(run_bench(args.bench, args.corpus, wrapper, args.steps, ev,
                                               daemon=name in ("kache+daemon", "kache+native"),
                                               kache=args.kache if name == "kache+native" else None))
                if name in hits:
                    hits[name].append(hit_times(ev))

    steps = args.steps.split()

    def walls(name: str, step: str) -> list[str]:
        return [row["wall_s"] for run in results[name] for row in run if row["step"] == step]

    table = {step: [" / ".join(walls(name, step)) for name in wrappers] for step in steps}
    width = max([22, *(len(c) + 2 for cells in table.values() for c in cells)])
    print(f"\n{'step':<10}" + "".join(f"{n:>{width}}" for n in wrappers))
    for step, cells in table.items():
        print(f"{step:<10}" + "".join(f"{c:>{width}}" for c in cells))
    # each wrapper against no wrapper, on the mean of the rounds (the cold bound is +5 %)
    for step in steps:
        base = [float(w) for w in walls("none", step)]
        if not base or statistics.mean(base) <= 0:
            continue
        ratios = [f"{name} {statistics.mean(float(w) for w in walls(name, step)) / statistics.mean(base) - 1:+.1%}"
                  for name in wrappers if name != "none" and walls(name, step)]
        print(f"{step}, mean wall time against no wrapper: " + ", ".join(ratios))
    if "sccache" in wrappers and "warm" in steps:
        s = [float(row["wall_s"]) for run in results["sccache"] for row in run if row["step"] == "warm"]
        for name in hits:
            k = [float(row["wall_s"]) for run in results[name] for row in run if row["step"] == "warm"]
            print(f"\nwarm rebuild, {name} / sccache: {statistics.mean(k) / statistics.mean(s):.2f}")
    for name, runs in hits.items():
        for h in runs:
            if h:
                print(f"{name} hits: {h['hits']} ({h['via_daemon']} served by the daemon), wrapper wall time per "
                      f"hit: median {h['median_ms']} ms, p95 {h['p95_ms']} ms")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
            "steps": steps, "results": results, "kache_hits": hits}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
