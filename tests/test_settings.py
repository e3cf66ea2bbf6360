from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from kache import settings as S
from kache.errors import SettingsError
from tests.support.hostile import refused


def env_with(home: Path, **extra: str) -> dict[str, str]:
    env = {"HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"), "XDG_CACHE_HOME": str(home / ".cache")}
    env.update(extra)
    return env


def test_defaults_come_from_the_schema(clean_env: Path) -> None:
    s = S.load(env_with(clean_env))
    schema = json.loads(Path(S.SCHEMA_PATH).read_text())
    cache = schema["properties"]["cache"]["properties"]
    assert s["cache.compression_level"] == cache["compression_level"]["default"]
    assert s["cache.remote.prefix"] == cache["remote"]["properties"]["prefix"]["default"]
    assert all(src.kind == "default" for src in s.sources.values())
    assert s.converted("cache.local_max_size") == 50 * 10**9
    assert s.local_store == clean_env / ".cache" / "kache"


def test_every_setting_has_type_default_description_and_env(clean_env: Path) -> None:
    table = S.settings_table()
    assert {t.key for t in table} >= {
        "cache.local_store", "cache.local_max_size", "cache.cache_executables", "cache.clean_incremental",
        "cache.compression_level", "cache.s3_concurrency", "cache.daemon_idle_timeout_secs",
        "cache.remote.type", "cache.remote.bucket", "cache.remote.endpoint", "cache.remote.region",
        "cache.remote.prefix", "cache.remote.profile",
    }
    for t in table:
        assert "type" in t.schema and "default" in t.schema and t.description, t.key
        if t.types != ["object"]:  # tables of per-crate values have no single variable
            assert t.env and t.env.startswith("KACHE_"), t.key
    envs = [t.env for t in table] + [e.name for e in S.env_settings()]
    assert len(envs) == len(set(envs)), "an environment variable is used twice"
    assert {e.name for e in S.env_settings()} == {
        "KACHE_S3_ACCESS_KEY", "KACHE_S3_SECRET_KEY", "KACHE_DISABLED", "KACHE_LOG", "KACHE_CONFIG", "KACHE_RECACHE"}


def test_layers_stack_default_system_user_env(clean_env: Path, user_config: Path, tmp_path: Path) -> None:
    system = tmp_path / "system.toml"
    system.write_text('[cache]\ncompression_level = 5\ns3_concurrency = 4\nlocal_max_size = "10GB"\n'
                      '[cache.remote]\nbucket = "from-system"\n')
    user_config.write_text("[cache]\ncompression_level = 6\ns3_concurrency = 2\n")
    env = env_with(clean_env, KACHE_CONFIG=str(system), KACHE_COMPRESSION_LEVEL="7")
    s = S.load(env)
    assert s["cache.compression_level"] == 7
    assert str(s.source("cache.compression_level")) == "env KACHE_COMPRESSION_LEVEL"
    assert s["cache.s3_concurrency"] == 2
    assert str(s.source("cache.s3_concurrency")) == f"user file {user_config}"
    assert s.converted("cache.local_max_size") == 10 * 10**9
    assert str(s.source("cache.local_max_size")) == f"system file {system}"
    assert s["cache.remote.bucket"] == "from-system"
    assert s.source("cache.remote.region") == S.Source("default")
    S.validate(s)


def test_kache_config_with_tilde_and_variables_is_expanded(clean_env: Path) -> None:
    (clean_env / "etc").mkdir()
    (clean_env / "etc" / "k.toml").write_text("[cache]\ns3_concurrency = 3\n")
    s = S.load(env_with(clean_env, KACHE_CONFIG="~/etc/k.toml"))
    assert s["cache.s3_concurrency"] == 3
    s = S.load(env_with(clean_env, KACHE_CONFIG="$HOME/etc/k.toml"))
    assert s["cache.s3_concurrency"] == 3


