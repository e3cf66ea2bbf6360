"""Runs one sequence of operations on a generated workspace, each step twice: through
kache and with plain cargo, and compares what they did.

The kache side is what the README tells users to do: ``RUSTC_WRAPPER=<kache>``,
``KACHE_CACHE_DIR=<store>``, ``KACHE_DAEMON_AUTOSTART=0`` (in daemon mode, a daemon
started with ``kache daemon start`` serves the hits), other settings only through
``KACHE_*`` variables, cargo's default ``target/`` unless an operation moved it. One
store serves every checkout, HOME and CARGO_HOME of the sequence: that is where stale
artifacts come from.

The oracle is plain cargo (no wrapper, no ``KACHE_*``) on *the same checkout* with its
own target dir, ``ws/target-plain``, which lives through the same history in lockstep:
the same edits, moves and copies, the same commands. cargo's freshness rules then act
the same on both sides (after ``mv`` of a checkout, cargo keeps its artifacts, paths
baked in included, and so must kache); a fresh target dir as the oracle would blame
kache for that. When the two sides differ, the command runs a third time with plain
cargo in a fresh target dir (``target-fresh``): if that agrees with the lockstep oracle
the divergence is kache's; if it agrees with kache (cargo's incremental state was the
odd one out), it is recorded as an oracle note, not a divergence.

Byte comparison (``bytes_check``): the kache side runs with ``KACHE_INCREMENTAL=drop``
(non-incremental rustc output is reproducible); after a build or check in which kache
reported hits, the kache target dir is moved aside, the same command runs through kache
with a fresh private store (every crate compiled for real, the shared store untouched)
into a new target dir at the same path, and every artifact (rlib, rmeta, proc-macro
.so, build-script executable) of a crate that was a hit is compared byte for byte with
what the hit restored; then the original target dir is put back.

Every change to the file system is a primitive (write, symlink, remove, touch, mv,
``cp -a``) that is executed here and logged as shell, so the reproduction script does
what the harness did.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import json
import os
import re
import shlex
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tests.differential import observe
from tests.differential.ops import (
    AddModule,
    Clean,
    Command,
    EditC,
    EditExt,
    EditGen,
    EditMacro,
    EditRustcScript,
    EditText,
    KacheSetting,
    Nothing,
    Op,
    Relocate,
    Repoint,
    Revert,
    SetEnv,
    SetLint,
    SetProfile,
    SetRustc,
    SetRustflags,
    SetTargetDir,
    SetV,
    SetWorkspaceWrapper,
    Step,
    ToggleFeature,
    Touch,
)
from tests.differential.workspace import Content, Symlink, WsSpec, initial_content, render

SLOTS = ("c0", "c1/deep/er", "c2/other")  # checkouts; the workspace is <checkout>/ws
HOMES = ("homes/h0", "homes/home-one")
HIT_OUTCOMES = ("local_hit", "remote_hit", "prefetch_hit")
CARGO_TIMEOUT = 600
PASSED_ENV = ("PATH", "RUSTUP_HOME", "RUSTUP_TOOLCHAIN", "TMPDIR")
ASPECT_RANK = ("cargo-exit", "stdout", "tests", "diagnostics", "kache-lines", "bytes")  # which names a divergence


@dataclass
class Counters:
    sequences: int = 0
    steps: int = 0
    builds: int = 0
    divergences: int = 0
    masked: int = 0
    notes: int = 0
    bytes_checks: int = 0  # byte comparisons run (steps with hits, bytes_check on)
    bytes_files: int = 0  # artifacts compared byte for byte
    started: float = field(default_factory=time.monotonic)


@dataclass
class Options:
    kache: str
    workdir: Path  # where each sequence gets its run directory
    daemon: bool = False
    bytes_check: bool = False
    incremental: str | None = None  # KACHE_INCREMENTAL for the kache side (bytes_check forces "drop")
    strict_paths: bool = False  # no trim-paths equivalence for kd_ext's file!() (see observe.py)
    keep: bool = False  # keep run directories
    repro_dir: Path | None = None  # where reproduction scripts are written
    known: dict[str, str] = field(default_factory=dict)  # signatures not raised again → first report
    repeats: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    counters: Counters = field(default_factory=Counters)
    first_failure_at: int | None = None  # counters.sequences when a divergence was first raised
    shrink: str = "replay"  # "replay" (minimize.py), "hypothesis" (its shrinker), "none"
    shrink_seconds: float = 300  # budget of either shrinker, per divergence
    minimized: dict = field(default_factory=dict)  # (spec, steps) → minimised Divergence
    log: Callable[[str], None] | None = None  # progress lines


@dataclass(frozen=True)
class EnvState:
    """What the environment of the next commands holds (both sides unless said)."""

    vars: tuple[tuple[str, str], ...] = (("KD_VAL", "v1"),)  # values are templates, see Harness.expand
    rustflags: str | None = None
    profile: str = "dev"
    features: frozenset[int] = frozenset()
    rustc: str | None = None  # None, "path", "bare"
    workspace_wrapper: str | None = None  # None, "path", "bare"
    kache_vars: tuple[tuple[str, str], ...] = ()  # KACHE_* settings, kache side only
    kache_target: str | None = None  # kache side's CARGO_TARGET_DIR: None, "relative", "absolute"

    def get(self, name: str) -> str | None:
        return dict(self.vars).get(name)

    def with_var(self, name: str, value: str | None, kache: bool = False) -> EnvState:
        d = dict(self.kache_vars if kache else self.vars)
        if value is None:
            d.pop(name, None)
        else:
            d[name] = value
        items = tuple(sorted(d.items()))
        return dataclasses.replace(self, **{"kache_vars" if kache else "vars": items})


@dataclass(frozen=True)
class Loc:
    slot: int = 0
    home: int = 0
    cargo_home: int = 0


class Divergence(AssertionError):
    """A step where kache and plain cargo did different things. Subclassed per
    signature (:func:`divergence_class`) so that hypothesis shrinks and reports each
    kind separately."""

    signature = "divergence"

    def __init__(self, report: str, script: str, script_path: str | None = None):
        super().__init__(report + f"\n\nreproduction script{f' ({script_path})' if script_path else ''}:\n"
                         + script)
        self.report = report
        self.script = script
        self.script_path = script_path

    def saved(self, directory: Path | None, note: str = "") -> Divergence:
        """This divergence (with ``note`` added to its report), its script and report
        written to ``directory`` as repro-<signature>.sh and .txt."""
        report = self.report.replace("\nworkspace:", f"\n{note}\n\nworkspace:", 1) if note else self.report
        path = None
        if directory is not None:
            directory.mkdir(parents=True, exist_ok=True)
            slug = re.sub(r"\W+", "-", self.signature).strip("-")[:80]
            p = directory / f"repro-{slug}.sh"
            p.write_text(self.script)
            p.chmod(0o755)
            p.with_suffix(".txt").write_text(report + "\n")
            path = str(p)
        return type(self)(report, self.script, path)


class SequenceStopped(Exception):
    """A known (masked) divergence made the kache side fail a build: what follows in this
    sequence would only be its consequences, so the sequence ends there."""


@functools.cache
def divergence_class(signature: str) -> type[Divergence]:
    name = "Divergence_" + re.sub(r"\W+", "_", signature).strip("_")
    return type(name, (Divergence,), {"signature": signature})


_RUSTUP_HOME = os.environ.get("RUSTUP_HOME") or os.path.expanduser("~/.rustup")


def base_env() -> dict[str, str]:
    """The only variables of the caller's environment that the builds see."""
    env = {k: os.environ[k] for k in PASSED_ENV if k in os.environ}
    env["RUSTUP_HOME"] = os.environ.get("RUSTUP_HOME") or _RUSTUP_HOME
    return env


