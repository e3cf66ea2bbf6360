"""kache installed the way nixpkgs installs a Python application: a shell script that
execs ``.kache-wrapped``, whose interpreter does not know kache, and which adds kache's
and its dependencies' site directories at run time (``site.addsitedir``). The daemon it
starts, the daemon a build starts, the service that replaces one, and a daemon's
re-execution after a config change must all find kache the same way."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kache.daemon import control
from tests.support.waiting import wait_for

BASE = getattr(sys, "_base_executable", sys.executable)


def _bare_interpreter_finds_kache() -> bool:
    return subprocess.run([BASE, "-c", "import kache"], capture_output=True, env={"PATH": os.defpath},
                          cwd="/").returncode == 0


pytestmark = pytest.mark.skipif(_bare_interpreter_finds_kache(),
                                reason=f"{BASE} imports kache without help: nothing to show")


@pytest.fixture
def nix_kache(tmp_path: Path) -> Path:
    """``<fake store>/kache-0.1.0/bin/kache``, as makeWrapper and wrapPythonPrograms write it."""
    # every directory this process imports from (kache may come from a source tree, as in
    # a Nix check phase, or from site-packages)
    import kache

    kache_root = os.path.dirname(os.path.dirname(os.path.abspath(kache.__file__)))
    site_dirs = list(dict.fromkeys([kache_root] + [p for p in sys.path if os.path.isabs(p) and os.path.isdir(p)]))
    bindir = tmp_path / "nix" / "store" / "0000-kache-0.1.0" / "bin"
    bindir.mkdir(parents=True)
    wrapped = bindir / ".kache-wrapped"
    wrapped.write_text(
        f"#!{BASE}\n"
        f"import sys;import site;import functools;sys.argv[0] = {str(bindir / 'kache')!r};"
        f"functools.reduce(lambda k, p: site.addsitedir(p, k), {site_dirs!r}, site._init_pathinfo());\n"
        "from kache.__main__ import main\n"
        "if __name__ == '__main__':\n"
        "    sys.exit(main())\n")
    script = bindir / "kache"
    script.write_text(f'#!{shutil.which("bash")}\nexec -a "$0" "{wrapped}" "$@"\n')
    for f in (wrapped, script):
        f.chmod(0o755)
    return script


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    config = tmp_path / "etc" / "kache" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text("[cache]\ns3_concurrency = 4\n")
    keep = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "RUSTUP_HOME", "CARGO_HOME")}
    return {**keep, "HOME": str(home), "KACHE_CACHE_DIR": str(tmp_path / "store"), "KACHE_CONFIG": str(config)}


def kache(script: Path, env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(script), *args], env=env, capture_output=True, text=True, timeout=timeout, cwd="/")


def status(script: Path, env: dict[str, str]) -> dict:
    return json.loads(kache(script, env, "daemon", "--json").stdout)


def test_the_daemon_starts_stops_and_restarts_itself(nix_kache: Path, env: dict[str, str]) -> None:
    plain = subprocess.run([BASE, "-m", "kache", "--version"], capture_output=True, text=True, env=env, cwd="/")
    assert "No module named kache" in plain.stderr  # what `python -m kache` alone meets here
    store = env["KACHE_CACHE_DIR"]
    try:
        out = kache(nix_kache, env, "daemon", "start", "--wait")
        assert out.returncode == 0, out.stdout + out.stderr
        first = status(nix_kache, env)
        assert first["running"] and first["responding"], first

        # a config change: the daemon re-executes itself (it checks every 10 s)
        config = Path(env["KACHE_CONFIG"])
        config.write_text("[cache]\ns3_concurrency = 5\n")
        wait_for(lambda: (s := status(nix_kache, env)).get("responding") and s["started"] != first["started"],
                 timeout=30, what="the daemon to re-execute itself")
        assert status(nix_kache, env)["pid"] == first["pid"]  # exec: the same process, new code
        log = (Path(store) / "daemon.log").read_text()
        assert "a config file changed: restarting" in log
        assert "No module named" not in log

        assert kache(nix_kache, env, "daemon", "stop").returncode == 0
        assert control.running_pid(store) is None
        assert kache(nix_kache, env, "daemon", "start", "--wait").returncode == 0
        assert status(nix_kache, env)["responding"]
    finally:
        kache(nix_kache, env, "daemon", "stop")


def test_the_service_replaces_a_daemon_and_never_idles_out(nix_kache: Path, env: dict[str, str]) -> None:
    env = {**env, "KACHE_DAEMON_IDLE_TIMEOUT": "1"}
    store = env["KACHE_CACHE_DIR"]
    assert kache(nix_kache, env, "daemon", "start", "--wait").returncode == 0
    started_by_hand = control.running_pid(store)
    service = subprocess.Popen([str(nix_kache), "daemon", "run", "--service"], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: control.running_pid(store) not in (None, started_by_hand), timeout=20,
                 what="the service to take over")
        assert status(nix_kache, env)["responding"]
        time.sleep(2.5)  # past the idle timeout of the setting
        assert service.poll() is None
        assert status(nix_kache, env)["pid"] == service.pid
    finally:
        kache(nix_kache, env, "daemon", "stop")
        out, _ = service.communicate(timeout=20)
    assert "asking it to stop, to run as the service" in out
    assert service.returncode == 0


@pytest.mark.e2e
@pytest.mark.skipif(shutil.which("cargo") is None, reason="needs cargo")
def test_a_build_starts_the_daemon_through_the_wrapper(nix_kache: Path, env: dict[str, str], tmp_path: Path) -> None:
    crate = tmp_path / "crate"
    (crate / "src").mkdir(parents=True)
    (crate / "Cargo.toml").write_text('[package]\nname = "tiny"\nversion = "0.1.0"\nedition = "2021"\n')
    (crate / "src" / "lib.rs").write_text("pub fn f() -> u32 { 1 }\n")
    build_env = {**env, "RUSTC_WRAPPER": str(nix_kache), "KACHE_S3_BUCKET": "nix-style-bucket",
                 "KACHE_S3_ENDPOINT": "http://127.0.0.1:9", "KACHE_S3_ACCESS_KEY": "a",
                 "KACHE_S3_SECRET_KEY": "b", "KACHE_REMOTE_CHECK_TIMEOUT_MS": "200",
                 "KACHE_DAEMON_IDLE_TIMEOUT": "30"}
    try:
        out = subprocess.run(["cargo", "build", "--offline"], cwd=crate, env=build_env, capture_output=True,
                             text=True, timeout=300)
        assert out.returncode == 0, out.stderr
        wait_for(lambda: control.running_pid(env["KACHE_CACHE_DIR"]), timeout=20, what="the autostarted daemon")
        assert status(nix_kache, env)["responding"]
    finally:
        kache(nix_kache, env, "daemon", "stop")