def test_missing_system_file_turns_caching_off_naming_the_variable(clean_env: Path) -> None:
    """Was: a warning, caching on. The file KACHE_CONFIG names may hold a salt or extra
    inputs: without it kache cannot know them, so caching is off; validate reports it."""
    problem = ("cannot read config file: /nonexistent/kache.toml: it does not exist (named by KACHE_CONFIG); "
               "point KACHE_CONFIG at an existing file or unset it")
    s = S.load(env_with(clean_env, KACHE_CONFIG="/nonexistent/kache.toml"))
    assert s.warnings == [f"caching is off: {problem}; every rustc call runs directly until it is fixed"]
    assert s.caching_off == [problem] and s["cache.compression_level"] == 3
    with pytest.raises(SettingsError) as e:
        S.validate(s)
    assert e.value.problems == [problem]


def test_missing_user_file_means_defaults(clean_env: Path) -> None:
    s = S.load(env_with(clean_env))
    assert [(f.role, f.exists) for f in s.files] == [("user", False)]


def test_invalid_toml_names_file_line_and_column_and_turns_caching_off(clean_env: Path, user_config: Path) -> None:
    """A file that does not parse may hold a salt or extra inputs: caching is off (not the
    file ignored), and the strict reader (the config editor) refuses it."""
    user_config.write_text("[cache\ncompression_level = 3\n")
    with pytest.raises(SettingsError) as e:
        S.read(env_with(clean_env), strict=True)
    assert e.value.problems[0].startswith("cannot read config file: ~/.config/kache/config.toml: invalid TOML: ")
    assert "line 1" in e.value.problems[0]
    s = S.load(env_with(clean_env))
    assert s.caching_off == e.value.problems
    assert s.warnings == [f"caching is off: {e.value.problems[0]}; every rustc call runs directly until it is fixed"]


@pytest.mark.parametrize(
    ("toml", "problem"),
    [
        ("[cache]\ncompression_level = 99\n",
         "cache.compression_level = 99: must be between 1 and 22"),
        ("[cache]\ncompression_level = 0\n",
         "cache.compression_level = 0: must be between 1 and 22"),
        ("[cache]\ncompression_level = \"high\"\n",
         'cache.compression_level = "high": expected an integer'),
        ('[cache]\nlocal_max_size = "lots"\n',
         'cache.local_max_size = "lots": expected a size such as 50GB, 512MiB or a number of bytes'),
        ("[cache]\nlocal_max_size = true\n",
         "cache.local_max_size = true: expected a size such as 50GB, 512MiB or a number of bytes"),
        ("[cache]\ncache_executables = \"yes\"\n",
         'cache.cache_executables = "yes": expected true or false'),
        ("[cache]\ns3_concurrency = 0\n",
         "cache.s3_concurrency = 0: must be between 1 and 256"),
        ("[cache]\ndaemon_idle_timeout_secs = -1\n",
         "cache.daemon_idle_timeout_secs = -1: must be at least 0"),
        ('[cache.remote]\ntype = "gcs"\n',
         'cache.remote.type = "gcs": must be one of "s3"'),
        ('[cache.remote]\nendpoint = "minio:9000"\n',
         'cache.remote.endpoint = "minio:9000": expected a URL starting with http:// or https://, without '
         'credentials in it (give them in KACHE_S3_ACCESS_KEY and KACHE_S3_SECRET_KEY or a profile)'),
        ('[cache.remote]\nendpoint = "http://AK:SECRET@minio:9000"\n',
         'cache.remote.endpoint = "http://***@minio:9000": expected a URL starting with http:// or https://, '
         'without credentials in it (give them in KACHE_S3_ACCESS_KEY and KACHE_S3_SECRET_KEY or a profile)'),
        ('[cache.remote]\nprefix = "a b"\n',
         'cache.remote.prefix = "a b": expected letters, digits and . _ / - only'),
        ('[cache.remote]\nbucket = "x"\n',
         'cache.remote.bucket = "x": must be at least 3 characters long'),
        ('[cache]\nlocal_store = "relative/dir"\n',
         'cache.local_store = "relative/dir": expected an absolute path (after ~ and $VAR expansion)'),
        ("cache = 3\n", "cache = 3: expected a table"),
    ],
)
@pytest.mark.hostile
def test_invalid_file_values_name_file_key_value_and_expectation(
    clean_env: Path, user_config: Path, toml: str, problem: str
) -> None:
    user_config.write_text(toml)
    s = S.load(env_with(clean_env))
    with refused(SettingsError) as e:
        S.validate(s)
    assert e.value.problems == [f"invalid setting in ~/.config/kache/config.toml: {problem}"]


