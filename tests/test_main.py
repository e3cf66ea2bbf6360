from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from kache.__main__ import is_wrapper_call


@pytest.mark.parametrize(
    "argv",
    [["kache", "rustc", "-vV"],
     ["kache", "/home/u/.rustup/toolchains/stable/bin/rustc", "--crate-name", "x"],
     ["kache", "/usr/bin/clippy-driver", "/usr/bin/rustc", "-vV"],
     ["kache", "rustc.exe", "-vV"]],
)
def test_compiler_as_first_argument_is_wrapper_mode(argv: list[str]) -> None:
    assert is_wrapper_call(argv)


@pytest.mark.parametrize(
    "argv", [["kache"], ["kache", "stats"], ["kache", "--version"], ["kache", "config", "show"], ["kache", ""]])
def test_commands_are_cli_mode(argv: list[str]) -> None:
    assert not is_wrapper_call(argv)


def test_custom_compiler_path_is_wrapper_mode(tmp_path: Path) -> None:
    exe = tmp_path / "my-compiler"
    shutil.copy(shutil.which("true") or "/bin/true", exe)
    assert is_wrapper_call(["kache", str(exe), "-vV"])


def test_a_bare_program_name_on_path_is_wrapper_mode(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """RUSTC=myrustc or RUSTC_WORKSPACE_WRAPPER=sccache: cargo passes the bare name."""
    for name in ("myrustc", "sccache", "init"):
        exe = tmp_path / name
        exe.write_text("#!/bin/sh\nexec \"$@\"\n")
        exe.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    assert is_wrapper_call(["kache", "myrustc", "-vV"])
    assert is_wrapper_call(["kache", "sccache", "/usr/bin/rustc", "-vV"])
    assert not is_wrapper_call(["kache", "init", "--dry-run"])  # kache's own command comes first
    assert not is_wrapper_call(["kache", "no-such-program", "x"])
    assert not is_wrapper_call(["kache", "myrustc"])  # cargo always passes arguments


@pytest.mark.parametrize("sig", ["SEGV", "KILL"])
def test_a_compiler_that_dies_of_a_signal_kills_kache_alike(tmp_path: Path, sig: str) -> None:
    """A rustc that crashes (SIGSEGV in LLVM) or is killed while kache waits for it: cargo
    must see the signal, as without kache, not an exit status of 245."""
    import signal
    import subprocess
    import sys

    from tests.support.env import ROOT
    from tests.support.launch import LAUNCH

    rustc = shutil.which("rustc")
    assert rustc
    crashing = tmp_path / "rustc"
    crashing.write_text(f'#!/bin/sh\ncase "$*" in *"--crate-name boom"*) kill -{sig} $$ ;; esac\nexec {rustc} "$@"\n')
    crashing.chmod(0o755)
    (tmp_path / "lib.rs").write_text("pub fn f() {}\n")
    env = {**os.environ, "KACHE_CACHE_DIR": str(tmp_path / "store"), "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", LAUNCH, str(crashing), "--crate-name", "boom", "--crate-type", "lib",
                          "--emit=dep-info,metadata", "--out-dir", str(tmp_path / "out"), "lib.rs"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == -getattr(signal, f"SIG{sig}"), out


def test_rustc_starts_with_the_signals_python_ignores_at_their_defaults(tmp_path: Path) -> None:
    """CPython ignores SIGPIPE and SIGXFSZ; the compiler kache runs must not inherit that
    (as without kache: a file-size limit kills it, a closed pipe ends it)."""
    import signal
    import subprocess
    import sys

    from tests.support.env import ROOT
    from tests.support.launch import LAUNCH

    rustc = shutil.which("rustc")
    assert rustc
    report = tmp_path / "sigign"
    compiler = tmp_path / "rustc"
    compiler.write_text(f'#!/bin/sh\ncase "$*" in *"--crate-name sig"*) grep SigIgn /proc/$$/status > {report} ;; '
                        f'esac\nexec {rustc} "$@"\n')
    compiler.chmod(0o755)
    (tmp_path / "lib.rs").write_text("pub fn f() {}\n")
    env = {**os.environ, "KACHE_CACHE_DIR": str(tmp_path / "store"), "PYTHONPATH": str(ROOT)}
    for disabled in ("0", "1"):  # compiled and recorded; run as if kache were absent (exec)
        report.unlink(missing_ok=True)
        out = subprocess.run([sys.executable, "-c", LAUNCH, str(compiler), "--crate-name", "sig", "--crate-type",
                              "lib", "--emit=dep-info,metadata", "--out-dir", str(tmp_path / "out"), "lib.rs"],
                             cwd=tmp_path, env={**env, "KACHE_DISABLED": disabled, "KACHE_RECACHE": "1"},
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out
        ignored = int(report.read_text().split()[1], 16)
        assert not ignored & (1 << (signal.SIGPIPE - 1) | 1 << (signal.SIGXFSZ - 1)), (disabled, hex(ignored))
