#!/usr/bin/env python3
"""Differential testing of kache against plain cargo: the long run.

Generates small workspaces and sequences of operations (tests/differential), builds
every step through kache and without it, and prints how many sequences, steps and
builds it tried and every divergence, each with a minimal reproduction (hypothesis
shrinks it) and a shell script that replays it:

    python3 benchmarks/differential.py --examples 200 --steps 8 --seed 1
    python3 benchmarks/differential.py --kache /work/base/.venv/bin/kache --examples 40

Exit status: 0 no divergence, 1 divergences, 2 the harness itself failed.

Hypothesis stops generating about ten seconds after its first failure; the failure is
minimised (at most --shrink-seconds: by replaying concrete sequences, or with
--shrink hypothesis by hypothesis's shrinker). To find more than one kind of divergence per run, the
script runs rounds: each round's divergences are remembered by signature (what differed
— the aspect and the facet labels of the differing lines — and after which kind of
operation), later rounds count a divergence with a known signature as a repeat instead
of failing on it, and the rounds continue until --examples sequences were generated.
"Sequences tried" counts every sequence run, shrinking included.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULT = Path(__file__).resolve().parent / "results" / "differential.json"  # this benchmark's one results file
sys.path.insert(0, str(ROOT))

from hypothesis.errors import FlakyFailure  # noqa: E402

from tests.differential.harness import Divergence, Options  # noqa: E402
from tests.differential.strategies import default_kache, make_property  # noqa: E402


def collect(exc: BaseException, flaky: bool = False) -> tuple[list[tuple[Divergence, bool]], list[BaseException]]:
    """Divergences (with whether hypothesis found them flaky) and other errors in ``exc``."""
    if isinstance(exc, Divergence):
        return [(exc, flaky)], []
    if isinstance(exc, BaseExceptionGroup):
        divs: list[tuple[Divergence, bool]] = []
        other: list[BaseException] = []
        for sub in exc.exceptions:
            d, o = collect(sub, flaky or isinstance(exc, FlakyFailure))
            divs += d
            other += o
        return divs, other
    return [], [exc]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--examples", type=int, default=int(os.environ.get("KACHE_DIFF_EXAMPLES", 50)),
                    help="sequences to generate (default 50)")
    ap.add_argument("--steps", type=int, default=int(os.environ.get("KACHE_DIFF_STEPS", 8)),
                    help="most steps per sequence (default 8)")
    ap.add_argument("--seed", type=int, default=int(os.environ.get("KACHE_DIFF_SEED", 0)))
    ap.add_argument("--kache", default=default_kache(), help="kache executable ($KACHE_DIFF_KACHE, else the venv's)")
    ap.add_argument("--daemon", action="store_true", help="start a daemon (kache daemon start) that serves the hits")
    ap.add_argument("--bytes", action="store_true",
                    help="also compare each hit's artifacts byte for byte with a real compile (KACHE_INCREMENTAL=drop)")
    ap.add_argument("--incremental", choices=("auto", "keep", "drop"), default=None,
                    help="KACHE_INCREMENTAL for the kache side (default: kache's)")
    ap.add_argument("--max-libs", type=int, default=3)
    ap.add_argument("--shrink", choices=("replay", "hypothesis", "none"), default="replay",
                    help="how a divergence is minimised: replay (default; tests/differential/minimize.py), "
                         "hypothesis (its own shrinker), none")
    ap.add_argument("--shrink-seconds", type=int, default=300, help="the minimiser's budget per divergence")
    ap.add_argument("--strict-paths", action="store_true",
                    help="no trim-paths equivalence for a dependency's file!() (tests/differential/observe.py)")
    ap.add_argument("--workdir", type=Path, default=None, help="where run directories go (default: a temp dir)")
    ap.add_argument("--repro-dir", type=Path, default=None,
                    help="where reproduction scripts are written (default: <workdir>/repro)")
    ap.add_argument("--keep", action="store_true", help="keep every run directory")
    ap.add_argument("--json", type=Path, default=RESULT,
                    help="where the results go (default: benchmarks/results/differential.json, overwritten by each run; history is in git)")
    ap.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    args = ap.parse_args(argv)

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="kache-differential-"))
    repro_dir = args.repro_dir or workdir / "repro"
    log = None if args.quiet else (lambda s: print(s, file=sys.stderr, flush=True))
    opts = Options(kache=os.path.abspath(args.kache) if os.sep in args.kache else args.kache,
                   workdir=workdir / "runs", daemon=args.daemon, bytes_check=args.bytes,
                   incremental=args.incremental, keep=args.keep, repro_dir=repro_dir, log=log,
                   shrink=args.shrink, shrink_seconds=args.shrink_seconds, strict_paths=args.strict_paths)
    c = opts.counters
    found: list[tuple[Divergence, bool]] = []
    errors: list[BaseException] = []
    remaining, rnd = args.examples, 0
    while remaining > 0:
        before = c.sequences
        opts.first_failure_at = None
        prop = make_property(opts, examples=remaining, max_steps=args.steps, seed_value=args.seed + rnd,
                             max_libs=args.max_libs)
        if log:
            log(f"== round {rnd + 1}: up to {remaining} sequence(s), seed {args.seed + rnd}, "
                f"{len(opts.known)} known divergence(s) masked")
        try:
            prop()
            divs, other = [], []
        except BaseException as e:  # noqa: BLE001 - hypothesis raises groups, and we report everything
            if isinstance(e, KeyboardInterrupt):
                raise
            divs, other = collect(e)
        # The generation phase ends at the first failure (plus ~10 s): count the sequences
        # generated up to then against the budget, not the shrinking runs after it.
        generated = (opts.first_failure_at if opts.first_failure_at is not None else c.sequences) - before
        remaining -= max(generated, 1)
        rnd += 1
        new = 0
        for d, flaky in divs:
            if d.signature not in opts.known:
                opts.known[d.signature] = d.report
                found.append((d, flaky))
                new += 1
        errors += other
        if other or (not divs):
            break
        if new == 0:  # hypothesis failed on nothing new (should not happen): stop rather than loop
            break

    c.divergences = len(found)
    elapsed = time.monotonic() - c.started
    print(f"sequences tried: {c.sequences} · steps: {c.steps} · builds: {c.builds} · divergences: {len(found)}")
    if args.bytes:
        print(f"byte comparisons: {c.bytes_checks} steps, {c.bytes_files} artifacts of hits compared")
    print(f"kache: {opts.kache} · daemon: {'yes' if args.daemon else 'no'} · bytes: {'yes' if args.bytes else 'no'}"
          f" · seed: {args.seed} · rounds: {rnd} · {elapsed / 60:.1f} min · run dirs: {opts.workdir}")
    if opts.repeats:
        print("repeats of known divergences (masked): "
              + ", ".join(f"{k} ×{v}" for k, v in sorted(opts.repeats.items())))
    for note in opts.notes:
        print(f"oracle note: {note}")
    for n, (d, flaky) in enumerate(found, 1):
        print(f"  {n}. {d.signature}{'  (flaky)' if flaky else ''}  {d.script_path or ''}")
    for n, (d, flaky) in enumerate(found, 1):
        print()
        print("=" * 100)
        print(f"divergence {n}/{len(found)}: {d.signature}" + ("  (FLAKY: did not always reproduce)" if flaky else ""))
        print("=" * 100)
        print(str(d))  # the report, then the reproduction script
    for e in errors:
        print()
        print("HARNESS ERROR:")
        print("".join(traceback.format_exception(e)))
    if args.json:
        args.json.write_text(json.dumps({
            "sequences": c.sequences, "steps": c.steps, "builds": c.builds, "divergences": len(found),
            "kache": opts.kache, "seed": args.seed, "examples": args.examples, "max_steps": args.steps,
            "daemon": args.daemon, "bytes": args.bytes, "seconds": round(elapsed, 1),
            "bytes_checks": c.bytes_checks, "bytes_files": c.bytes_files,
            "reports": [{"signature": d.signature, "flaky": flaky, "report": d.report, "script": d.script_path}
                        for d, flaky in found],
            "repeats": opts.repeats, "notes": opts.notes,
            "errors": ["".join(traceback.format_exception(e)) for e in errors]}, indent=2))
    if errors:
        return 2
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
