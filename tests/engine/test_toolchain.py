"""The compiler chain's identity: every program by content, probed as cargo runs it."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from kache.engine import toolchain
from kache.engine.toolchain import ToolchainError, identity
from kache.store.store import Store


def _real_rustc() -> str:
    sysroot = subprocess.run(["rustc", "--print", "sysroot"], capture_output=True, text=True, check=True).stdout
    return os.path.join(sysroot.strip(), "bin", "rustc")


def _script(path: Path, body: str) -> Path:
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return path


def _age(path: Path) -> None:
    """Make a file look older than MIN_AGE_SECS (its identity may then be memoised)."""
    old = time.time() - 60
    os.utime(path, (old, old))


def test_an_edited_rustc_script_is_another_toolchain(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "store"))
    rustc = _real_rustc()
    script = _script(tmp_path / "myrustc", f'exec "{rustc}" --cfg a "$@"')
    env = {"PATH": os.environ["PATH"]}
    first = identity(store, [str(script)], env, str(tmp_path))
    _script(script, f'exec "{rustc}" --cfg b "$@"')  # -vV prints the same
    second = identity(store, [str(script)], env, str(tmp_path))
    assert first != second
    assert first.split("\n", 1)[1] == second.split("\n", 1)[1]  # only the program's content differs


def test_a_memoised_identity_follows_the_file(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "store"))
    rustc = _real_rustc()
    script = _script(tmp_path / "myrustc", f'exec "{rustc}" "$@"')
    _age(script)
    env = {"PATH": os.environ["PATH"]}
    first = identity(store, [str(script)], env, str(tmp_path))
    assert identity(store, [str(script)], env, str(tmp_path)) == first  # from the memo
    _script(script, f'exec "{rustc}" --cfg x "$@"')
    _age(script)
    assert identity(store, [str(script)], env, str(tmp_path)) != first


def test_a_bare_name_is_found_on_the_path_given(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "store"))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _script(bin_dir / "myrustc", f'exec "{_real_rustc()}" "$@"')
    env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    assert "release:" in identity(store, ["myrustc"], env, str(tmp_path))
    with pytest.raises(ToolchainError):
        identity(store, ["myrustc"], {"PATH": os.environ["PATH"]}, str(tmp_path))


def test_a_workspace_wrapper_is_part_of_the_chain(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "store"))
    wrap = _script(tmp_path / "wrap", 'exec "$@"')
    rustc = _real_rustc()
    env = {"PATH": os.environ["PATH"]}
    alone = identity(store, [rustc], env, str(tmp_path))
    wrapped = identity(store, [str(wrap), rustc], env, str(tmp_path))
    assert alone != wrapped and "program:wrap:" in wrapped


def test_a_chain_that_cannot_be_probed_is_an_error(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "store"))
    broken = _script(tmp_path / "broken", "exit 3")
    with pytest.raises(ToolchainError):
        identity(store, [str(broken)], {"PATH": os.environ["PATH"]}, str(tmp_path))


def test_a_rustup_proxy_is_probed_by_its_own_name_and_follows_rust_toolchain_files(tmp_path: Path) -> None:
    rustup = shutil.which("rustup")
    if rustup is None:
        pytest.skip("no rustup here")
    proxy = Path(rustup).with_name("rustc")
    if not proxy.is_symlink():
        pytest.skip("rustc is not a rustup proxy here")
    store = Store(str(tmp_path / "store"))
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "RUSTUP_HOME")}
    ws = tmp_path / "ws"
    ws.mkdir()
    text = identity(store, [str(proxy)], env, str(ws))
    assert "binary: rustc" in text  # rustc's -vV, not rustup's own version
    memo_before = toolchain._rustup_state(env, str(ws))
    (ws / "rust-toolchain.toml").write_text('[toolchain]\nchannel = "stable"\n')
    assert toolchain._rustup_state(env, str(ws)) != memo_before  # a new file is a new memo key