@pytest.mark.parametrize(
    ("var", "value", "problem"),
    [
        ("KACHE_COMPRESSION_LEVEL", "abc", 'cache.compression_level = "abc": expected an integer'),
        ("KACHE_COMPRESSION_LEVEL", "23", "cache.compression_level = 23: must be between 1 and 22"),
        ("KACHE_MAX_SIZE", "big", 'cache.local_max_size = "big": expected a size such as 50GB, 512MiB or a number of bytes'),
        ("KACHE_CACHE_EXECUTABLES", "maybe", 'cache.cache_executables = "maybe": expected true or false'),
    ],
)
@pytest.mark.hostile
def test_invalid_env_values_name_the_variable(clean_env: Path, var: str, value: str, problem: str) -> None:
    s = S.load(env_with(clean_env, **{var: value}))
    with refused(SettingsError) as e:
        S.validate(s)
    assert e.value.problems == [f"invalid setting in environment variable {var}: {problem}"]


def test_invalid_env_only_flag_is_reported(clean_env: Path) -> None:
    s = S.load(env_with(clean_env, KACHE_DISABLED="perhaps"))
    with pytest.raises(SettingsError) as e:
        S.validate(s)
    assert e.value.problems == [
        'invalid setting in environment variable KACHE_DISABLED: "perhaps": expected 1/true/yes/on or 0/false/no/off']


def test_every_problem_is_reported_not_only_the_first(clean_env: Path, user_config: Path, tmp_path: Path) -> None:
    system = tmp_path / "sys.toml"
    system.write_text("[cache]\ns3_concurrency = 0\n")
    user_config.write_text('[cache]\ncompression_level = 99\nlocal_max_size = "lots"\n')
    s = S.load(env_with(clean_env, KACHE_CONFIG=str(system), KACHE_S3_CONCURRENCY="4"))
    with pytest.raises(SettingsError) as e:
        S.validate(s)
    assert e.value.problems == [
        f"invalid setting in {system}: cache.s3_concurrency = 0: must be between 1 and 256",
        "invalid setting in ~/.config/kache/config.toml: cache.local_max_size = \"lots\": "
        "expected a size such as 50GB, 512MiB or a number of bytes",
        "invalid setting in ~/.config/kache/config.toml: cache.compression_level = 99: must be between 1 and 22",
    ]


@pytest.mark.parametrize(("raw", "value"), [("1", True), ("true", True), ("YES", True), ("on", True),
                                             ("0", False), ("false", False), ("no", False), ("Off", False)])
def test_env_booleans(clean_env: Path, raw: str, value: bool) -> None:
    s = S.load(env_with(clean_env, KACHE_CACHE_EXECUTABLES=raw))
    assert s["cache.cache_executables"] is value
    assert S.env_flag("KACHE_DISABLED", {"KACHE_DISABLED": raw}) is value


def test_env_sizes_accept_bytes_and_units(clean_env: Path) -> None:
    assert S.load(env_with(clean_env, KACHE_MAX_SIZE="1048576")).converted("cache.local_max_size") == 2**20
    assert S.load(env_with(clean_env, KACHE_MAX_SIZE="512MiB")).converted("cache.local_max_size") == 512 * 2**20


@pytest.mark.parametrize("zero", ["0", "0GB", " 0 "])
def test_a_size_of_zero_written_as_text_is_valid(clean_env: Path, user_config: Path, zero: str) -> None:
    """jsonschema takes a format check's falsy result for "invalid"; 0 bytes is a size."""
    user_config.write_text(f'[cache]\nlocal_max_size = "{zero}"\n')
    s = S.load(env_with(clean_env))
    S.validate(s)
    assert s.converted("cache.local_max_size") == 0


def test_empty_env_unsets_a_nullable_setting_and_is_ignored_otherwise(clean_env: Path, user_config: Path) -> None:
    user_config.write_text('[cache]\ncompression_level = 4\n[cache.remote]\nbucket = "team-cache"\n')
    s = S.load(env_with(clean_env, KACHE_S3_BUCKET="", KACHE_COMPRESSION_LEVEL=""))
    assert s["cache.remote.bucket"] is None
    assert s.source("cache.remote.bucket") == S.Source("env", "KACHE_S3_BUCKET")
    assert s["cache.compression_level"] == 4


