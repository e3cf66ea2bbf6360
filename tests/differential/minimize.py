"""Minimising a divergence by replaying concrete sequences.

Each test case here costs seconds (several cargo builds), so hypothesis's generic
shrinker, which tries one small change per run, gets only a little way in its time
budget. This minimiser knows the domain and takes big steps first, each a replay of a
concrete (workspace, steps) pair that must end in a divergence with the *same
signature*:

1. keep, in every library, only the facets the divergence's labels name (a
   ``stdout[macro_env]`` divergence needs the macro_env facet and nothing else);
2. drop libraries (remapping the indices the steps name) and the workspace-level parts
   (kd_ext, kd_app's test, kd_macros users, the initial RUSTC);
3. switch the remaining facets off one at a time;
4. delta-debug the steps (remove chunks, then single steps);
5. make each remaining command a plain build, and each relocation a simpler one;

and repeats while anything shrank, within ``seconds``. The result is 1-minimal for
these moves (no single one still reproduces), not globally minimal.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator

from tests.differential.harness import Divergence, Harness, Options, SequenceStopped
from tests.differential.ops import Command, Nothing, Op, Relocate, Step
from tests.differential.workspace import BuildSpec, LibSpec, WsSpec

# Which facets a label of a divergence may come from (observe.labels).
_LABEL_FACETS = {
    "feature": ("feature",), "cfg": ("cfg",), "env": ("env",), "env_paths": ("env_paths",),
    "manifest_dir": ("manifest_dir",), "file_paths": ("file_paths",), "macro_env": ("macro_env",),
    "include": ("include",), "symlink": ("symlink",), "gen": ("build",), "c": ("build",),
    "proc_macro": ("proc_macro",),
}
_BOOL_FACETS = ("feature", "cfg", "env", "env_paths", "manifest_dir", "file_paths", "macro_env", "include",
                "symlink", "proc_macro", "tests")


def replay(opts: Options, spec: WsSpec, steps: list[Step]) -> Divergence | None:
    """Run ``steps`` (the first is the initial build) on ``spec``; the divergence, if any
    (quietly: the minimiser logs its progress itself)."""
    opts.counters.sequences += 1
    log, opts.log = opts.log, None
    try:
        with Harness(opts, name="min") as h:
            h.start(spec)
            for step in steps:
                h.step(step)
    except Divergence as d:
        return d
    except SequenceStopped:
        return None
    finally:
        opts.log = log
    return None


def _relevant(spec: WsSpec, labels: list[str]) -> WsSpec:
    """``spec`` with, in every library, only the facets the labels name (value lines keep
    what feeds the value: deps, the C library, the proc macro)."""
    keep: set[str] = set()
    value = False
    for label in labels:
        base = label.lstrip("+-").split(":")[0]
        if base.startswith("kd_lib") or base in ("total", "exit") or base.startswith("added"):
            value = True
        keep.update(_LABEL_FACETS.get(base, ()))
        if base.startswith("clippy::") or label.lstrip("+-") in ("dead_code", "unused_mut"):
            keep.add("lint")
        if base.startswith("test"):
            keep.add("tests")
    libs = []
    for lib in spec.libs:
        changes: dict[str, object] = {f: getattr(lib, f) and f in keep for f in _BOOL_FACETS}
        if "lint" not in keep:
            changes["lint"] = None
        build = lib.build
        if build is not None and "build" not in keep and not (value and build.c):
            build = None
        changes["build"] = build
        changes["proc_macro"] = lib.proc_macro and (value or "proc_macro" in keep)
        libs.append(dataclasses.replace(lib, **changes))  # type: ignore[arg-type]
    # (the value line of a library also shows its C library and proc macro: kept above)
    return dataclasses.replace(spec, libs=tuple(libs))


def _without_lib(spec: WsSpec, steps: list[Step], j: int) -> tuple[WsSpec, list[Step]] | None:
    if len(spec.libs) <= 1:
        return None
    libs = []
    for i, lib in enumerate(spec.libs):
        if i == j:
            continue
        deps = tuple(d - (d > j) for d in lib.deps if d != j)
        macro_env = lib.macro_env and 0 in deps and i - (i > j) > 0
        libs.append(dataclasses.replace(lib, deps=deps, macro_env=macro_env))
    new_steps = []
    for s in steps:
        op: Op = s.op
        lib = getattr(op, "lib", None)
        if lib is not None:
            op = Nothing() if lib == j else dataclasses.replace(op, lib=lib - (lib > j))  # type: ignore[arg-type]
        cmd = s.command
        if cmd.package and cmd.package.startswith("kd_lib"):
            k = int(cmd.package[6:])
            cmd = dataclasses.replace(cmd, package=None if k == j else f"kd_lib{k - (k > j)}")
        new_steps.append(Step(op, cmd))
    return dataclasses.replace(spec, libs=tuple(libs)), new_steps


def _facet_cuts(spec: WsSpec) -> Iterator[WsSpec]:
    """``spec`` with one facet less, every way."""
    for field in ("ext", "app_test"):
        if getattr(spec, field):
            yield dataclasses.replace(spec, **{field: False})
    if spec.rustc is not None:
        yield dataclasses.replace(spec, rustc=None, rustc_flags="")
    for i, lib in enumerate(spec.libs):
        cuts: list[LibSpec] = []
        for f in _BOOL_FACETS:
            if getattr(lib, f):
                cuts.append(dataclasses.replace(lib, **{f: False}))
        if lib.lint is not None:
            cuts.append(dataclasses.replace(lib, lint=None))
        if lib.build is not None:
            cuts.append(dataclasses.replace(lib, build=None))
            if lib.build.gen and lib.build.c:
                cuts.append(dataclasses.replace(lib, build=BuildSpec(gen=None, c=lib.build.c)))
                cuts.append(dataclasses.replace(lib, build=BuildSpec(gen=lib.build.gen, c=None)))
        for d in lib.deps:
            if not (lib.macro_env and d == 0):
                cuts.append(dataclasses.replace(lib, deps=tuple(x for x in lib.deps if x != d)))
        for cut in cuts:
            libs = list(spec.libs)
            libs[i] = cut
            yield dataclasses.replace(spec, libs=tuple(libs))


def _simpler_steps(steps: list[Step]) -> Iterator[list[Step]]:
    """``steps`` with one step made simpler (not the last: its command shows the divergence)."""
    for k in range(1, len(steps)):
        s = steps[k]
        if not isinstance(s.op, Nothing):
            yield steps[:k] + [Step(Nothing(), s.command)] + steps[k + 1:]
        if k < len(steps) - 1 and s.command != Command("build"):
            yield steps[:k] + [Step(s.op, Command("build"))] + steps[k + 1:]
        if isinstance(s.op, Relocate):
            for simpler in (dataclasses.replace(s.op, home=0, cargo_home=0), dataclasses.replace(s.op, mode="clone")):
                if simpler != s.op:
                    yield steps[:k] + [Step(simpler, s.command)] + steps[k + 1:]
        if s.command.verb == "clippy":
            c = s.command
            for simpler_cmd in (dataclasses.replace(c, deny_warnings=False), dataclasses.replace(c, no_deps=False),
                                dataclasses.replace(c, package=None)):
                if simpler_cmd != c:
                    yield steps[:k] + [Step(s.op, simpler_cmd)] + steps[k + 1:]


def minimize(opts: Options, spec: WsSpec, steps: list[Step], found: Divergence, seconds: float) -> Divergence:
    """The smallest (spec, steps) this finds that still diverges with ``found``'s signature,
    as its Divergence (whose report says how far it got)."""
    signature = found.signature
    deadline = time.monotonic() + seconds
    best = found
    replays = 0
    start_desc = f"{len(spec.libs)} lib(s), {sum(len(lib.facets()) for lib in spec.libs)} facet(s), " \
                 f"{len(steps) - 1} step(s)"
    log = opts.log

    def attempt(cand_spec: WsSpec, cand_steps: list[Step]) -> bool:
        nonlocal spec, steps, best, replays
        if time.monotonic() > deadline:
            return False
        replays += 1
        d = replay(opts, cand_spec, cand_steps)
        if d is not None and d.signature == signature:
            spec, steps, best = cand_spec, _truncate(cand_steps, d), d
            if log:
                log(f"      minimised: {len(spec.libs)} lib(s), "
                    f"{sum(len(lib.facets()) for lib in spec.libs)} facet(s), {len(steps) - 1} step(s)")
            return True
        return False

    labels = signature.split("[", 1)[1].rsplit("]", 1)[0].split(",") if "[" in signature else []
    if log:
        log(f"    minimising {signature} ({start_desc}), at most {seconds:.0f}s")
    progress = True
    first = True
    while progress and time.monotonic() < deadline:
        progress = False
        if first:
            cut = _relevant(spec, labels)
            if cut != spec:
                progress |= attempt(cut, steps)
            first = False
        for j in reversed(range(len(spec.libs))):
            if j < len(spec.libs):
                reduced = _without_lib(spec, steps, j)
                if reduced is not None:
                    progress |= attempt(*reduced)
        progress |= _ddmin_steps(attempt, lambda: (spec, steps))
        changed = True
        while changed and time.monotonic() < deadline:
            changed = False
            for cand in _facet_cuts(spec):
                if attempt(cand, steps):
                    changed = progress = True
                    break
        changed = True
        while changed and time.monotonic() < deadline:
            changed = False
            for cand_steps in _simpler_steps(steps):
                if attempt(spec, cand_steps):
                    changed = progress = True
                    break
    done = "done" if time.monotonic() < deadline else "time budget used up"
    note = (f"minimised by replay ({replays} replays, {done}): from {start_desc} to {len(spec.libs)} lib(s), "
            f"{sum(len(lib.facets()) for lib in spec.libs)} facet(s), {len(steps) - 1} step(s)")
    return best.saved(opts.repro_dir, note)


def _truncate(steps: list[Step], d: Divergence) -> list[Step]:
    """The steps up to the one that diverged (its index is in the report)."""
    marker = "diverged at step "
    i = d.report.find(marker)
    if i < 0:
        return steps
    n = int(d.report[i + len(marker):].split(" ", 1)[0])
    return steps[:n + 1]


def _ddmin_steps(attempt, current) -> bool:  # type: ignore[no-untyped-def]
    """Remove chunks of steps (never the first, the initial build, nor the last, which
    shows the divergence), halving the chunk size down to single steps."""
    progress = False
    spec, steps = current()
    n = 2
    while len(steps) > 2:
        middle = list(range(1, len(steps) - 1))
        if not middle:
            break
        size = max(1, len(middle) // n)
        removed = False
        for start in range(0, len(middle), size):
            drop = set(middle[start:start + size])
            cand = [s for k, s in enumerate(steps) if k not in drop]
            if attempt(spec, cand):
                spec, steps = current()
                removed = progress = True
                break
        if removed:
            n = max(n - 1, 2)
            continue
        if size == 1:
            break
        n *= 2
    return progress
