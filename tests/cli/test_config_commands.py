from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from kache.cli import main, root


def test_version(kache_exe: str) -> None:
    from kache import __version__

    out = subprocess.run([kache_exe, "--version"], capture_output=True, text=True, check=True)
    assert out.stdout == f"kache {__version__}\n"


def test_show_json_reports_env_override_of_the_file(user_config: Path, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    user_config.write_text("[cache]\ncompression_level = 5\ns3_concurrency = 3\n")
    monkeypatch.setenv("KACHE_COMPRESSION_LEVEL", "7")
    assert main(["config", "show", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["settings"]["cache.compression_level"] == {
        "value": 7, "source": "env", "where": "KACHE_COMPRESSION_LEVEL"}
    assert doc["settings"]["cache.s3_concurrency"] == {"value": 3, "source": "user", "where": str(user_config)}
    assert doc["settings"]["cache.remote.region"] == {"value": "us-east-1", "source": "default"}
    assert doc["files"] == [{"role": "user", "path": str(user_config), "exists": True}]


def test_show_table_names_sources(user_config: Path, monkeypatch: pytest.MonkeyPatch,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    user_config.write_text("[cache]\ncompression_level = 5\n")
    monkeypatch.setenv("KACHE_COMPRESSION_LEVEL", "7")
    assert main(["config", "show"]) == 0
    lines = capsys.readouterr().out.splitlines()
    row = next(line for line in lines if line.startswith("cache.compression_level"))
    assert row.split() == ["cache.compression_level", "7", "env", "KACHE_COMPRESSION_LEVEL"]


def test_show_never_prints_secrets(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("KACHE_S3_ACCESS_KEY", "AKIAEXAMPLEKEY")
    monkeypatch.setenv("KACHE_S3_SECRET_KEY", "s3cr3t-v4lue")
    for args in (["config", "show"], ["config", "show", "--json"]):
        assert main(args) == 0
        out = capsys.readouterr()
        assert "AKIAEXAMPLEKEY" not in out.out + out.err
        assert "s3cr3t-v4lue" not in out.out + out.err
    main(["config", "show", "--json"])
    assert json.loads(capsys.readouterr().out)["environment"]["KACHE_S3_SECRET_KEY"] == {"set": True}


def test_validate_ok_and_failures(user_config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "validate"]) == 0
    assert capsys.readouterr().out == "ok: settings are valid (no config file; defaults)\n"
    user_config.write_text('[cache]\ncompression_level = 99\nlocal_max_size = "lots"\n')
    assert main(["config", "validate"]) == 1
    assert capsys.readouterr().err.splitlines() == [
        'kache: error: invalid setting in ~/.config/kache/config.toml: cache.local_max_size = "lots": '
        "expected a size such as 50GB, 512MiB or a number of bytes",
        "kache: error: invalid setting in ~/.config/kache/config.toml: cache.compression_level = 99: "
        "must be between 1 and 22",
    ]


def test_validate_file_argument(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "team.toml"
    f.write_text('[cache]\nnew_thing = 1\n[cache.remote]\nbucket = "team-cache"\n')
    assert main(["config", "validate", str(f)]) == 0
    out = capsys.readouterr()
    assert out.out == f"ok: {f} is valid, with 1 warning\n"
    assert out.err == (f"kache: warning: unknown key `new_thing` in {f} (cache.new_thing) (ignored; "
                       "`kache config schema` lists the known keys)\n")
    assert main(["config", "validate", str(tmp_path / "nope.toml")]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_validate_says_did_you_mean_and_fails_under_strict(user_config: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    user_config.write_text('[cache]\ncompresion_level = 3\n')
    warning = ("kache: warning: unknown key `compresion_level` in ~/.config/kache/config.toml "
               "(cache.compresion_level), did you mean `compression_level`?\n")
    assert main(["config", "validate"]) == 0
    out = capsys.readouterr()
    assert out.err == warning
    assert out.out == "ok: settings are valid, with 1 warning (~/.config/kache/config.toml)\n"
    assert main(["config", "validate", "--strict"]) == 1
    out = capsys.readouterr()
    assert out.err == warning + "kache: error: settings: 1 warning (--strict fails on warnings)\n"
    assert out.out == ""
    assert main(["config", "validate", "--strict", str(user_config)]) == 1
    out = capsys.readouterr()
    assert out.err == warning + "kache: error: ~/.config/kache/config.toml: 1 warning (--strict fails on warnings)\n"
    user_config.write_text('[cache]\ncompression_level = 3\n')
    assert main(["config", "validate", "--strict"]) == 0
    assert capsys.readouterr().out == "ok: settings are valid (~/.config/kache/config.toml)\n"


def test_show_marks_an_invalid_value_and_what_is_used_instead(user_config: Path, monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    user_config.write_text("[cache]\ncompression_level = 5\n")
    monkeypatch.setenv("KACHE_COMPRESSION_LEVEL", "99")
    assert main(["config", "show"]) == 0
    out = capsys.readouterr()
    row = next(line for line in out.out.splitlines() if line.startswith("cache.compression_level"))
    assert row.split(None, 2) == [
        "cache.compression_level", "5", f"user file {user_config} (but env KACHE_COMPRESSION_LEVEL: "
        "99 is invalid, must be between 1 and 22; ignored)"]
    assert out.err == ("kache: warning: invalid setting in environment variable KACHE_COMPRESSION_LEVEL: "
                       "cache.compression_level = 99: must be between 1 and 22; using 5 (from "
                       "~/.config/kache/config.toml)\n")
    assert main(["config", "show", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["settings"]["cache.compression_level"] == {
        "value": 5, "source": "user", "where": str(user_config),
        "invalid": [{"value": 99, "source": "env", "where": "KACHE_COMPRESSION_LEVEL",
                     "problem": "must be between 1 and 22", "effect": "ignored"}]}
    assert doc["caching"] == "on" and doc["problems"] == []


def test_show_says_caching_is_off_for_an_unsafe_setting(monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("KACHE_CACHE_DIR", "relative/store")
    assert main(["config", "show"]) == 0
    out = capsys.readouterr()
    row = next(line for line in out.out.splitlines() if line.startswith("cache.local_store"))
    assert row.endswith('  default (but env KACHE_CACHE_DIR: "relative/store" is invalid, expected an '
                                     'absolute path (after ~ and $VAR expansion); caching is off)')
    assert "caching is off: every rustc call runs directly until the problem above is fixed" in out.out
    main(["config", "show", "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert doc["caching"] == "off"
    assert doc["problems"] == ['invalid setting in environment variable KACHE_CACHE_DIR: cache.local_store = '
                               '"relative/store": expected an absolute path (after ~ and $VAR expansion)']


def test_path_lists_both_files(tmp_path: Path, user_config: Path, monkeypatch: pytest.MonkeyPatch,
                               capsys: pytest.CaptureFixture[str]) -> None:
    system = tmp_path / "ro" / "config.toml"
    system.parent.mkdir()
    system.write_text("")
    system.chmod(0o444)
    system.parent.chmod(0o555)
    monkeypatch.setenv("KACHE_CONFIG", str(system))
    try:
        assert main(["config", "path", "--json"]) == 0
        files = json.loads(capsys.readouterr().out)["files"]
    finally:
        system.parent.chmod(0o755)
    assert files[1] == {"role": "user", "path": str(user_config), "exists": False, "writable": True}
    assert files[0]["role"] == "system" and files[0]["exists"] is True and files[0]["set_by"] == "KACHE_CONFIG"
    import os
    if os.geteuid() != 0:  # root can write anything
        assert files[0]["writable"] is False


def test_schema_prints_the_shipped_schema(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "schema"]) == 0
    printed = json.loads(capsys.readouterr().out)
    source = json.loads((Path(__file__).parents[2] / "schema" / "config.schema.json").read_text())
    assert printed == source


def test_broken_config_file_is_one_clean_warning_in_show_and_an_error_in_validate(
        user_config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Was: `config show` failed. Now it shows what a build would use (caching off) with
    the reason as a warning; `config validate` still fails."""
    user_config.write_text("[cache\n")
    assert main(["config", "show"]) == 0
    err = capsys.readouterr().err
    assert err.startswith("kache: warning: caching is off: cannot read config file: ~/.config/kache/config.toml: "
                          "invalid TOML:")
    assert len(err.splitlines()) == 1
    assert main(["config", "validate"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("kache: error: cannot read config file: ~/.config/kache/config.toml: invalid TOML:")
    assert "Traceback" not in err


def test_every_command_has_help_with_an_example() -> None:
    import click

    ctx = click.Context(root)

    def walk(cmd: click.Command, path: list[str]):
        yield path, cmd
        if isinstance(cmd, click.Group):
            for name in cmd.list_commands(ctx):
                yield from walk(cmd.get_command(ctx, name), [*path, name])

    for path, cmd in walk(root, []):
        if cmd.hidden or (path and path[0] == "dev"):
            continue
        assert cmd.help and "Example:" in cmd.help, f"kache {' '.join(path)} lacks help with an example"


def test_python_dash_m_kache_runs_the_cli() -> None:
    out = subprocess.run([sys.executable, "-m", "kache", "config", "schema"], capture_output=True, text=True)
    assert out.returncode == 0 and json.loads(out.stdout)["title"] == "kache configuration"


def test_the_lazy_command_map_names_each_command_where_it_is_defined() -> None:
    """kache.command_names.LAZY_COMMANDS is what every module of kache.cli registers, no more, no less."""
    import importlib
    import pkgutil

    import kache.cli
    from kache.command_names import LAZY_COMMANDS

    defined = {}
    for info in pkgutil.iter_modules(kache.cli.__path__):
        for command in getattr(importlib.import_module(f"kache.cli.{info.name}"), "COMMANDS", []):
            defined[command.name] = info.name
    assert defined == LAZY_COMMANDS


def test_a_command_loads_only_its_own_module() -> None:
    code = ("import sys; from kache.cli import main; main(['config', 'schema']); "
            "print(sorted(m for m in sys.modules if m.startswith('kache.cli.')), file=sys.stderr)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = out.stderr.strip().splitlines()[-1]
    assert "kache.cli.config" in loaded and "kache.cli.cache" not in loaded and "kache.cli.init" not in loaded
