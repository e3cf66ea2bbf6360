"""Shell completion: ``kache completion SHELL`` prints click's script, the script run by
a real bash completes commands, options and crate names from the store, click's
``_KACHE_COMPLETE`` protocol reaches the CLI, and wrapper mode ignores it."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from click.shell_completion import get_completion_class

from kache.cli import main, root
from kache.store.store import Store
from tests.support.entries import add_entry


@pytest.fixture
def store(store_env: Path) -> Store:
    s = Store(str(store_env))
    s.open()
    add_entry(s, "serde")
    add_entry(s, "serde_json")
    add_entry(s, "proc-macro2")
    s.close()
    return s


def _bash_complete(kache_exe: str, *words: str) -> list[str]:
    """What bash offers after ``words`` (the last one being completed), through the script
    ``kache completion bash`` prints, sourced into a real bash."""
    script = ('source <(kache completion bash)\n'
              f'COMP_WORDS=({" ".join(repr(w) for w in words)}); COMP_CWORD={len(words) - 1}\n'
              '_kache_completion kache\n'
              'printf "%s\\n" "${COMPREPLY[@]}"\n')
    env = {**os.environ, "PATH": f"{os.path.dirname(kache_exe)}{os.pathsep}{os.environ['PATH']}"}
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0 and out.stderr == ""
    return [line for line in out.stdout.splitlines() if line]


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_bash_completes_commands_options_and_crates(store: Store, kache_exe: str) -> None:
    assert _bash_complete(kache_exe, "kache", "da") == ["daemon"]
    assert _bash_complete(kache_exe, "kache", "daemon", "re") == ["restart"]
    assert _bash_complete(kache_exe, "kache", "stats", "--z") == ["--zero"]
    assert _bash_complete(kache_exe, "kache", "completion", "") == ["bash", "zsh", "fish"]
    assert _bash_complete(kache_exe, "kache", "why-miss", "ser") == ["serde", "serde_json"]
    assert _bash_complete(kache_exe, "kache", "list", "proc_") == ["proc-macro2"]
    assert _bash_complete(kache_exe, "kache", "purge", "--crate-name", "serde_") == ["serde_json"]


def test_click_protocol_reaches_the_cli_and_not_the_wrapper(store: Store, kache_exe: str) -> None:
    env = {**os.environ, "_KACHE_COMPLETE": "bash_complete", "COMP_WORDS": "kache why-miss serde_",
           "COMP_CWORD": "2"}
    out = subprocess.run([kache_exe], capture_output=True, text=True, env=env, timeout=60)
    assert (out.returncode, out.stdout, out.stderr) == (0, "plain,serde_json\n", "")
    # with KACHE_LOG set, still only the completions: the CLI's debug lines went to the shell
    logged = subprocess.run([kache_exe], capture_output=True, text=True, env={**env, "KACHE_LOG": "kache=debug"},
                            timeout=60)
    assert (logged.returncode, logged.stdout, logged.stderr) == (0, "plain,serde_json\n", "")
    # cargo's call is wrapper mode whatever the environment holds: rustc answers
    wrapped = subprocess.run([kache_exe, "rustc", "-vV"], capture_output=True, text=True, env=env, timeout=60)
    plain = subprocess.run(["rustc", "-vV"], capture_output=True, text=True, timeout=60)
    assert (wrapped.returncode, wrapped.stdout) == (0, plain.stdout)


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_prints_clicks_script(shell: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["completion", shell]) == 0
    cls = get_completion_class(shell)
    assert cls is not None
    assert capsys.readouterr().out == cls(root, {}, "kache", "_KACHE_COMPLETE").source() + "\n"


def test_completion_of_an_unknown_shell_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["completion", "tcsh"]) == 2
    assert "Invalid value for 'SHELL': 'tcsh' is not one of 'bash', 'zsh', 'fish'." in capsys.readouterr().err


def test_crates_complete_to_nothing_without_a_store(store_env: Path, kache_exe: str) -> None:
    env = {**os.environ, "_KACHE_COMPLETE": "bash_complete", "COMP_WORDS": "kache why-miss s", "COMP_CWORD": "2"}
    out = subprocess.run([kache_exe], capture_output=True, text=True, env=env, timeout=60)
    assert (out.returncode, out.stdout.strip(), out.stderr) == (0, "", "")
    assert not store_env.exists()
