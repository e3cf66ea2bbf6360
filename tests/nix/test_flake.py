"""The flake, checked offline: `nix flake check --no-build` against a nixpkgs stand-in.

Needs the real nixpkgs `lib` (KACHE_NIXPKGS_LIB, e.g. a checkout of
nix-community/nixpkgs.lib's lib/ directory), which CI cannot fetch: skipped without it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LIB = os.environ.get("KACHE_NIXPKGS_LIB")
NIX = shutil.which("nix")

pytestmark = pytest.mark.skipif(not (LIB and NIX), reason="needs KACHE_NIXPKGS_LIB and nix")
FLAKES = ["--extra-experimental-features", "nix-command flakes"]


@pytest.fixture(scope="module")
def flake(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("flake")
    standin = base / "nixpkgs"
    shutil.copytree(ROOT / "tests" / "nix" / "nixpkgs-standin", standin)
    shutil.copytree(LIB, standin / "lib")  # type: ignore[arg-type]
    copy = base / "kache"
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout.split()
    for f in files:
        if (ROOT / f).is_file():
            (copy / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / f, copy / f)
    return copy, standin


def nix(flake: tuple[Path, Path], *args: str) -> str:
    copy, standin = flake
    out = subprocess.run([NIX, *FLAKES, *args, "--override-input", "nixpkgs", f"path:{standin}"],  # type: ignore[list-item]
                         cwd=copy, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_flake_check_evaluates_every_output(flake: tuple[Path, Path]) -> None:
    nix(flake, "flake", "check", "--no-build")


def test_flake_outputs_and_module_checks(flake: tuple[Path, Path]) -> None:
    for system in ("x86_64-linux", "aarch64-linux", "x86_64-darwin", "aarch64-darwin"):
        checks = json.loads(nix(flake, "eval", "--json", f".#checks.{system}", "--apply", "builtins.attrNames"))
        assert {"package", "module-nixos", "module-darwin"} <= set(checks)
        assert ("vm" in checks) == system.endswith("linux")
        program = json.loads(nix(flake, "eval", "--json", f".#apps.{system}.default.program"))
        assert program.endswith("-kache-0.1.0/bin/kache")
    # (the checks import the module twice, as a configuration may)
    nixos = json.loads(json.loads(nix(flake, "eval", "--json", ".#checks.x86_64-linux.module-nixos.text")))
    assert nixos["service"]["serviceConfig"]["ExecStart"].endswith("/bin/kache daemon run --service")
    assert nixos["sessionVariables"]["KACHE_CONFIG"] == "/etc/kache/config.toml"
    darwin = json.loads(json.loads(nix(flake, "eval", "--json", ".#checks.aarch64-darwin.module-darwin.text")))
    assert darwin["agent"]["serviceConfig"]["ProgramArguments"][:2] == ["/bin/sh", "-c"]
    assert darwin["agent"]["serviceConfig"]["ProgramArguments"][-3:] == ["daemon", "run", "--service"]
    assert darwin["envVariables"]["KACHE_CONFIG"] == "/etc/kache/config.toml"
