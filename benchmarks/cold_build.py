#!/usr/bin/env python3
"""Cold build: what a wrapper costs when nothing is cached, against no wrapper.

Each round builds the corpus from `cargo clean` with an empty cache once per wrapper, in
the same order every round (none, kache, kache+native, sccache), so that a machine that
slows down or speeds up over the run moves every column alike. Reports, per wrapper, the
median over the rounds of the build's wall time and CPU time, and their overhead against
no wrapper; and, for kache, what its events say a miss cost over rustc's own time.

    python3 benchmarks/cold_build.py /tmp/kc-corpus --kache "$(command -v kache)" \\
        --sccache /path/to/sccache --rounds 3

Columns:
- ``none``: no ``RUSTC_WRAPPER``.
- ``kache``: the Python wrapper, no daemon running.
- ``kache+daemon``: the Python wrapper with the store's daemon (and its runner) running.
- ``kache+native``: the native client (`kache daemon client`, built here once) with the
  store's daemon running, as `kache init` sets a machine up: every call asks the daemon,
  which declines a miss, and the client hands the call to the daemon's runner (or, with
  ``KACHE_DAEMON_MISSES=0``, to kache, told not to ask again).
- ``sccache``: a private sccache server (its own dir and port), run in the foreground.

CPU time is user + system time of cargo and everything it waited for, plus the daemon's
and its runner's (with the calls the runner ran) or the sccache server's own (read from
/proc before and after). ``other_cpu_s`` is what
the rest of the machine used meanwhile (busy time from /proc/stat minus the build's):
well above 0 means another workload shared the cores, and the round says less.

Writes benchmarks/results/cold_build.json (beside this script, whatever the working
directory; overwritten by each run, history in git) unless ``--json`` names another file:
an exploratory run should name one outside the repository.

A benchmark, not a test: needs the corpus (benchmarks/README.md), cargo and rustc.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULT = Path(__file__).resolve().parent / "results" / "cold_build.json"  # this benchmark's one results file
TICK = os.sysconf("SC_CLK_TCK")
WRAPPER_VARIABLES = ("RUSTC_WRAPPER", "RUSTC_WORKSPACE_WRAPPER", "CARGO_BUILD_RUSTC_WRAPPER",
                     "CARGO_BUILD_RUSTC_WORKSPACE_WRAPPER")


def proc_cpu(pid: int | None) -> float:
    """User + system seconds of a live process (and its waited-for children), 0 if gone."""
    if pid is None:
        return 0.0
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return sum(int(x) for x in fields[11:15]) / TICK


def machine_busy() -> float:
    """Busy CPU seconds of the whole machine so far (all processes)."""
    with open("/proc/stat") as f:
        cpu = f.readline().split()
    return sum(int(cpu[i]) for i in (1, 2, 3, 6, 7, 8)) / TICK


def wait_for(path: Path, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            return True
        time.sleep(0.05)
    return False


class Server:
    """What runs beside the build: nothing, kache's daemon, or an sccache server."""

    def __init__(self, kind: str, env: dict[str, str], kache: str | None, sccache: str | None, tmp: Path) -> None:
        self.kind, self.env, self.kache, self.sccache, self.tmp = kind, env, kache, sccache, tmp
        self.pid: int | None = None
        self.runner: int | None = None
        self.proc: subprocess.Popen[bytes] | None = None

    def cpu(self) -> float:
        return proc_cpu(self.pid) + proc_cpu(self.runner)

    def start(self) -> None:
        if self.kind in ("kache+native", "kache+daemon"):
            assert self.kache
            store = Path(self.env["KACHE_CACHE_DIR"])
            subprocess.run([self.kache, "daemon", "start"], env=self.env, check=True, stdout=subprocess.DEVNULL)
            if not wait_for(store / "daemon.sock", 30):
                raise RuntimeError(f"the daemon of {store} did not come up; see {store / 'daemon.log'}")
            self.pid = int((store / "daemon.pid").read_text().split()[0])
            status = subprocess.run([self.kache, "daemon", "status", "--json"], env=self.env, capture_output=True,
                                    text=True, check=False)
            try:
                self.runner = json.loads(status.stdout).get("runner")
            except ValueError:
                self.runner = None
        elif self.kind == "sccache":
            assert self.sccache
            self.env.update({"SCCACHE_DIR": str(self.tmp / "sccache"), "SCCACHE_IDLE_TIMEOUT": "0",
                             "SCCACHE_CACHE_SIZE": "20G",
                             "SCCACHE_SERVER_PORT": str(20000 + random.randrange(20000))})
            self.env.pop("SCCACHE_LOG", None)
            self.proc = subprocess.Popen([self.sccache], env={**self.env, "SCCACHE_START_SERVER": "1",
                                                              "SCCACHE_NO_DAEMON": "1"},
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            self.pid = self.proc.pid
            deadline = time.monotonic() + 30
            while subprocess.run([self.sccache, "--show-stats"], env=self.env, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL).returncode != 0:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError("the sccache server did not come up")
                time.sleep(0.2)

    def stop(self) -> None:
        if self.kind in ("kache+native", "kache+daemon") and self.kache:
            subprocess.run([self.kache, "daemon", "stop"], env=self.env, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
        elif self.proc is not None and self.sccache:
            subprocess.run([self.sccache, "--stop-server"], env=self.env, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()  # only the server this script started
                self.proc.wait()


def kache_misses(events: Path) -> dict[str, float | int]:
    """What kache's events say its misses cost: the call's time (from kache's start, not the
    interpreter's) over rustc's own."""
    if not events.exists():
        return {}
    over = []
    outcomes: dict[str, int] = {}
    for line in events.read_text().splitlines():
        ev = json.loads(line)
        outcomes[ev.get("outcome", "?")] = outcomes.get(ev.get("outcome", "?"), 0) + 1
        if ev.get("outcome") in ("miss", "dup") and "compile_ms" in ev:
            over.append(float(ev["ms"]) - float(ev["compile_ms"]))
    if not over:
        return {"outcomes": outcomes}  # type: ignore[dict-item]
    over.sort()
    return {"outcomes": outcomes, "misses": len(over),  # type: ignore[dict-item]
            "over_rustc_median_ms": round(statistics.median(over), 1),
            "over_rustc_p95_ms": round(over[min(len(over) - 1, int(0.95 * len(over)))], 1),
            "over_rustc_sum_s": round(sum(over) / 1000, 2)}


def base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in WRAPPER_VARIABLES}
    env.update({"CARGO_TERM_COLOR": "never", "CARGO_TERM_PROGRESS_WHEN": "never",
                "PATH": f"{Path.home() / '.cargo' / 'bin'}{os.pathsep}{env.get('PATH', os.defpath)}"})
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def warm_settings(kache: str, store: Path) -> None:
    """Have kache validate its settings for this store once, untimed, as on any machine it
    ran on before: the first call after a ``KACHE_*`` variable changes reads and validates
    the configuration (~0.1-0.2 s), and every build here has the same store path. Twice:
    the native client's fallback adds ``KACHE_DAEMON_HITS=0``, another identity."""
    with tempfile.TemporaryDirectory(prefix="kache-cold-warm-") as tmp:
        (Path(tmp) / "lib.rs").write_text("pub fn f() {}\n")
        for extra in ({}, {"KACHE_DAEMON_HITS": "0"}):
            shutil.rmtree(store, ignore_errors=True)
            store.mkdir(parents=True)
            env = {**base_env(), "KACHE_CACHE_DIR": str(store), **extra}
            subprocess.run([kache, "rustc", "--crate-name", "warm", "--crate-type", "lib", "--edition", "2021",
                            "--emit=dep-info,metadata", "--out-dir", tmp, "lib.rs"], cwd=tmp, env=env, check=True)


def build(corpus: Path, name: str, wrapper: str | None, kache: str | None, sccache: str | None,
          store: Path) -> dict:
    """One cold build of the corpus: cargo clean, then cargo build with an empty cache."""
    with tempfile.TemporaryDirectory(prefix="kache-cold-") as tmp_name:
        tmp = Path(tmp_name)
        env = base_env()
        if name.startswith("kache"):
            shutil.rmtree(store, ignore_errors=True)
            store.mkdir(parents=True)
            env["KACHE_CACHE_DIR"] = str(store)
        subprocess.run(["cargo", "clean", "-q"], cwd=corpus, env=env, check=True)
        server = Server(name, env, kache, sccache, tmp)
        server.start()
        try:
            if wrapper:
                env["RUSTC_WRAPPER"] = wrapper
            log = tmp / "cargo.log"
            s0, b0 = server.cpu(), machine_busy()
            t0 = time.monotonic()
            with open(log, "wb") as out:
                proc = subprocess.Popen(["cargo", "build", "--offline"], cwd=corpus, env=env, stdout=out,
                                        stderr=subprocess.STDOUT)
                _, status, usage = os.wait4(proc.pid, 0)
            wall = time.monotonic() - t0
            s1, b1 = server.cpu(), machine_busy()
        finally:
            server.stop()
        text = log.read_text(errors="replace")
        if os.waitstatus_to_exitcode(status) != 0:
            sys.stderr.write(text[-4000:])
            raise RuntimeError(f"cargo build failed for {name}")
        cpu = usage.ru_utime + usage.ru_stime + (s1 - s0)
        row: dict = {"wall_s": round(wall, 2), "cpu_s": round(cpu, 1), "server_cpu_s": round(s1 - s0, 2),
                     "other_cpu_s": round(max(0.0, b1 - b0 - cpu), 1),
                     "units": sum(1 for line in text.splitlines() if line.lstrip().startswith("Compiling "))}
        if name.startswith("kache"):
            row["kache"] = kache_misses(store / "events.jsonl")
            shutil.rmtree(store, ignore_errors=True)
        return row


def median(rows: list[dict], field: str) -> float:
    return float(statistics.median(r[field] for r in rows))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("corpus", type=Path)
    ap.add_argument("--kache", default=shutil.which("kache"), help="the kache to measure (default: on PATH)")
    ap.add_argument("--sccache", default=shutil.which("sccache"), help="sccache to compare with (default: on PATH)")
    ap.add_argument("--no-native", action="store_true", help="leave out the kache+native column")
    ap.add_argument("--daemon", action="store_true", help="add the kache+daemon column")
    ap.add_argument("--only", help="the columns to run, comma-separated (none is always run)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", type=Path, default=RESULT,
                    help="where the results go (default: benchmarks/results/cold_build.json beside this script, "
                         "overwritten by each run; history is in git)")
    args = ap.parse_args()

    wrappers: dict[str, str | None] = {"none": None}
    if args.kache:
        args.kache = os.path.abspath(args.kache)
        wrappers["kache"] = args.kache
        if args.daemon:
            wrappers["kache+daemon"] = args.kache
        if not args.no_native:
            native_dir = Path(tempfile.mkdtemp(prefix="kache-bench-native-"))
            atexit.register(shutil.rmtree, native_dir, True)
            wrappers["kache+native"] = str(native_dir / "kache-client")
            subprocess.run([args.kache, "daemon", "client", "--output", wrappers["kache+native"]], check=True,
                           stdout=sys.stderr)
    if args.sccache:
        wrappers["sccache"] = os.path.abspath(args.sccache)
    if args.only:
        keep = {"none", *args.only.split(",")}
        wrappers = {name: wrapper for name, wrapper in wrappers.items() if name in keep}
    # One store path for every build (emptied before each): the settings kache validated
    # for it once stay valid, as on a machine that used kache before.
    store_root = Path(tempfile.mkdtemp(prefix="kache-cold-store-"))
    atexit.register(shutil.rmtree, store_root, True)
    store = store_root / "store"
    if args.kache:
        warm_settings(args.kache, store)
    results: dict[str, list[dict]] = {name: [] for name in wrappers}
    for r in range(args.rounds):
        for name, wrapper in wrappers.items():
            print(f"round {r + 1}/{args.rounds}: {name}", file=sys.stderr, flush=True)
            row = build(args.corpus, name, wrapper, args.kache, args.sccache, store)
            print(f"  wall {row['wall_s']} s, cpu {row['cpu_s']} s, other cpu {row['other_cpu_s']} s, "
                  f"{row['units']} units", file=sys.stderr, flush=True)
            results[name].append(row)

    base_wall, base_cpu = median(results["none"], "wall_s"), median(results["none"], "cpu_s")
    summary = {}
    print(f"\n{'wrapper':<14}{'walls (s)':>28}{'median wall':>13}{'median cpu':>12}{'wall':>9}{'cpu':>9}")
    for name, rows in results.items():
        wall, cpu = median(rows, "wall_s"), median(rows, "cpu_s")
        summary[name] = {"median_wall_s": round(wall, 2), "median_cpu_s": round(cpu, 1),
                         "wall_overhead": round(wall / base_wall - 1, 4), "cpu_overhead": round(cpu / base_cpu - 1, 4)}
        walls = " / ".join(f"{r['wall_s']:.1f}" for r in rows)
        print(f"{name:<14}{walls:>28}{wall:>13.2f}{cpu:>12.1f}{wall / base_wall - 1:>+9.1%}{cpu / base_cpu - 1:>+9.1%}")
    for name, rows in results.items():
        for r in rows:
            k = r.get("kache") or {}
            if "misses" in k:
                print(f"{name}: {k['misses']} misses, kache over rustc per miss: median {k['over_rustc_median_ms']} ms, "
                      f"p95 {k['over_rustc_p95_ms']} ms, {k['over_rustc_sum_s']} s in all (from kache's start)")
    if max(r["other_cpu_s"] for rows in results.values() for r in rows) > 5:
        print("note: other processes used the CPU during some builds (other_cpu_s): a noisy run")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
            "order": list(wrappers), "rounds": args.rounds, "results": results, "summary": summary}, indent=2) + "\n")
        print(f"results: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
