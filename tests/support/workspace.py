"""The fixture workspace (tests/fixtures/ws) built through kache with a counting rustc:
``Workspace``, machines of their own, a daemon on a built workspace, a remote in a
machine's config, and the plain-cargo oracle its artifacts are checked against."""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tests.support import reliability
from tests.support.env import FIXTURES
from tests.support.s3 import ACCESS_KEY, SECRET_KEY

CACHEABLE_CRATES = {"build_script_build", "kc_macros", "kc_core", "kc_util"}
BUILD_COMMANDS = {"build", "check", "test", "run", "clippy", "doc"}


@functools.cache
def plain_cargo_output(fixture: str, binary: str) -> str:
    """What ``binary`` prints when tests/fixtures/``fixture`` is built by plain cargo
    (no wrapper, no kache)."""
    with tempfile.TemporaryDirectory(prefix=f"kache-reference-{fixture}-") as tmp:
        path = Path(tmp) / fixture
        shutil.copytree(FIXTURES / fixture, path)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RUSTC_WRAPPER", "KACHE_"))}
        env["CARGO_TARGET_DIR"] = str(path / "target")
        subprocess.run(["cargo", "build", "--offline", "-q"], cwd=path, env=env, check=True, capture_output=True)
        return subprocess.run([path / "target" / "debug" / binary], capture_output=True, text=True,
                              check=True).stdout


def reference_app_output() -> str:
    """What kc-app prints when the pristine fixture is built by plain cargo (no wrapper)."""
    return plain_cargo_output("ws", "kc-app")


@dataclass
class Workspace:
    """A copy of tests/fixtures/ws and the environment to build it through kache."""

    path: Path
    store: Path
    kache: str
    rustc_log: Path
    env: dict[str, str] = field(default_factory=dict)

    def cargo(self, *args: str, check: bool = True, **extra_env: str) -> subprocess.CompletedProcess[str]:
        """Run cargo here. With ``check``, a build that fails fails the test (and counts
        as a failed build in the reliability summary)."""
        env = {**os.environ, **self.env, **extra_env}
        out = subprocess.run(["cargo", *args, "--offline"], cwd=self.path, env=env, capture_output=True,
                             text=True, check=False)
        if check and args and args[0] in BUILD_COMMANDS:
            reliability.count("builds run")
            if out.returncode != 0:
                reliability.count("builds failed")
        if check and out.returncode != 0:
            raise AssertionError(f"cargo {' '.join(args)} failed:\n{out.stderr}")
        return out

    def build(self, *args: str, **extra_env: str) -> subprocess.CompletedProcess[str]:
        return self.cargo("build", *args, **extra_env)

    def clean(self) -> None:
        self.cargo("clean")

    def app(self, profile: str = "debug") -> str:
        exe = self.target / profile / "kc-app"
        return subprocess.run([exe], capture_output=True, text=True, check=True).stdout

    def verify_app(self, profile: str = "debug") -> None:
        """The app this build produced prints what the pristine fixture, built by plain
        cargo without kache, prints (an artifact check of the reliability summary)."""
        got = self.app(profile)
        reliability.count("artifacts checked")
        if got != reference_app_output():
            reliability.count("wrong artifacts served")
            raise AssertionError(f"wrong artifact: kc-app printed {got!r}, expected {reference_app_output()!r}")

    @property
    def target(self) -> Path:
        return Path(self.env.get("CARGO_TARGET_DIR", self.path / "target"))

    def events(self) -> list[dict]:
        path = self.store / "events.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines()]

    def take_events(self) -> list[dict]:
        """Events since the last call."""
        evs = self.events()
        seen = getattr(self, "_seen", 0)
        self._seen = len(evs)
        return evs[seen:]

    def take_rustc_runs(self) -> list[str]:
        """Crate names the real rustc compiled since the last call (probes excluded)."""
        if not self.rustc_log.exists():
            return []
        lines = self.rustc_log.read_text().splitlines()
        seen = getattr(self, "_rustc_seen", 0)
        self._rustc_seen = len(lines)
        names = []
        for line in lines[seen:]:
            args = line.split()
            if "--crate-name" in args:
                name = args[args.index("--crate-name") + 1]
                if name != "___":
                    names.append(name)
        return names


def make_counting_rustc(directory: Path, log: Path) -> Path:
    """A `rustc` that logs each command line, then execs the real compiler.

    kache keys the compiler by its content, so the script is the same text on every
    "machine" (the log's path is read from a file beside it): two machines with the same
    toolchain share entries, as they would with one real rustc."""
    real = shutil.which("rustc")
    assert real
    real_path = subprocess.run([real, "--print", "sysroot"], capture_output=True, text=True,
                               check=True).stdout.strip() + "/bin/rustc"
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "log-path").write_text(str(log))
    exe = directory / "rustc"
    exe.write_text(f'#!/bin/sh\nprintf "%s\\n" "$*" >> "$(cat "${{0%/*}}/log-path")"\nexec "{real_path}" "$@"\n')
    exe.chmod(0o755)
    return exe


