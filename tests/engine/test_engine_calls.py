"""The engine's two paths in this process, with a real rustc on a one-file library:
kache.engine.handle (the wrapper's), kache.engine.hit (restore_hit, try_hit, serve_hit),
kache.engine.record and kache.engine.restore underneath."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from kache.engine import argv as A
from kache.engine.handle import PASSTHROUGH, handle
from kache.engine.hit import serve_hit
from kache.settings import load
from kache.store import events

pytestmark = pytest.mark.e2e  # rustc compiles through kache's code


class NoRemote:
    """The remote asks of a build without a remote."""

    def enabled(self, settings: Any) -> bool:
        return False


@pytest.fixture
def lib(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    rustc = shutil.which("rustc")
    assert rustc
    src = tmp_path / "src"
    src.mkdir()
    (src / "lib.rs").write_text("#[deprecated] pub fn old() {}\npub fn f() { old() }\n")
    argv = [rustc, "--crate-type", "lib", "--crate-name", "one", "--emit=dep-info,metadata",
            "--out-dir", "target/debug/deps", "src/lib.rs"]
    store = tmp_path / "store"
    env = {"HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path / "cfg"), "KACHE_CACHE_DIR": str(store)}
    monkeypatch.chdir(tmp_path)
    for k in [k for k in os.environ if k.startswith("KACHE_")]:
        monkeypatch.delenv(k)
    for k, v in env.items():  # the wrapper's path reads this process's environment
        monkeypatch.setenv(k, v)
    env = dict(os.environ)
    return {"argv": argv, "settings": load(env), "store": store, "out": tmp_path / "target/debug/deps",
            "env": env, "cwd": str(tmp_path)}


def outcomes(store: Path) -> list[str]:
    return [e["outcome"] for e in events.read(str(store))]


def run(lib: dict[str, Any]) -> int:
    return handle(A.parse(lib["argv"]), lib["argv"], lib["settings"], time.monotonic(), NoRemote())  # type: ignore[arg-type]


def test_a_miss_records_and_the_same_call_is_then_a_hit(lib: dict[str, Any], capfd: pytest.CaptureFixture) -> None:
    assert run(lib) == 0
    rmeta = lib["out"] / "libone.rmeta"
    assert rmeta.exists() and (lib["out"] / "one.d").exists()
    first = capfd.readouterr().err
    assert "deprecated" in first  # rustc's warning passed on as it came
    compiled = rmeta.read_bytes()
    for p in lib["out"].iterdir():
        p.unlink()
    assert run(lib) == 0
    assert rmeta.read_bytes() == compiled
    assert "deprecated" in capfd.readouterr().err  # replayed on the hit
    assert outcomes(lib["store"]) == ["miss", "local_hit"]


def test_the_daemon_path_serves_the_same_entry_and_declines_what_the_wrapper_must_do(
        lib: dict[str, Any]) -> None:
    assert run(lib) == 0
    for p in lib["out"].iterdir():
        p.unlink()
    texts = serve_hit(lib["argv"], lib["env"], lib["cwd"], str(lib["store"]),
                      time.monotonic(), 0o022, settings=lib["settings"])
    assert texts is not None and "deprecated" in texts[1]
    assert (lib["out"] / "libone.rmeta").exists()
    assert outcomes(lib["store"])[-1] == "local_hit"
    # decide() says compile anew (recache) or pass through (disabled): the daemon declines
    for flag in ("KACHE_RECACHE", "KACHE_DISABLED"):
        assert serve_hit(lib["argv"], {**lib["env"], flag: "1"}, lib["cwd"], str(lib["store"]), time.monotonic(),
                         settings=lib["settings"]) is None
    # a relative compiler would be looked up relative to the caller: declined
    rel = ["rustc", *lib["argv"][1:]]
    assert serve_hit(rel, lib["env"], lib["cwd"], str(lib["store"]), time.monotonic(), settings=lib["settings"]) is None


def test_an_uncacheable_call_passes_through_with_its_reason(lib: dict[str, Any]) -> None:
    argv = [lib["argv"][0], "--crate-type", "bin", "--crate-name", "one", "--emit=dep-info,link",
            "--out-dir", "target/debug/deps", "src/lib.rs"]  # an executable: not cached by default
    assert handle(A.parse(argv), argv, lib["settings"], time.monotonic(), NoRemote()) == PASSTHROUGH  # type: ignore[arg-type]
    last = list(events.read(str(lib["store"])))[-1]
    assert last["outcome"] == "passthrough" and last["reason"]


def test_recache_compiles_again_over_a_recorded_entry(lib: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    assert run(lib) == 0
    monkeypatch.setenv("KACHE_RECACHE", "1")
    assert run(lib) == 0
    assert outcomes(lib["store"]) == ["miss", "dup"]