def dq(s: str) -> str:
    """``s`` as a double-quoted shell word."""
    return '"' + re.sub(r'(["\\$`])', r"\\\1", s) + '"'


@dataclass
class SideRun:
    rc: int
    out: str
    err: str
    app_rc: int | None = None
    app_out: str | None = None
    seconds: float = 0.0

    def aspects(self, verb: str, prefixes: list[tuple[str, str]], root: str | None = None,
                wrapper: str | None = None) -> dict[str, str]:
        return observe.observe(verb, self.rc, self.out, self.app_rc, self.app_out, prefixes, self.err, root,
                               wrapper)


@dataclass
class StepRecord:
    index: int
    step: Step
    events: list[dict]
    kache_messages: list[str]
    note: str = ""


class Harness:
    def __init__(self, opts: Options, name: str = "seq"):
        self.opts = opts
        opts.workdir.mkdir(parents=True, exist_ok=True)
        self.root = Path(os.path.realpath(opts.workdir)) / f"{name}-{os.getpid()}-{time.monotonic_ns()}"
        self.root.mkdir(parents=True)
        self.store = self.root / "store"
        self.sh: list[str] = []  # the reproduction, step by step
        self.records: list[StepRecord] = []
        self.disk: dict[int, dict[str, str | Symlink]] = {}
        self.history: list[Content] = []
        self.env = EnvState()
        self.loc = Loc()
        self.spec: WsSpec | None = None
        self.content: Content | None = None
        self._events_offset = 0
        self._log_offset = 0
        self._daemon = False
        self.masked_labels: dict[str, set[str]] = {}  # aspect → labels of known divergences seen

    # --- paths ------------------------------------------------------------------

    def slot_dir(self, slot: int | None = None) -> Path:
        return self.root / SLOTS[self.loc.slot if slot is None else slot]

    @property
    def ws(self) -> Path:
        return self.slot_dir() / "ws"

    def home(self) -> Path:
        return self.root / HOMES[self.loc.home]

    def cargo_home(self) -> Path:
        return self.home() / ".cargo" if self.loc.cargo_home == 0 else self.root / "cargo-homes" / "ch1"

    def kache_target(self) -> Path:
        return {None: self.ws / "target", "relative": self.slot_dir() / "ktarget",
                "absolute": self.slot_dir() / "ktarget-abs"}[self.env.kache_target]

    def target_dirs(self) -> list[Path]:
        """Every target dir either side may have made in this checkout."""
        return [self.ws / "target", self.ws / "target-plain", self.slot_dir() / "ktarget",
                self.slot_dir() / "ktarget-abs"]

    def shell_path(self, p: Path | str) -> str:
        s = str(p)
        root = str(self.root)
        if s == root or s.startswith(root + "/"):
            return '"$R' + dq(s[len(root):])[1:]
        return dq(s)

    def shell_word(self, s: str) -> str:
        return dq(s).replace(str(self.root), "$R")

    # --- primitives: executed and logged ----------------------------------------

    def _log(self, line: str) -> None:
        self.sh.append(line)

    def write(self, path: Path, content: str, executable: bool = False) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w") as f:
            f.write(content)
        tag = "KD_EOF"
        assert tag not in content and content.endswith("\n")
        line = (f"mkdir -p {self.shell_path(path.parent)}; cat > {self.shell_path(path)} <<'{tag}'\n"
                f"{content}{tag}")
        if executable:
            os.chmod(path, 0o755)
            line += f"\nchmod 755 {self.shell_path(path)}"
        self._log(line)

    def symlink(self, path: Path, target: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        if os.path.lexists(path):
            os.unlink(path)
        os.symlink(target, path)
        self._log(f"mkdir -p {self.shell_path(path.parent)}; rm -f {self.shell_path(path)}; "
                  f"ln -s {dq(target)} {self.shell_path(path)}")

    def remove(self, path: Path) -> None:
        if os.path.islink(path) or path.is_file():
            os.unlink(path)
        elif path.exists():
            shutil.rmtree(path)
        self._log(f"rm -rf {self.shell_path(path)}")

    def touch(self, path: Path) -> None:
        os.utime(path, None)
        self._log(f"touch {self.shell_path(path)}")

    def move(self, src: Path, dst: Path) -> None:
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.rename(src, dst)
        self._log(f"mkdir -p {self.shell_path(dst.parent)}; mv {self.shell_path(src)} {self.shell_path(dst)}")

    def copy_tree(self, src: Path, dst: Path) -> None:
        dst.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["cp", "-a", str(src), str(dst)], check=True)
        self._log(f"mkdir -p {self.shell_path(dst.parent)}; cp -a {self.shell_path(src)} {self.shell_path(dst)}")

    # --- the checkout's files ---------------------------------------------------------

    def _sync(self, slot: int) -> None:
        """Make the files of checkout ``slot`` what the current content renders to,
        writing only those whose content changed (as `git checkout` would)."""
        assert self.spec is not None and self.content is not None
        want = render(self.spec, self.content)
        have = self.disk.setdefault(slot, {})
        base = self.slot_dir(slot)
        for rel in sorted(have):
            if rel not in want:
                self.remove(base / rel)
                del have[rel]
        for rel, content in sorted(want.items()):
            if have.get(rel) == content:
                continue
            if isinstance(content, Symlink):
                self.symlink(base / rel, content.target)
            else:
                if isinstance(have.get(rel), Symlink):
                    self.remove(base / rel)
                self.write(base / rel, content, executable=rel.startswith("tools/bin/"))
            have[rel] = content

    def set_content(self, content: Content) -> None:
        self.content = content
        self.history.append(content)
        self._sync(self.loc.slot)

    # --- setup --------------------------------------------------------------------

    def start(self, spec: WsSpec) -> None:
        self.spec = spec
        dirs = ["store", "cargo-homes/ch1"] + [f"{h}/{sub}" for h in HOMES for sub in (".cargo", ".config", ".cache")]
        for d in dirs:
            (self.root / d).mkdir(parents=True, exist_ok=True)
        self._log("mkdir -p " + " ".join(f'"$R/{d}"' for d in dirs))
        self.env = dataclasses.replace(self.env, rustc=spec.rustc)
        self.set_content(initial_content(spec))
        if self.opts.daemon:
            self._start_daemon()

    def _start_daemon(self) -> None:
        env = self.command_env("kache")
        env["KACHE_DAEMON_IDLE_TIMEOUT"] = "900"
        out = subprocess.run([self.opts.kache, "daemon", "start"], env=env, capture_output=True, text=True,
                             cwd=self.ws, timeout=60)
        if out.returncode != 0:
            raise RuntimeError(f"kache daemon start failed: {out.stderr}")
        deadline = time.monotonic() + 15
        while not (self.store / "daemon.sock").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        self._daemon = True

    def close(self) -> None:
        if self._daemon:
            subprocess.run([self.opts.kache, "daemon", "stop"], env=self.command_env("kache"),
                           capture_output=True, timeout=60)
            self._daemon = False
        if not self.opts.keep:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> Harness:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- operations ---------------------------------------------------------------

    def applicable(self, op: Op) -> bool:
        """Whether ``op`` names things this workspace has (a minimised workspace may have
        lost the library or the file an operation of the original sequence named)."""
        assert self.spec is not None
        lib = getattr(op, "lib", None)
        if lib is not None and lib >= len(self.spec.libs):
            return False
        if isinstance(op, Touch):
            return (self.slot_dir() / op.path).is_file()
        return True

    def apply(self, op: Op) -> None:
        assert self.content is not None
        c = self.content
        e = self.env
        if not self.applicable(op):
            self._log(f"# ({op.describe()}: not applicable to this workspace, skipped)")
            return
        match op:
            case Nothing():
                pass
            case Touch(path=p):
                self.touch(self.slot_dir() / p)
            case SetV(lib=i, v=v):
                self.set_content(c.with_lib(i, v=v))
            case Revert(back=k):
                distinct = [x for n, x in enumerate(self.history) if n == 0 or x != self.history[n - 1]]
                self.set_content(distinct[max(0, len(distinct) - 1 - k)])
            case AddModule(lib=i, value=v):
                self.set_content(c.with_lib(i, modules=c.libs[i].modules + (v,)))
            case EditText(lib=i, which=w, text=t):
                field_ = {"text": "text", "shared": "shared_text", "decoy": "decoy"}[w]
                self.set_content(c.with_lib(i, **{field_: t}))
            case Repoint(lib=i, to=to):
                self.set_content(c.with_lib(i, link=to))
            case EditGen(lib=i, gen=g):
                self.set_content(c.with_lib(i, gen=g))
            case EditC(lib=i, value=v):
                self.set_content(c.with_lib(i, c_val=v))
            case EditMacro(k=k):
                self.set_content(dataclasses.replace(c, macro_k=k))
            case EditExt(v=v):
                self.set_content(dataclasses.replace(c, ext_v=v))
            case EditRustcScript(flags=f):
                self.set_content(dataclasses.replace(c, rustc_flags=f))
            case SetLint(lib=i, mode=m):
                self.set_content(c.with_lib(i, lint=m))
            case SetEnv(name=n, value=v):
                self.env = e.with_var(n, v)
            case KacheSetting(name=n, value=v):
                self.env = e.with_var(n, v, kache=True)
            case SetRustflags(value=v):
                self.env = dataclasses.replace(e, rustflags=v)
            case SetProfile(profile=p):
                self.env = dataclasses.replace(e, profile=p)
            case ToggleFeature(lib=i):
                self.env = dataclasses.replace(e, features=e.features ^ {i})
            case SetRustc(mode=m):
                self.env = dataclasses.replace(e, rustc=m)
            case SetWorkspaceWrapper(mode=m):
                self.env = dataclasses.replace(e, workspace_wrapper=m)
            case SetTargetDir(mode=m):
                self.env = dataclasses.replace(e, kache_target=m)
            case Clean():
                for t in self.target_dirs():
                    if t.exists():
                        self.remove(t)
            case Relocate():
                self._relocate(op)
            case _:
                raise AssertionError(f"unknown op {op!r}")

    def _relocate(self, op: Relocate) -> None:
        cur, dst = self.loc.slot, op.slot
        mode = op.mode
        if dst == cur and mode in ("move", "copy", "switch"):
            mode = "none"
        elif mode == "switch" and dst not in self.disk:
            mode = "clone"
        if mode == "clone":
            if dst in self.disk or self.slot_dir(dst).exists():
                self.remove(self.slot_dir(dst))
            self.disk[dst] = {}
            self._sync(dst)
        elif mode == "move":
            if dst in self.disk:
                self.remove(self.slot_dir(dst))
            self.move(self.slot_dir(cur), self.slot_dir(dst))
            self.disk[dst] = self.disk.pop(cur)
        elif mode == "copy":
            if dst in self.disk:
                self.remove(self.slot_dir(dst))
            self.copy_tree(self.slot_dir(cur), self.slot_dir(dst))
            self.disk[dst] = dict(self.disk[cur])
        elif mode == "switch":
            self._sync(dst)
        self.loc = Loc(dst, op.home, op.cargo_home)

    # --- commands -----------------------------------------------------------------

    def expand(self, template: str) -> str:
        return (template.replace("{ws}", str(self.ws)).replace("{slot}", str(self.slot_dir()))
                .replace("{home}", str(self.home())).replace("{cargo_home}", str(self.cargo_home())))

    def command_env(self, side: str, store: Path | None = None) -> dict[str, str]:
        env = base_env()
        tools = self.slot_dir() / "tools" / "bin"
        env["PATH"] = f"{tools}{os.pathsep}{env.get('PATH', os.defpath)}"
        home = self.home()
        env.update(HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"), XDG_CACHE_HOME=str(home / ".cache"),
                   CARGO_HOME=str(self.cargo_home()))
        for name, value in self.env.vars:
            env[name] = self.expand(value)
        if self.env.rustflags is not None:
            env["RUSTFLAGS"] = self.expand(self.env.rustflags)
        if self.env.rustc is not None:
            env["RUSTC"] = str(tools / "kdrustc") if self.env.rustc == "path" else "kdrustc"
        if self.env.workspace_wrapper is not None:
            env["RUSTC_WORKSPACE_WRAPPER"] = str(tools / "kdwrap") if self.env.workspace_wrapper == "path" \
                else "kdwrap"
        if side == "kache":
            env.update(RUSTC_WRAPPER=self.opts.kache, KACHE_CACHE_DIR=str(store or self.store),
                       KACHE_DAEMON_AUTOSTART="0")
            if self.opts.incremental:
                env["KACHE_INCREMENTAL"] = self.opts.incremental
            for name, value in self.env.kache_vars:
                env[name] = value
            if self.opts.bytes_check:
                env["KACHE_INCREMENTAL"] = "drop"
            if self.env.kache_target == "relative":
                env["CARGO_TARGET_DIR"] = "../ktarget"
            elif self.env.kache_target == "absolute":
                env["CARGO_TARGET_DIR"] = str(self.kache_target())
        return env

    def trim_prefixes(self) -> list[tuple[str, str]]:
        if self.opts.strict_paths or self.spec is None or not self.spec.ext:
            return []
        return [(f"{self.slot_dir()}/ext/kd_ext/", "kd_ext-0.1.0/")]

    def cargo_args(self, cmd: Command, target_dir: str | None) -> list[str]:
        assert self.spec is not None
        args = ["cargo", cmd.verb, "--offline"]
        # --keep-going: after an error cargo still compiles every unit whose dependencies
        # succeeded, so which diagnostics a failed build shows does not depend on timing
        # (a fast hit would otherwise let another unit start, and fail, before cargo stops).
        args += ["--message-format=json", "--keep-going"] if cmd.verb != "test" else ["--no-fail-fast"]
        if cmd.package and cmd.package in self.spec.packages():
            args += ["-p", cmd.package]
        if cmd.no_deps:
            args.append("--no-deps")
        if self.env.profile == "release":
            args.append("--release")
        feats = sorted(i for i in self.env.features & self._closure(cmd.package) if self.spec.libs[i].feature)
        if feats:
            args += ["--features", ",".join(f"kd_lib{i}/extra" for i in feats)]
        if target_dir:
            args += ["--target-dir", target_dir]
        if cmd.verb == "test":
            args += ["--", "--test-threads=1", "--nocapture"]
        elif cmd.deny_warnings:
            args += ["--", "-D", "warnings"]
        return args

    def _closure(self, package: str | None) -> set[int]:
        """Indices of the libraries the command builds (whose features it may name)."""
        assert self.spec is not None
        n = len(self.spec.libs)
        if package is None or package == "kd_app" or package not in self.spec.packages():
            return set(range(n))
        if not package.startswith("kd_lib"):
            return set()
        todo, seen = [int(package[6:])], set()
        while todo:
            i = todo.pop()
            if i not in seen:
                seen.add(i)
                todo += list(self.spec.libs[i].deps)
        return seen

    def run_side(self, side: str, cmd: Command, label: str, target_dir: str | None = None,
                 store: Path | None = None) -> SideRun:
        """One cargo command (and, after a build, kd_app) on one side; logged as shell that
        leaves rc/out/err/app_rc/app_out in $R/out/<label>."""
        env = self.command_env(side, store)
        if target_dir is None and side != "kache":
            target_dir = "target-plain"
        args = self.cargo_args(cmd, target_dir)
        started = time.monotonic()
        try:
            p = subprocess.run(args, cwd=self.ws, env=env, capture_output=True, text=True, timeout=CARGO_TIMEOUT)
            run = SideRun(p.returncode, p.stdout, p.stderr)
        except subprocess.TimeoutExpired as e:
            run = SideRun(-9, str(e.stdout or ""), f"timeout after {CARGO_TIMEOUT}s")
        self.opts.counters.builds += 1
        tdir = self.ws / target_dir if target_dir else self.kache_target()
        exe = tdir / ("release" if self.env.profile == "release" else "debug") / "kd_app"
        if cmd.verb == "build" and run.rc == 0:
            try:
                a = subprocess.run([str(exe)], cwd=self.ws, env=base_env(), capture_output=True, text=True,
                                   timeout=60)
                run.app_rc, run.app_out = a.returncode, a.stdout
            except (OSError, subprocess.TimeoutExpired) as e:
                run.app_rc, run.app_out = -1, f"could not run kd_app: {e}"
        run.seconds = time.monotonic() - started
        out = f'"$R/out/{label}"'
        words = []
        for k, v in sorted(env.items()):
            if k == "PATH":
                words.append(f'PATH={self.shell_word(str(self.slot_dir() / "tools" / "bin"))}:"$PATH"')
            elif k == "RUSTC_WRAPPER":
                words.append('RUSTC_WRAPPER="$KACHE"')
            elif k not in PASSED_ENV:
                words.append(f"{k}={self.shell_word(v)}")
        self._log(f"side {out} {self.shell_path(self.ws)} {' '.join(words)} {' '.join(shlex.quote(a) for a in args)}")
        if cmd.verb == "build":
            self._log(f"app {out} {self.shell_path(self.ws)} {self.shell_path(exe)}")
        return run

    def _new_lines(self, name: str, offset_attr: str) -> str:
        path = self.store / name
        if not path.exists():
            return ""
        offset = getattr(self, offset_attr)
        if path.stat().st_size < offset:  # rotated
            offset = 0
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read()
        setattr(self, offset_attr, offset + len(data))
        return data.decode(errors="replace")

    def take_events(self) -> list[dict]:
        out = []
        for line in self._new_lines("events.jsonl", "_events_offset").splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
        return out

    # --- a step ---------------------------------------------------------------------

    def step(self, step: Step) -> None:
        index = len(self.records)
        self._log(f"\n# --- step {index}: {step.describe()}")
        self._log(f"step_begin {index}")
        self.apply(step.op)
        cmd = step.command
        kache = self.run_side("kache", cmd, f"{index}/kache")
        events = self.take_events()
        messages = [ln for ln in kache.err.splitlines() if "kache" in ln.replace(str(self.root), "$R").lower()]
        messages += self._new_lines("kache.log", "_log_offset").splitlines()
        self._log(f"step_events {index}")
        plain = self.run_side("plain", cmd, f"{index}/plain")
        rec = StepRecord(index, step, events, messages)
        self.records.append(rec)
        if index > 0:
            self.opts.counters.steps += 1
        if self.opts.log:
            hits = sum(e.get("outcome") in HIT_OUTCOMES for e in events)
            self.opts.log(f"    step {index}: {step.describe()} — kache {kache.seconds:.1f}s "
                          f"({hits} hit(s)), plain {plain.seconds:.1f}s")
        prefixes = self.trim_prefixes()
        root, wrapper = str(self.root), self.opts.kache
        ka, pa = kache.aspects(cmd.verb, prefixes, root, wrapper), plain.aspects(cmd.verb, prefixes, root, wrapper)
        differing = [a for a in ka if ka[a] != pa.get(a)]
        if differing:
            fresh = self.run_side("plain", cmd, f"{index}/fresh", target_dir="target-fresh")
            self.remove(self.ws / "target-fresh")
            fa = fresh.aspects(cmd.verb, prefixes, root, wrapper)
            if all(fa.get(a) == ka[a] for a in differing):
                note = (f"step {index} ({step.describe()}): kache agrees with a fresh plain build but not with "
                        f"the lockstep plain target on {', '.join(differing)} (cargo's own incremental "
                        "state differs; not counted)")
                rec.note = note
                self.opts.notes.append(note)
                self.opts.counters.notes += 1
            else:
                self._diverge(index, cmd, differing, ka, pa, fa, runs=(kache, plain))
        if self.opts.bytes_check and cmd.verb in ("build", "check") and kache.rc == 0:
            self._bytes(index, cmd, kache, events)

    def _bytes(self, index: int, cmd: Command, kache: SideRun, events: list[dict]) -> None:
        hits = {e.get("crate") for e in events if e.get("outcome") in HIT_OUTCOMES}
        if not hits:
            return
        target = self.kache_target()
        files: dict[str, str] = {}
        for line in kache.out.splitlines():
            if not line.startswith('{"reason":"compiler-artifact"'):
                continue
            msg = json.loads(line)
            t = msg["target"]
            crate = "build_script_build" if "custom-build" in t["kind"] else t["name"].replace("-", "_")
            if crate not in hits or "bin" in t["kind"]:
                continue
            for fn in msg.get("filenames") or []:
                if fn.startswith(str(target) + "/"):
                    files[os.path.relpath(fn, target)] = crate
        if not files:
            return
        hold = target.with_name(target.name + ".kd-hold")
        scratch = self.root / "bytes-store"
        self._log(f"# bytes check of the hits of step {index}: {' '.join(sorted(set(files.values())))}")
        self.move(target, hold)
        if scratch.exists():
            self.remove(scratch)
        run = self.run_side("kache", cmd, f"{index}/bytes", store=scratch)
        self.opts.counters.bytes_checks += 1
        self.opts.counters.bytes_files += len(files)
        differ = []
        for rel, crate in sorted(files.items()):
            a, b = hold / rel, target / rel
            if not b.exists():
                differ.append((rel, crate, "not produced by the real compile"))
                continue
            da, db = a.read_bytes(), b.read_bytes()
            if da != db:
                first = next((n for n, (x, y) in enumerate(zip(da, db, strict=False)) if x != y), min(len(da), len(db)))
                differ.append((rel, crate, f"{len(da)} vs {len(db)} bytes, first difference at byte {first}"))
        self._log("bytes_cmp " + " ".join(f"{self.shell_path(hold / rel)} {self.shell_path(target / rel)}"
                                          for rel in sorted(files)))
        self.remove(target)
        self.move(hold, target)
        self.remove(scratch)
        if differ and run.rc == 0:
            text = "\n".join(f"  {rel} ({crate}): {why}" for rel, crate, why in differ)
            self._diverge(index, cmd, ["bytes"], {"bytes": text}, {"bytes": "(identical)"}, None,
                          labels=sorted({c for _, c, _ in differ}))

    # --- reporting ------------------------------------------------------------------

    def _diverge(self, index: int, cmd: Command, differing: list[str], ka: dict[str, str], pa: dict[str, str],
                 fa: dict[str, str] | None, labels: list[str] | None = None,
                 runs: tuple[SideRun, SideRun] | None = None) -> None:
        every = {a: (labels if labels is not None else observe.labels(a, ka.get(a, ""), pa.get(a, "")))
                 for a in differing}
        rank = ASPECT_RANK
        broken = False  # one side's build failed: what follows would be its consequences
        if runs is not None:
            # A build that failed on one side only (for `cargo test`: tests that never ran)
            # is named by that side and its first error, whatever the exit codes say.
            if cmd.verb == "test":
                failed = ["running " not in x.get("tests", "") for x in (ka, pa)]
            else:
                failed = [r.rc != 0 for r in runs]
            if failed[0] != failed[1]:
                run, who = (runs[0], "kache") if failed[0] else (runs[1], "plain cargo")
                every["cargo-exit"] = [f"{who} failed: {observe.error_gist(run.out, run.err)}"]
                broken = True
            elif cmd.verb == "test":
                rank = ("tests",) + ASPECT_RANK  # both ran their tests: which differ says more
        # What a known divergence of this sequence already explains is not new.
        new = {a: [lab for lab in labs if lab not in self.masked_labels.get(a, set())] for a, labs in every.items()}
        new = {a: labs for a, labs in new.items() if labs}
        step = self.records[index].step
        if not new:
            self.records[index].note = "differs as a known divergence of an earlier step did (masked)"
            return
        aspect = min(new, key=rank.index)
        # The aspect and what differs in it, and (except for a failed build, whatever led
        # to it) which kind of operation preceded: see Op.op_class.
        signature = f"{aspect}[{','.join(new[aspect])}]"
        if aspect != "cargo-exit":
            signature += f" after {step.op.op_class}" if index else " at start"
        if signature in self.opts.known:
            self.opts.repeats[signature] = self.opts.repeats.get(signature, 0) + 1
            self.opts.counters.masked += 1
            for a, labs in every.items():
                self.masked_labels.setdefault(a, set()).update(labs)
            self.records[index].note = f"known divergence {signature} (masked)"
            if self.opts.log:
                self.opts.log(f"    (known divergence {signature}: masked)")
            if broken:
                raise SequenceStopped(signature)
            return
        if self.opts.log:
            self.opts.log(f"    DIVERGENCE {signature}")
        report = self._report(signature, index, cmd, differing, ka, pa, fa)
        script = self.script(index, cmd, bytes_step="bytes" in differing)
        if self.opts.first_failure_at is None:
            self.opts.first_failure_at = self.opts.counters.sequences
        raise divergence_class(signature)(report, script)

    def _report(self, signature: str, index: int, cmd: Command, differing: list[str], ka: dict[str, str],
                pa: dict[str, str], fa: dict[str, str] | None) -> str:
        assert self.spec is not None and self.content is not None
        o = self.opts
        lines = [f"DIVERGENCE {signature}",
                 f"kache: {o.kache} (daemon: {'yes' if o.daemon else 'no'}, bytes check: "
                 f"{'yes' if o.bytes_check else 'no'}, KACHE_INCREMENTAL: "
                 f"{'drop' if o.bytes_check else (o.incremental or 'default')})",
                 "oracle: plain cargo, same checkout, lockstep target dir (ws/target-plain)"]
        if fa is not None:
            agree = [a for a in differing if fa.get(a) == pa.get(a)]
            lines.append("a fresh plain build (ws/target-fresh) agrees with the lockstep oracle on: "
                         + (", ".join(agree) or "nothing"))
        lines += ["", "workspace:"] + ["  " + ln for ln in self.spec.describe().splitlines()]
        lines += ["", "steps:"]
        for rec in self.records:
            what = rec.step.describe() if rec.index else "initial: " + rec.step.command.describe()
            lines.append(f"  {rec.index}. {what}")
            lines.append(f"       kache events: {summarize_events(rec.events)}")
            if rec.note:
                lines.append(f"       note: {rec.note}")
        lines += ["", f"diverged at step {index} ({cmd.describe()}) on: {', '.join(differing)}"]
        for a in differing:
            kv, pv = ka.get(a, ""), pa.get(a, "")
            lines += [f"--- {a}: through kache", kv or "(empty)", f"--- {a}: plain cargo", pv or "(empty)"]
            if fa is not None and fa.get(a) != pv:
                lines += [f"--- {a}: plain cargo, fresh target dir", fa.get(a) or "(empty)"]
            if a != "bytes" and "\n" in kv + pv:
                lines.append(f"--- {a}: diff (plain → kache)")
                lines += list(difflib.unified_diff(pv.splitlines(), kv.splitlines(), lineterm=""))[2:]
        if self.records[index].kache_messages:
            lines.append("--- kache's messages (stderr, store/kache.log) during this step:")
            lines += self.records[index].kache_messages[:20]
        lines += ["", f"files of the checkout ({self.slot_dir().relative_to(self.root)}) at the diverging step:"]
        for rel, content in sorted(render(self.spec, self.content).items()):
            if isinstance(content, Symlink):
                lines.append(f"  {rel} -> {content.target}")
            else:
                lines.append(f"  {rel}:")
                lines += ["    | " + ln for ln in content.rstrip("\n").splitlines()]
        e = self.env
        lines.append("environment: " + " ".join(f"{k}={self.expand(v)}" for k, v in e.vars)
                     + f" RUSTFLAGS={e.rustflags!r} profile={e.profile} features={sorted(e.features)}"
                     f" RUSTC={e.rustc or 'default'} RUSTC_WORKSPACE_WRAPPER={e.workspace_wrapper or '-'}"
                     f" kache side: {' '.join(f'{k}={v}' for k, v in e.kache_vars) or 'no KACHE_ settings'},"
                     f" target dir {self.kache_target().relative_to(self.slot_dir())};"
                     f" HOME #{self.loc.home}, CARGO_HOME #{self.loc.cargo_home}")
        return "\n".join(lines)

    def script(self, index: int, cmd: Command, bytes_step: bool = False) -> str:
        """A bash script that replays every step up to ``index`` and compares its outputs."""
        head = f"""\
#!/usr/bin/env bash
# Reproduces a kache divergence found by tests/differential: the harness's own steps,
# replayed as shell. Exit status 1: the divergence reproduced; 0: it did not.
#   KACHE=/path/to/kache bash repro.sh
set -u
KACHE=${{KACHE:-{self.opts.kache}}}
: "${{RUSTUP_HOME:=$HOME/.rustup}}"
export RUSTUP_HOME
R=$(mktemp -d "${{TMPDIR:-/tmp}}/kache-diff.XXXXXX")
echo "run directory: $R"
mkdir -p "$R/out"
cat > "$R/observe.py" <<'KD_PY'
{Path(observe.__file__).read_text()}KD_PY
EV=0
side() {{  # side OUTDIR WORKSPACE VAR=VALUE... cargo ARGS...: one cargo command, outputs kept
  local out=$1 ws=$2; shift 2
  mkdir -p "$out"
  (cd "$ws" && env -i RUSTUP_HOME="$RUSTUP_HOME" ${{TMPDIR:+TMPDIR="$TMPDIR"}} "$@" >"$out/out" 2>"$out/err"
   echo $? >"$out/rc")
}}
app() {{  # app OUTDIR WORKSPACE EXE: run the binary after a build that succeeded
  if [ "$(cat "$1/rc")" = 0 ]; then
    (cd "$2" && env -i PATH="$PATH" "$3" >"$1/app_out" 2>"$1/app_err"; echo $? >"$1/app_rc")
  fi
}}
step_begin() {{ EV=$(cat "$R/store/events.jsonl" 2>/dev/null | wc -l); }}
step_events() {{ tail -n +$((EV + 1)) "$R/store/events.jsonl" 2>/dev/null > "$R/out/$1/kache/events.jsonl"; }}
BYTES_DIFF=0
bytes_cmp() {{ while [ $# -gt 1 ]; do cmp "$1" "$2" || BYTES_DIFF=1; shift 2; done; }}
"""
        if self.opts.daemon:
            head += ('trap \'env KACHE_CACHE_DIR="$R/store" "$KACHE" daemon stop >/dev/null 2>&1\' EXIT\n'
                     'mkdir -p "$R/store"\n'
                     'env HOME="$R/homes/h0" KACHE_CACHE_DIR="$R/store" KACHE_DAEMON_IDLE_TIMEOUT=900 '
                     '"$KACHE" daemon start\n'
                     'for _ in $(seq 100); do [ -S "$R/store/daemon.sock" ] && break; sleep 0.1; done\n')
        body = "\n".join(self.sh)
        tail = f"""

# --- compare step {index} ({cmd.describe()})
cd "$R"
echo "kache events of step {index}:"; cat "$R/out/{index}/kache/events.jsonl" 2>/dev/null
"""
        if bytes_step:
            tail += """\
if [ "$BYTES_DIFF" = 1 ]; then echo "DIVERGENCE reproduced: a hit's artifact differs from a real compile"; exit 1; fi
echo "no divergence"; exit 0
"""
        else:
            verb = cmd.verb
            trims = "".join(" " + self.shell_word(f"--trim={p}={r}") for p, r in self.trim_prefixes())
            tail += f"""\
python3 "$R/observe.py" {verb} "$R/out/{index}/kache"{trims} --root="$R" --wrapper="$KACHE" > "$R/out/{index}/kache.obs"
python3 "$R/observe.py" {verb} "$R/out/{index}/plain"{trims} --root="$R" --wrapper="$KACHE" > "$R/out/{index}/plain.obs"
echo "through kache:"; cat "$R/out/{index}/kache.obs"
echo "plain cargo:"; cat "$R/out/{index}/plain.obs"
if diff -u --label plain "$R/out/{index}/plain.obs" --label kache "$R/out/{index}/kache.obs"; then
  echo "no divergence"; exit 0
fi
echo "DIVERGENCE reproduced"; exit 1
"""
        return head + body + tail


def summarize_events(events: list[dict]) -> str:
    if not events:
        return "(none)"
    parts = []
    for e in events:
        s = f"{e.get('crate')}={e.get('outcome')}"
        if e.get("reason"):
            s += f"({e['reason']})"
        if e.get("via"):
            s += f"[via {e['via']}]"
        parts.append(s)
    return " ".join(parts)
