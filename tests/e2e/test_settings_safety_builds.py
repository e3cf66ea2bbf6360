"""Differential builds for the settings rules of issue 25's review: a setting kache
cannot read safely (a misspelt extra input, a relative KACHE_CONFIG, a user file beside a
system file, KACHE_RECACHE=y) must never give a stale artifact. Each step is built
through kache into a fresh target dir and by plain cargo; the programs must print the
same.

The workspace: a proc macro ``pm`` that reads ``PM_ENV`` when it expands (rustc does
not see that read: only ``cache.extra_inputs`` puts it in a key), a lib ``util`` and a
path dependency ``extlib`` outside the workspace (cargo runs rustc in its own directory)
that use it, and a bin ``app`` that prints both."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.support.env import kache_log
from tests.support.project import kache_env, oracle_env, write_files

pytestmark = pytest.mark.e2e


def _manifest(name: str, deps: dict[str, str], proc_macro: bool = False) -> str:
    text = f'[package]\nname = "{name}"\nversion = "0.1.0"\nedition = "2021"\n'
    if proc_macro:
        text += "\n[lib]\nproc-macro = true\n"
    return text + "\n[dependencies]\n" + "".join(f'{d} = {{ path = "{p}" }}\n' for d, p in deps.items())


FILES = {
    "ws/Cargo.toml": '[workspace]\nresolver = "2"\nmembers = ["app", "util", "pm"]\n',
    "ws/pm/Cargo.toml": _manifest("pm", {}, proc_macro=True),
    "ws/pm/src/lib.rs": "use proc_macro::TokenStream;\n\n#[proc_macro]\n"
                        "pub fn made(_input: TokenStream) -> TokenStream {\n"
                        '    let value = std::env::var("PM_ENV").unwrap_or_else(|_| "unset".into());\n'
                        '    format!("{:?}", value).parse().unwrap()\n}\n',
    "ws/util/Cargo.toml": _manifest("util", {"pm": "../pm"}),
    "ws/util/src/lib.rs": "pub const VALUE: &str = pm::made!();\n",
    "extlib/Cargo.toml": _manifest("extlib", {"pm": "../ws/pm"}),
    "extlib/src/lib.rs": "pub const VALUE: &str = pm::made!();\n",
    "ws/app/Cargo.toml": _manifest("app", {"util": "../util", "extlib": "../../extlib"}),
    "ws/app/src/main.rs": 'fn main() {\n    println!("util={} extlib={}", util::VALUE, extlib::VALUE);\n}\n',
}


class Steps:
    """The workspace, its store, and a fresh target dir for every build."""

    def __init__(self, root: Path, kache: str) -> None:
        write_files(root, FILES)
        self.root, self.ws, self.exe, self.store, self.n = root, root / "ws", kache, root / "store", 0

    def _build(self, env: dict[str, str]) -> str:
        self.n += 1
        target = self.root / f"target-{self.n}"
        out = subprocess.run(["cargo", "build", "--offline", "-q"], cwd=self.ws, capture_output=True, text=True,
                             env={**env, "CARGO_TARGET_DIR": str(target)}, start_new_session=True)
        assert out.returncode == 0, out.stderr
        return subprocess.run([target / "debug" / "app"], capture_output=True, text=True, check=True).stdout

    def kache(self, **env: str) -> str:
        return self._build({**os.environ, **kache_env(self.exe, self.store, **env)})

    def plain(self, **env: str) -> str:
        return self._build(oracle_env(**env))

    def said(self) -> str:
        """What kache said (its warnings go to the terminal and kache.log, not to cargo)."""
        return kache_log() + kache_log(self.store)

    def same(self, **env: str) -> str:
        """Build through kache and by plain cargo with ``env``; both print the same."""
        through_kache, oracle = self.kache(**env), self.plain(**env)
        assert through_kache == oracle, f"kache built {through_kache!r}, plain cargo {oracle!r}"
        return oracle


@pytest.fixture
def steps(tmp_path: Path, kache_exe: str) -> Steps:
    return Steps(tmp_path / "p", kache_exe)


@pytest.mark.parametrize("toml", ['[cache.extra_input.util]\nenv = ["PM_ENV"]\n',
                                  '[cache.extra-inputs.util]\nenv = ["PM_ENV"]\n'])
def test_a_misspelt_extra_input_does_not_give_a_stale_artifact(steps: Steps, user_config: Path, toml: str) -> None:
    """Was: an unknown-key warning, util cached without PM_ENV in its key: `a` for `b`."""
    user_config.write_text(toml)
    assert steps.same(PM_ENV="a") == "util=a extlib=a\n"
    assert steps.same(PM_ENV="b") == "util=b extlib=b\n"
    assert "did you mean `cache.extra_inputs`? caching is off until it is fixed" in steps.said()


def test_a_relative_kache_config_does_not_give_a_stale_artifact(steps: Steps) -> None:
    """Was: read in the workspace root for util, in extlib's own directory for extlib,
    where there is no such file: extlib cached without PM_ENV in its key."""
    (steps.ws / "kache.toml").write_text('[cache.extra_inputs.util]\nenv = ["PM_ENV"]\n'
                                         '[cache.extra_inputs.extlib]\nenv = ["PM_ENV"]\n')
    assert steps.same(PM_ENV="a", KACHE_CONFIG="kache.toml") == "util=a extlib=a\n"
    assert steps.same(PM_ENV="b", KACHE_CONFIG="kache.toml") == "util=b extlib=b\n"
    assert 'KACHE_CONFIG: "kache.toml": expected an absolute path' in steps.said()
    # the same file named by its full path: cached, and right
    full = str(steps.ws / "kache.toml")
    assert steps.same(PM_ENV="c", KACHE_CONFIG=full) == "util=c extlib=c\n"
    assert steps.same(PM_ENV="d", KACHE_CONFIG=full) == "util=d extlib=d\n"
    assert (steps.store / "index.db").exists()


def test_a_user_file_adds_to_the_system_files_extra_inputs(steps: Steps, user_config: Path, tmp_path: Path) -> None:
    """Was: the user's table replaced the administrator's: util cached without PM_ENV."""
    system = tmp_path / "system.toml"
    system.write_text('[cache.extra_inputs.util]\nenv = ["PM_ENV"]\n[cache.extra_inputs.extlib]\nenv = ["PM_ENV"]\n')
    user_config.write_text('[cache.extra_inputs.app]\nenv = ["SOMETHING_ELSE"]\n')
    assert steps.same(PM_ENV="a", KACHE_CONFIG=str(system)) == "util=a extlib=a\n"
    assert steps.same(PM_ENV="b", KACHE_CONFIG=str(system)) == "util=b extlib=b\n"
    assert steps.same(PM_ENV="a", KACHE_CONFIG=str(system)) == "util=a extlib=a\n"  # and hits again
    assert (steps.store / "index.db").exists()


@pytest.mark.parametrize("name", ["KACHE_RECACHE", "KACHE_DISABLED"])
def test_an_unusual_spelling_of_an_env_flag_is_set(steps: Steps, name: str) -> None:
    """Was: KACHE_RECACHE=y read as false, serving the very entry it exists to replace."""
    assert steps.same(PM_ENV="a") == "util=a extlib=a\n"  # recorded without PM_ENV in the key
    assert steps.same(PM_ENV="b", **{name: "y"}) == "util=b extlib=b\n"
    assert f'invalid setting in environment variable {name}: "y"' in steps.said()
