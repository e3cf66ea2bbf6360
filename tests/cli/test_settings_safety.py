"""The CLI's side of the settings rules of issue 25's review: a setting kache cannot
read safely is never replaced by a permissive guess (the default store, a writable
remote); the commands say so, with the whole message and a failing exit status."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kache.cli import main

STORE_ERROR = ('kache: error: invalid setting in environment variable KACHE_CACHE_DIR: cache.local_store = "rel/dir": '
               "expected an absolute path (after ~ and $VAR expansion): fix it or unset it\n")
OFF_WARNING = ('kache: warning: caching is off: invalid setting in environment variable KACHE_CACHE_DIR: '
               'cache.local_store = "rel/dir": expected an absolute path (after ~ and $VAR expansion); every rustc '
               "call runs directly until it is fixed\n")


@pytest.mark.parametrize("args", [["purge", "--yes"], ["gc"], ["stats", "--zero"], ["list"], ["clean", "--dry-run"]])
def test_store_commands_refuse_an_invalid_store_setting(clean_env: Path, monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str], args: list[str]) -> None:
    """Was: they acted on the default store (purge --yes emptied it)."""
    default = clean_env / ".cache" / "kache"
    default.mkdir(parents=True)
    (default / "keep").write_text("x")
    monkeypatch.chdir(clean_env)
    monkeypatch.setenv("KACHE_CACHE_DIR", "rel/dir")
    assert main(args) == 1
    err = capsys.readouterr().err
    assert err.endswith(STORE_ERROR)
    assert err in (STORE_ERROR, OFF_WARNING + STORE_ERROR)
    assert (default / "keep").exists() and not (clean_env / "rel").exists()


def test_doctor_names_the_variable_and_does_not_check_the_default_store(
        clean_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("KACHE_CACHE_DIR", "rel/dir")
    assert main(["doctor", "--json"]) == 1
    checks = {c["name"]: c for c in json.loads(capsys.readouterr().out)["checks"]}
    assert checks["config"] == {
        "name": "config", "status": "fail",
        "detail": 'caching is off: invalid setting in environment variable KACHE_CACHE_DIR: cache.local_store = '
                  '"rel/dir": expected an absolute path (after ~ and $VAR expansion)',
        "fix": "fix or unset the environment variable named above"}
    assert checks["store"]["status"] == "fail" and "caching is off" in checks["store"]["detail"]
    assert "store writable" not in checks and "store index" not in checks


def test_validate_fails_without_strict_for_an_unknown_key_that_turns_caching_off(
        user_config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    user_config.write_text('[cache.extra_input.util]\nenv = ["PM_ENV"]\n')
    assert main(["config", "validate"]) == 1
    assert capsys.readouterr().err == (
        "kache: error: unknown key `cache.extra_input` in ~/.config/kache/config.toml, did you mean "
        "`cache.extra_inputs`? caching is off until it is fixed\n")
    assert main(["config", "validate", str(user_config)]) == 1
    user_config.write_text("[cache.remote]\nread-only = true\n")
    assert main(["config", "validate"]) == 1
    assert capsys.readouterr().err.endswith(
        "kache: error: unknown key `cache.remote.read-only` in ~/.config/kache/config.toml, did you mean "
        "`cache.remote.read_only`? the remote is off until it is fixed\n")


def test_show_keeps_the_quotes_of_an_invalid_value(user_config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Was: `true is invalid, expected true or false` for the string "true"."""
    user_config.write_text('[cache.remote]\nread_only = "true"\n')
    assert main(["config", "show"]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("cache.remote.read_only "))
    assert row.endswith('(but user file ~/.config/kache/config.toml: "true" is invalid, expected true or false; '
                        "the remote is off)")


def test_show_gives_the_merged_extra_inputs_with_their_sources(
        clean_env: Path, user_config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    system = tmp_path / "system.toml"
    system.write_text('[cache.extra_inputs.util]\nenv = ["ADMIN"]\n')
    user_config.write_text('[cache.extra_inputs.util]\nenv = ["MINE"]\n')
    monkeypatch.setenv("KACHE_CONFIG", str(system))
    assert main(["config", "show", "--json"]) == 0
    item = json.loads(capsys.readouterr().out)["settings"]["cache.extra_inputs"]
    assert item["value"] == {"util": {"env": ["ADMIN", "MINE"]}}
    assert item["merged_from"] == [{"source": "system", "where": str(system)},
                                   {"source": "user", "where": str(user_config)}]
    assert main(["config", "show"]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("cache.extra_inputs "))
    assert row.endswith(f"merged: system file {system} + user file ~/.config/kache/config.toml")


def test_a_relative_kache_config_is_said_by_the_cli(clean_env: Path, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("KACHE_CONFIG", "kache.toml")
    assert main(["config", "show", "--json"]) == 0
    out = capsys.readouterr()
    assert json.loads(out.out)["caching"] == "off"
    assert "KACHE_CONFIG: \"kache.toml\": expected an absolute path" in out.err
    assert main(["list"]) == 1  # the store it may name is unknown


def test_config_path_says_a_relative_kache_config_turns_caching_off(
        clean_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("KACHE_CONFIG", "kache.toml")
    assert main(["config", "path"]) == 0
    assert capsys.readouterr().err == (
        'kache: warning: caching is off: invalid setting in environment variable KACHE_CONFIG: "kache.toml": expected '
        "an absolute path (after ~ and $VAR expansion; rustc runs in more than one directory); give the full path "
        "or unset KACHE_CONFIG\n")
