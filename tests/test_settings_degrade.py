"""Settings degrade per setting: an invalid value falls to the next lower layer's valid
one (env > user file > system file > default), with one warning naming where, what,
what was expected and what is used; where the schema's ``x-if-invalid`` says so, it
turns caching or the remote off instead."""

from __future__ import annotations

from pathlib import Path

import pytest

from kache import settings as S


def env_with(home: Path, **extra: str) -> dict[str, str]:
    env = {"HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"), "XDG_CACHE_HOME": str(home / ".cache")}
    env.update(extra)
    return env


def test_an_invalid_variable_falls_back_to_the_default(clean_env: Path) -> None:
    s = S.load(env_with(clean_env, KACHE_COMPRESSION_LEVEL="99"))
    assert s["cache.compression_level"] == 3
    assert s.source("cache.compression_level") == S.Source("default")
    assert s.warnings == ["invalid setting in environment variable KACHE_COMPRESSION_LEVEL: "
                          "cache.compression_level = 99: must be between 1 and 22; using 3 (the default)"]
    assert s.caching_off == [] and s.remote_off == []
    assert s.rejected["cache.compression_level"] == [
        (99, S.Source("env", "KACHE_COMPRESSION_LEVEL"), "must be between 1 and 22", "ignored")]


def test_an_invalid_variable_falls_back_to_the_user_file_then_the_system_file(
        clean_env: Path, user_config: Path, tmp_path: Path) -> None:
    system = tmp_path / "system.toml"
    system.write_text('[cache]\nlocal_max_size = "20GB"\nincremental = "keep"\n')
    user_config.write_text('[cache]\nlocal_max_size = "lots"\nincremental = "drop"\n')
    s = S.load(env_with(clean_env, KACHE_CONFIG=str(system), KACHE_MAX_SIZE="huge", KACHE_INCREMENTAL="never"))
    assert s["cache.local_max_size"] == "20GB"
    assert s.source("cache.local_max_size") == S.Source("system", str(system))
    assert s["cache.incremental"] == "drop"
    assert s.source("cache.incremental") == S.Source("user", str(user_config))
    expected = "expected a size such as 50GB, 512MiB or a number of bytes"
    assert s.warnings == [
        f'invalid setting in ~/.config/kache/config.toml: cache.local_max_size = "lots": {expected}; '
        f'using "20GB" (from {system})',
        f'invalid setting in environment variable KACHE_MAX_SIZE: cache.local_max_size = "huge": {expected}; '
        f'using "20GB" (from {system})',
        'invalid setting in environment variable KACHE_INCREMENTAL: cache.incremental = "never": must be one of '
        '"auto", "keep", "drop"; using "drop" (from ~/.config/kache/config.toml)',
    ]
    assert s.caching_off == []


def test_an_invalid_value_hidden_by_a_higher_layer_still_warns(clean_env: Path, user_config: Path) -> None:
    user_config.write_text("[cache]\ns3_concurrency = 0\n")
    s = S.load(env_with(clean_env, KACHE_S3_CONCURRENCY="4"))
    assert s["cache.s3_concurrency"] == 4
    assert s.warnings == ["invalid setting in ~/.config/kache/config.toml: cache.s3_concurrency = 0: must be "
                          "between 1 and 256; using 4 (from environment variable KACHE_S3_CONCURRENCY)"]