def test_local_store_expands_home_and_variables(clean_env: Path) -> None:
    s = S.load(env_with(clean_env, KACHE_CACHE_DIR="~/store"))
    assert s.local_store == clean_env / "store"
    s = S.load(env_with(clean_env, KACHE_CACHE_DIR="$HOME/other", ))
    assert s.local_store == clean_env / "other"


def test_xdg_dirs_are_respected_and_relative_ones_ignored(clean_env: Path) -> None:
    env = env_with(clean_env, XDG_CONFIG_HOME="/x/conf", XDG_CACHE_HOME="/x/cache")
    assert S.user_config_path(env) == Path("/x/conf/kache/config.toml")
    assert S.load(env).local_store == Path("/x/cache/kache")
    env = env_with(clean_env, XDG_CONFIG_HOME="rel", XDG_CACHE_HOME="rel")
    assert S.user_config_path(env) == clean_env / ".config" / "kache" / "config.toml"


def test_unknown_keys_warn_and_are_kept(clean_env: Path, user_config: Path) -> None:
    user_config.write_text("[cache]\nfuture_knob = 1\ncompresion_level = 3\n[cc]\nflags = []\n")
    s = S.load(env_with(clean_env))
    S.validate(s)  # unknown keys far from a guarded setting are not errors
    where = "~/.config/kache/config.toml"
    assert s.warnings == [
        f"unknown key `future_knob` in {where} (cache.future_knob) (ignored; `kache config schema` lists the known keys)",
        f"unknown key `compresion_level` in {where} (cache.compresion_level), did you mean `compression_level`?",
        f"unknown key `cc` in {where} (ignored; `kache config schema` lists the known keys)",
    ]
    assert s.extras["cache.future_knob"][0] == 1 and not s.caching_off and not s.remote_off


def test_validate_file_checks_one_file_alone(tmp_path: Path, clean_env: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text("[cache]\ncompression_level = 99\n")
    with pytest.raises(SettingsError) as e:
        S.validate_file(f, env_with(clean_env))
    assert e.value.problems == [f"invalid setting in {f}: cache.compression_level = 99: must be between 1 and 22"]
    f.write_text("[cache]\ncompression_level = 9\ncolour = 1\n")
    assert S.validate_file(f, env_with(clean_env)) == [
        f"unknown key `colour` in {f} (cache.colour) (ignored; `kache config schema` lists the known keys)"]


def test_load_checked_reads_once_per_identity_and_remembers_the_warnings(
        clean_env: Path, user_config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Was: an invalid value raised. Now the memo keeps the degraded values and the
    warnings, so a memo hit warns too."""
    calls = []
    real = S.load
    monkeypatch.setattr(S, "load", lambda env=None, **kw: (calls.append(1), real(env, **kw))[1])
    user_config.write_text("[cache]\ncompression_level = 4\n")
    env = env_with(clean_env)
    S.load_checked(env)
    S.load_checked(env)
    assert len(calls) == 1
    S.load_checked({**env, "KACHE_S3_CONCURRENCY": "3"})
    assert len(calls) == 2
    user_config.write_text("[cache]\ncompression_level = 99\n[cache.remote]\nbucket = \"b-c\"\nread_only = 2\n")
    os.utime(user_config, ns=(1, 1))  # a new identity even within the mtime granularity
    first = S.load_checked(env)
    again = S.load_checked(env)
    assert len(calls) == 3
    for s in (first, again):
        assert s["cache.compression_level"] == 3
        assert s["cache.remote.bucket"] is None
        assert s.warnings == [
            "invalid setting in ~/.config/kache/config.toml: cache.compression_level = 99: must be between 1 "
            "and 22; using 3 (the default)",
            "the remote is off: invalid setting in ~/.config/kache/config.toml: cache.remote.read_only = 2: "
            "expected true or false; local caching goes on"]
        assert s.remote_off and not s.caching_off


def test_credentials_in_a_url_are_never_shown() -> None:
    assert S.display("http://AKID:SECRET@minio:9000/x") == "http://***@minio:9000/x"
    assert S.mask_url_credentials('"https://u@h" and http://plain/a@b') == '"https://***@h" and http://plain/a@b'
