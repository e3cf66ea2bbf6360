"""``kache demo``: a bundled workspace built twice through kache, timed.

The workspace (``kache/demo_workspace``: a library with a build script that generates
code, a proc-macro, a binary; no registry dependencies) is written to a directory, then
built cold with a private store, ``cargo clean``-ed and built again. The second build
should take every cacheable unit from the store.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kache.errors import KacheError
from kache.store.events import HIT_OUTCOMES

__all__ = ["DemoReport", "run_demo", "WORKSPACE"]

WORKSPACE = Path(__file__).with_name("demo_workspace")
MARKER = ".kache-demo"


@dataclass
class DemoReport:
    directory: Path
    cold_s: float
    warm_s: float
    cacheable: int
    hits: int
    compiled_warm: list[str] = field(default_factory=list)
    output: str = ""

    @property
    def speedup(self) -> float:
        return self.cold_s / self.warm_s if self.warm_s else float("inf")


def _write_workspace(directory: Path) -> None:
    if directory.exists() and any(directory.iterdir()) and not (directory / MARKER).exists():
        raise KacheError(f"demo failed: {directory}: the directory is not empty; pick a new or empty one")
    directory.mkdir(parents=True, exist_ok=True)
    for src in WORKSPACE.rglob("*"):
        if src.is_file() and "__pycache__" not in src.parts:
            dst = directory / src.relative_to(WORKSPACE)
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)
    (directory / MARKER).write_text("written by `kache demo`; safe to delete\n")


def _events(store: Path) -> list[dict[str, Any]]:
    path = store / "events.jsonl"
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def run_demo(directory: Path, kache_exe: str, say: Callable[[str], None] = print) -> DemoReport:
    """Build the demo workspace cold and warm; return what happened."""
    if shutil.which("cargo") is None:
        raise KacheError("demo failed: cargo is not on PATH; install Rust (https://rustup.rs) and retry")
    directory = directory.resolve()
    _write_workspace(directory)
    store = directory / ".kache-store"
    shutil.rmtree(store, ignore_errors=True)
    shutil.rmtree(directory / "target", ignore_errors=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KACHE_", "CARGO_TARGET_DIR", "RUSTC_WORKSPACE"))}
    env.update({"RUSTC_WRAPPER": kache_exe, "KACHE_CACHE_DIR": str(store), "KACHE_S3_BUCKET": "",
                "KACHE_DAEMON_AUTOSTART": "0", "CARGO_TERM_COLOR": "never"})

    def build(label: str) -> float:
        say(f"{label}: cargo build (in {directory})")
        t0 = time.monotonic()
        out = subprocess.run(["cargo", "build", "--offline"], cwd=directory, env=env, capture_output=True,
                             text=True)
        elapsed = time.monotonic() - t0
        if out.returncode != 0:
            raise KacheError(f"demo failed: cargo build exited with {out.returncode}:\n{out.stderr.strip()}")
        return elapsed

    cold = build("1/2 cold build, empty cache")
    first = len(_events(store))
    subprocess.run(["cargo", "clean"], cwd=directory, env=env, capture_output=True, check=False)
    warm = build("2/2 after `cargo clean`")
    second = _events(store)[first:]
    cacheable = [e for e in second if e.get("outcome") != "passthrough"]
    hits = [e for e in cacheable if e.get("outcome") in HIT_OUTCOMES]
    app = subprocess.run([directory / "target" / "debug" / "demo-app"], capture_output=True, text=True)
    return DemoReport(directory, cold, warm, len(cacheable), len(hits),
                      [e["crate"] for e in second if e.get("outcome") not in HIT_OUTCOMES], app.stdout)
