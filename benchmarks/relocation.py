#!/usr/bin/env python3
"""Relocation: the same workspace built on "machine A", then on "machine B" over A's store.

Machine B has another checkout path, another HOME and another CARGO_HOME; everything
else (toolchain, the corpus's directory source of Debian's crates) is the same, as on a
CI runner or a new laptop that pulls the team's cache. Prints how many cacheable units
B served from the cache, which it compiled and why (`kache why-miss`), and how many
entries A's build pinned to its own paths (kache.engine.portable).

    python3 benchmarks/relocation.py /tmp/kc-corpus --kache "$(command -v kache)"

A benchmark, not a test: the hit rate is a property of kache and the corpus; the times
depend on the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULT = Path(__file__).resolve().parent / "results" / "relocation.json"  # this benchmark's one results file

CACHEABLE = {"miss", "local_hit", "dup", "prefetch_hit", "remote_hit"}


def cacheable(e: dict) -> bool:
    """A unit kache could have served: not a pass-through, not a compile that failed (the
    build-script probes of anyhow and thiserror fail on stable by design)."""
    return e.get("outcome") in CACHEABLE and e.get("reason") != "compile-failed"


def copy_checkout(src: Path, dst: Path) -> None:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("target"), symlinks=True)


def machine_env(base: Path, kache: str, store: Path) -> dict[str, str]:
    home = base / "home"
    (home / ".cargo").mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("KACHE_", "CARGO_", "RUSTC_WRAPPER", "RUSTC_WORKSPACE_WRAPPER"))}
    rustup_home = os.environ.get("RUSTUP_HOME", os.path.expanduser("~/.rustup"))
    env.update({"HOME": str(home), "CARGO_HOME": str(home / ".cargo"), "RUSTUP_HOME": rustup_home,
                "XDG_CACHE_HOME": str(home / ".cache"), "XDG_CONFIG_HOME": str(home / ".config"),
                "RUSTC_WRAPPER": kache, "KACHE_CACHE_DIR": str(store), "KACHE_DAEMON_AUTOSTART": "0"})
    # rustup's proxies live in the real CARGO_HOME: keep them on PATH
    env["PATH"] = os.pathsep.join([str(Path(shutil.which("cargo") or "cargo").parent), env.get("PATH", "")])
    return env


def events(store: Path, skip: int) -> list[dict]:
    path = store / "events.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    return [json.loads(line) for line in lines[skip:]]


def build(checkout: Path, env: dict[str, str]) -> float:
    start = time.monotonic()
    out = subprocess.run(["cargo", "build", "--offline", "-q"], cwd=checkout, env=env, capture_output=True,
                         text=True)
    if out.returncode != 0:
        sys.exit(f"cargo build failed in {checkout}:\n{out.stderr[-3000:]}")
    return time.monotonic() - start


def pinned(store: Path) -> list[tuple[str, list]]:
    db = sqlite3.connect(store / "index.db")
    rows = db.execute("SELECT e.crate_name, m.inputs FROM manifests m JOIN entries e ON e.key = m.key").fetchall()
    out = []
    for crate, inputs in rows:
        local = json.loads(inputs).get("local")
        if local:
            out.append((crate, local))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("corpus", type=Path)
    ap.add_argument("--kache", default=shutil.which("kache"))
    ap.add_argument("--json", type=Path, default=RESULT,
                    help="where the results go (default: benchmarks/results/relocation.json, overwritten by each run; history is in git)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary machines (printed)")
    args = ap.parse_args()
    if not args.kache:
        sys.exit("no kache: pass --kache")
    tmp = Path(tempfile.mkdtemp(prefix="kache-relocation-"))
    store = tmp / "store"
    a_dir, b_dir = tmp / "a", tmp / "b"
    a_ws, b_ws = a_dir / "src" / "kc", b_dir / "work" / "deeper" / "checkout"
    copy_checkout(args.corpus, a_ws)
    copy_checkout(args.corpus, b_ws)
    env_a, env_b = machine_env(a_dir, args.kache, store), machine_env(b_dir, args.kache, store)
    try:
        t_a = build(a_ws, env_a)
        ev_a = events(store, 0)
        t_b = build(b_ws, env_b)
        ev_b = events(store, len(ev_a))
        outcomes_b = [e for e in ev_b if cacheable(e)]
        hits = [e for e in outcomes_b if e["outcome"] != "miss" and e["outcome"] != "dup"]
        misses = sorted({e["crate"] for e in outcomes_b if e["outcome"] in ("miss", "dup")})
        why = {}
        for crate in misses[:20]:
            out = subprocess.run([args.kache, "why-miss", crate, "--json"], env=env_b, capture_output=True, text=True)
            why[crate] = out.stdout.strip()[:2000] if out.returncode == 0 else out.stderr.strip()[:500]
        pins = pinned(store)
        result = {
            "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version()},
            "corpus": str(args.corpus),
            "a": {"seconds": round(t_a, 1), "cacheable": sum(1 for e in ev_a if cacheable(e))},
            "b": {"seconds": round(t_b, 1), "cacheable": len(outcomes_b), "hits": len(hits),
                  "hit_rate": round(len(hits) / len(outcomes_b), 4) if outcomes_b else None,
                  "missed": misses, "why": why},
            "pinned_entries": [{"crate": c, "local": loc} for c, loc in pins],
        }
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"machines kept in {tmp}")
    b = result["b"]
    print(f"machine A: cold build {result['a']['seconds']} s, {result['a']['cacheable']} cacheable units")
    print(f"machine B: build {b['seconds']} s, {b['hits']} / {b['cacheable']} cacheable units from the cache "
          f"({100 * (b['hit_rate'] or 0):.1f} %)")
    if b["missed"]:
        print("compiled on B: " + ", ".join(b["missed"]))
    print(f"entries pinned to machine A's paths: {len(result['pinned_entries'])}"
          + "".join(f"\n  {p['crate']}: {', '.join(s for s, _ in p['local'])}" for p in result["pinned_entries"]))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