@pytest.mark.parametrize(("env", "toml", "problem"), [
    ({"KACHE_CACHE_DIR": "relative/store"}, "",
     'invalid setting in environment variable KACHE_CACHE_DIR: cache.local_store = "relative/store": '
     "expected an absolute path (after ~ and $VAR expansion)"),
    ({"KACHE_KEY_SALT": "s" * 300}, "",
     f'invalid setting in environment variable KACHE_KEY_SALT: cache.key_salt = "{"s" * 199}… (302 characters): '
     "must be at most 256 characters long"),
    ({}, '[cache.extra_inputs.app]\nenv = ["NOT A NAME"]\n',
     'invalid setting in ~/.config/kache/config.toml: cache.extra_inputs = {"app": {"env": ["NOT A NAME"]}}: '
     "must match the pattern ^[A-Za-z_][A-Za-z0-9_]*$"),
    ({}, "cache = 3\n", "invalid setting in ~/.config/kache/config.toml: cache = 3: expected a table"),
])
def test_an_unsafe_setting_turns_caching_off(clean_env: Path, user_config: Path, env: dict[str, str], toml: str,
                                             problem: str) -> None:
    user_config.write_text(toml)
    s = S.load(env_with(clean_env, **env))
    assert s.caching_off == [problem]
    assert s.warnings == [f"caching is off: {problem}; every rustc call runs directly until it is fixed"]


def test_an_unsafe_setting_below_a_valid_one_only_warns(clean_env: Path, user_config: Path) -> None:
    """A user file's valid salt is the salt whatever the system file says: nothing falls back."""
    user_config.write_text('[cache]\nkey_salt = "team"\n')
    s = S.load(env_with(clean_env, KACHE_KEY_SALT="x" * 300))
    assert s.caching_off and s["cache.key_salt"] == "team"  # the variable is above it: caching off
    user_config.write_text('[cache]\nkey_salt = "' + "x" * 300 + '"\n')
    s = S.load(env_with(clean_env, KACHE_KEY_SALT="team"))
    assert s.caching_off == [] and s["cache.key_salt"] == "team"
    assert s.warnings[0].endswith('; using "team" (from environment variable KACHE_KEY_SALT)')


@pytest.mark.parametrize(("env", "toml"), [
    ({"KACHE_REMOTE_READ_ONLY": "perhaps"}, '[cache.remote]\nbucket = "team-cache"\n'),
    ({"KACHE_S3_ENDPOINT": "minio:9000"}, '[cache.remote]\nbucket = "team-cache"\n'),
    ({}, '[cache.remote]\nbucket = "team-cache"\nprefix = "a b"\n'),
    ({}, '[cache]\nremote = "s3://team-cache"\n'),
])
def test_an_invalid_remote_setting_turns_the_remote_off_and_caching_stays_on(
        clean_env: Path, user_config: Path, env: dict[str, str], toml: str) -> None:
    user_config.write_text(toml)
    s = S.load(env_with(clean_env, **env))
    assert s["cache.remote.bucket"] is None  # no remote, everywhere the bucket is read
    assert s.caching_off == [] and len(s.remote_off) == 1
    assert s.warnings == [f"the remote is off: {s.remote_off[0]}; local caching goes on"]


def test_an_invalid_env_only_flag_is_off_with_a_warning(clean_env: Path) -> None:
    s = S.load(env_with(clean_env, KACHE_RECACHE="perhaps"))
    assert s.warnings == ["invalid setting in environment variable KACHE_RECACHE: 'perhaps': expected "
                          "1/true/yes/on or 0/false/no/off; using false (the default)"]


def test_the_annotation_is_in_the_schema_not_in_code() -> None:
    schema = S.load_schema()
    cache = schema["properties"]["cache"]["properties"]
    assert {k for k, v in cache.items() if v.get("x-if-invalid") == "no-cache"} == {
        "local_store", "key_salt", "extra_inputs"}
    assert cache["remote"]["x-if-invalid"] == "no-remote"
    policy = S.if_invalid()
    assert policy["cache.remote.read_only"] == "no-remote" and policy["cache.compression_level"] == ""
    assert policy["cache"] == "no-cache" and policy["cache.remote"] == "no-remote"


def test_kache_log_default_agrees_with_the_schema() -> None:
    from kache import loglevel

    assert loglevel.level(S.load_schema()["x-environment"]["KACHE_LOG"]["default"]) == loglevel.DEFAULT
    assert loglevel.level("hyper=debug,kache=debug") == loglevel.DEBUG
    assert loglevel.level("warn") == loglevel.WARNING
    assert loglevel.level("nonsense") == loglevel.DEFAULT