def outcomes(events: list[dict]) -> dict[str, str]:
    """crate → outcome, for the events given (the last event of a crate wins)."""
    return {e["crate"]: e["outcome"] for e in events}


def clean_rebuild_served_by_the_daemon(ws: Workspace) -> tuple[dict[str, dict], subprocess.CompletedProcess[str]]:
    """`cargo clean`, then a build in which the daemon serves every cacheable crate as a
    local hit (asserted); the build's events by crate, and cargo's output."""
    ws.clean()
    ws.take_events()
    out = ws.build()
    evs = {e["crate"]: e for e in ws.take_events()}
    for crate in CACHEABLE_CRATES:
        assert evs[crate]["outcome"] == "local_hit" and evs[crate].get("via") == "daemon", evs[crate]
    return evs, out


def edit_util_then_miss_then_daemon_hit(ws: Workspace) -> None:
    """Edit kc_util: the next build misses it (the daemon declines, the wrapper compiles
    and records); after `cargo clean` the daemon serves the entry just recorded."""
    util = ws.path / "util" / "src" / "lib.rs"
    util.write_text(util.read_text() + "\npub fn added() -> u8 { 7 }\n")
    ws.build()
    evs = outcomes(ws.take_events())
    assert evs["kc_util"] == "miss", evs
    ws.verify_app()
    ws.clean()
    ws.build()
    evs = {e["crate"]: e for e in ws.take_events()}
    assert evs["kc_util"]["outcome"] == "local_hit" and evs["kc_util"].get("via") == "daemon", evs["kc_util"]
    ws.verify_app()


def make_workspace(base: Path, kache: str, store: Path | None = None, at: str = "ws") -> Workspace:
    """A fresh copy of the fixture at ``base/at`` whose builds go through kache into
    ``store`` (default ``base/store``), with its own counting rustc (log: ``base/rustc.log``)."""
    path = base / at
    shutil.copytree(FIXTURES / "ws", path)
    store = store or base / "store"
    log = base / "rustc.log"
    rustc = make_counting_rustc(base / "toolchain", log)
    ws = Workspace(path, store, kache, log)
    ws.env = {"RUSTC_WRAPPER": kache, "RUSTC": str(rustc), "KACHE_CACHE_DIR": str(store),
              "PYTHONDONTWRITEBYTECODE": ""}
    return ws


def make_machine(base: Path, kache_exe: str) -> Workspace:
    """A machine of its own under ``base``: a checkout at its own path, its own store,
    HOME, XDG dirs, CARGO_HOME and counting rustc (the same real toolchain)."""
    ws = make_workspace(base, kache_exe, base / "cache", at=f"src/{base.name}/ws")
    home = base / "home"
    (home / ".cargo").mkdir(parents=True)
    ws.env.update({"HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"),
                   "XDG_CACHE_HOME": str(home / ".cache"), "CARGO_HOME": str(home / ".cargo")})
    return ws


def kache(ws: Workspace, *args: str, timeout: float = 120, **extra: str) -> subprocess.CompletedProcess[str]:
    """Run a kache command in the machine's workspace with its environment (hang-guarded)."""
    return subprocess.run([ws.kache, *args], env={**os.environ, **ws.env, **extra}, capture_output=True,
                          text=True, cwd=ws.path, timeout=timeout)


@contextmanager
def daemon_running(ws: Workspace) -> Iterator[Workspace]:
    """``ws`` built once (a filled store), with a daemon running on it until the block ends."""
    ws.env["KACHE_DAEMON_IDLE_TIMEOUT"] = "120"
    ws.build()
    # Under umask 077, as the systemd unit and the Nix module run it.
    out = subprocess.run(["sh", "-c", 'umask 077; exec "$0" daemon start', ws.kache],
                         env={**os.environ, **ws.env}, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    deadline = time.monotonic() + 10
    while not (ws.store / "daemon.sock").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert (ws.store / "daemon.sock").exists()
    try:
        yield ws
    finally:
        subprocess.run([ws.kache, "daemon", "stop"], env={**os.environ, **ws.env}, capture_output=True)


def configure_remote(ws: Workspace, bucket: str, endpoint: str) -> None:
    """The remote in the machine's own config file; credentials in its environment."""
    config = Path(ws.env["XDG_CONFIG_HOME"]) / "kache" / "config.toml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(f'[cache.remote]\nbucket = "{bucket}"\nendpoint = "{endpoint}"\n')
    ws.env.update({"KACHE_S3_ACCESS_KEY": ACCESS_KEY, "KACHE_S3_SECRET_KEY": SECRET_KEY,
                   "KACHE_DAEMON_IDLE_TIMEOUT": "60"})
