"""Settings degrade per setting: an invalid value falls to the next lower layer's valid
one (env > user file > system file > default), with one warning naming where, what,
what was expected and what is used; where the schema's ``x-if-invalid`` says so, it
turns caching or the remote off instead."""

from __future__ import annotations

from pathlib import Path

import pytest

from kache import settings as S
from kache.errors import SettingsError


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
     f'invalid setting in environment variable KACHE_KEY_SALT: cache.key_salt = "{"s" * 199}… (300 characters): '
     "must be at most 256 characters long"),
    ({}, '[cache.extra_inputs.app]\nenv = ["NOT A NAME"]\n',
     'invalid setting in ~/.config/kache/config.toml: cache.extra_inputs = {"app": {"env": ["NOT A NAME"]}}: '
     "cache.extra_inputs.app.env[0]: must match the pattern ^[A-Za-z_][A-Za-z0-9_]*$"),
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


def test_an_invalid_env_only_flag_is_on_with_a_warning(clean_env: Path) -> None:
    """Was: off. KACHE_RECACHE=y must not keep the very entry it exists to replace."""
    s = S.load(env_with(clean_env, KACHE_RECACHE="perhaps"))
    assert s.warnings == ['invalid setting in environment variable KACHE_RECACHE: "perhaps": expected '
                          "1/true/yes/on or 0/false/no/off; taken as set (true), as any value but 0/false/no/off"]


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


# --------------------------------------------------------------------------- review of issue 25:
# when kache cannot know what a setting guarding correctness or the bucket meant, it does
# not guess the permissive way.

WHERE = "~/.config/kache/config.toml"


@pytest.mark.parametrize(("toml", "key", "near"), [
    ('[cache.extra_input.util]\nenv = ["PM_ENV"]\n', "cache.extra_input", "cache.extra_inputs"),
    ('[cache]\nkey-salt = "teamB"\n', "cache.key-salt", "cache.key_salt"),
    ('key-salt = "teamB"\n', "key-salt", "cache.key_salt"),
    ('[cache]\nKey_Salt = "teamB"\n', "cache.Key_Salt", "cache.key_salt"),
    ('[cache]\nlocal-store = "/elsewhere"\n', "cache.local-store", "cache.local_store"),
])
def test_an_unknown_key_near_a_guarded_setting_turns_caching_off(clean_env: Path, user_config: Path, toml: str,
                                                                  key: str, near: str) -> None:
    """Was: an "unknown key" warning, caching on without the salt or the inputs (stale artifacts)."""
    user_config.write_text(toml)
    s = S.load(env_with(clean_env))
    problem = f"unknown key `{key}` in {WHERE}, did you mean `{near}`? caching is off until it is fixed"
    assert s.caching_off == [problem]
    assert s.warnings == [f"{problem} (every rustc call runs directly)"]
    with pytest.raises(SettingsError) as e:
        S.validate(s)
    assert e.value.problems == [problem]


@pytest.mark.parametrize(("toml", "key", "near"), [
    ("[cache.remote]\nread-only = true\n", "cache.remote.read-only", "cache.remote.read_only"),
    ("[cache.remote]\nreadonly = true\n", "cache.remote.readonly", "cache.remote.read_only"),
    ('[cache.remote]\nendpiont = "https://s3.example.com"\n', "cache.remote.endpiont", "cache.remote.endpoint"),
    ("[remote]\nread_only = true\n", "remote", "cache.remote"),
    ("[cache]\nread_only = true\n", "cache.read_only", "cache.remote.read_only"),
])
def test_an_unknown_key_near_a_remote_setting_turns_the_remote_off(clean_env: Path, user_config: Path, toml: str,
                                                                    key: str, near: str) -> None:
    """Was: the remote on and writable, against a read-only intent."""
    user_config.write_text(toml)
    s = S.load(env_with(clean_env, KACHE_S3_BUCKET="team-cache"))
    problem = f"unknown key `{key}` in {WHERE}, did you mean `{near}`? the remote is off until it is fixed"
    assert s.remote_off == [problem] and s.caching_off == []
    assert s["cache.remote.bucket"] is None
    assert s.warnings == [f"{problem} (local caching goes on)"]


def test_any_unknown_key_under_the_remote_turns_it_off(clean_env: Path, user_config: Path) -> None:
    user_config.write_text('[cache.remote]\nbucket = "team-cache"\nzzzzzz = 1\n')
    s = S.load(env_with(clean_env))
    assert s.remote_off == [f"unknown key `cache.remote.zzzzzz` in {WHERE} (not a cache.remote setting): "
                            "the remote is off until it is fixed"]
    assert s["cache.remote.bucket"] is None


@pytest.mark.parametrize(("toml", "key", "kind"), [
    # misspellings whose nearest known key is not a guarded one: the words of the key, or
    # of the keys inside an unknown table, say what it was meant for
    ('[cache.extra.util]\nenv = ["PM_ENV"]\n', "cache.extra", "no-cache"),
    ('[cache.untracked.util]\nfiles = ["data.txt"]\n', "cache.untracked", "no-cache"),
    ('[ci.cache.extra_inputs.util]\nenv = ["X"]\n', "ci", "no-cache"),
    ('[cache]\nsalt_key = "teamB"\n', "cache.salt_key", "no-cache"),
    ("[s3]\nread_only = true\n", "s3", "no-remote"),
    ("[cache.s3]\nread_only = true\n", "cache.s3", "no-remote"),
    ("[cache]\npull_only = true\n", "cache.pull_only", "no-remote"),
    ("[cache]\nupload = false\n", "cache.upload", "no-remote"),
    ("[cache]\npush = false\n", "cache.push", "no-remote"),
    # third review: synonyms, camelCase, lists of tables, quoted dotted keys, the variable's name
    ("[cache]\nro = true\n", "cache.ro", "no-remote"),
    ("[cache]\nallowUploads = false\n", "cache.allowUploads", "no-remote"),
    ("[cache]\npublish = false\n", "cache.publish", "no-remote"),
    ('[cache]\nurl = "http://minio:9000"\n', "cache.url", "no-remote"),
    ('["cache.ci"]\nread_only = true\n', "cache.ci", "no-remote"),
    ('[[cache.crates]]\nname = "app"\nenv = ["FOO"]\n', "cache.crates", "no-cache"),
    ('[cache]\ncacheKeySalt = "teamB"\n', "cache.cacheKeySalt", "no-cache"),
    ('[cache]\nnamespace = "teamB"\n', "cache.namespace", "no-cache"),
    ('[cache]\nextraEnv = ["X"]\n', "cache.extraEnv", "no-cache"),
    ('[cache]\ncache_dir = "/data/kache"\n', "cache.cache_dir", "no-cache"),
    ('[cache]\nksalt = "teamB"\n', "cache.ksalt", "no-cache"),
    ('[build]\nextra_inputs = ["data.txt"]\n', "build", "no-cache"),  # a known key in the wrong table
    # review of the [ui] change: a table of its own still says what its keys are for
    ('[team]\nsalt = "teamB"\n', "team", "no-cache"),
    ('[ui]\ninput_mode = "vim"\nsalt = "x"\n', "ui", "no-cache"),
    ('[ui]\ninput_mode = "vim"\nextra = { app = { env = ["FOO"] } }\n', "ui", "no-cache"),
    ('[local]\nstore = "/tmp/x"\n', "local", "no-cache"),
    ('[team]\nid = "b"\nstore = "/tmp/x"\n', "team", "no-cache"),
    ("[team]\nread_only = true\n", "team", "no-remote"),
    # second review: an extra_inputs entry without its table (lists under env, files)
    ('[my_macros]\nenv = ["DATABASE_URL"]\nfiles = ["schema.sql"]\n', "my_macros", "no-cache"),
    ('[[crates]]\nname = "my_macros"\nenv = ["DATABASE_URL"]\n', "crates", "no-cache"),
])
def test_words_of_a_guarded_setting_turn_it_off(clean_env: Path, user_config: Path, toml: str, key: str,
                                                kind: str) -> None:
    """Was (second review): only a warning, the inputs not keyed or the remote writable."""
    user_config.write_text(toml)
    s = S.load(env_with(clean_env, KACHE_S3_BUCKET="team-cache"))
    off = s.caching_off if kind == "no-cache" else s.remote_off
    assert len(off) == 1 and off[0].startswith(f"unknown key `{key}` in {WHERE}")
    assert off[0].endswith(("caching is off until it is fixed" if kind == "no-cache"
                            else "the remote is off until it is fixed"))


@pytest.mark.parametrize("toml", ['[ui]\ninput_mode = "vim"\n', '[monitor]\nrefresh_secs = 2\nfiles = "all"\n',
                                  '[editor.keys]\nenvironment = "dark"\n'])
def test_a_table_of_another_programs_keys_is_only_warned_about(clean_env: Path, user_config: Path, toml: str) -> None:
    """Was (review of issue 25): `[ui] input_mode` turned caching off, for the word
    "input". A table kache does not know whose keys name nothing of kache's is a warning."""
    user_config.write_text(toml)
    s = S.load(env_with(clean_env, KACHE_S3_BUCKET="team-cache"))
    table = toml[1:toml.index("]")].split(".")[0]
    assert s.caching_off == [] and s.remote_off == []
    assert [w for w in s.warnings if "unknown key" in w] == [S.unknown_key_warning(table, WHERE)]
    assert s["cache.remote.bucket"] == "team-cache"


@pytest.mark.parametrize(("name", "near", "kind"), [
    ("KACHE_REMOTE_READONLY", "KACHE_REMOTE_READ_ONLY", "no-remote"),
    ("KACHE_READ_ONLY", "KACHE_REMOTE_READ_ONLY", "no-remote"),
    ("KACHE_S3_PREFX", "KACHE_S3_PREFIX", "no-remote"),
    ("KACHE_KEYSALT", "KACHE_KEY_SALT", "no-cache"),
    ("KACHE_SALT", None, "no-cache"),
    ("KACHE_RDONLY", "KACHE_REMOTE_READ_ONLY", "no-remote"),
    ("KACHE_NO_PUBLISH", None, "no-remote"),
    ("KACHE_DISABLE", "KACHE_DISABLED", "no-cache"),
    ("KACHE_CONFG", "KACHE_CONFIG", "no-cache"),
    # fourth review: a guarded setting's own name as a variable, a namespace as a salt
    ("KACHE_LOCAL_STORE", "KACHE_CACHE_DIR", "no-cache"),
    ("KACHE_NAMESPACE", None, "no-cache"),
    ("KACHE_PULL_ONLY", None, "no-remote"),  # a fork's build: never upload
    ("KACHE_NO_PUSH", None, "no-remote"),
    ("KACHE_WRITE", None, "no-remote"),
])
def test_a_misspelt_guarded_variable_turns_it_off(clean_env: Path, name: str, near: str | None, kind: str) -> None:
    """Was (second review): ignored without a word, uploads against KACHE_REMOTE_READONLY=1."""
    s = S.load(env_with(clean_env, KACHE_S3_BUCKET="team-cache", **{name: "1"}))
    hint = f", did you mean `{near}`?" if near else ":"
    effect = "caching is off" if kind == "no-cache" else "the remote is off"
    problem = f"unknown environment variable {name}{hint} {effect} until it is fixed or unset"
    assert (s.caching_off if kind == "no-cache" else s.remote_off) == [problem]
    if kind == "no-remote":
        assert s["cache.remote.bucket"] is None and s.caching_off == []


def test_a_variable_named_after_a_setting_without_one_names_the_key(clean_env: Path) -> None:
    """Was (fourth review): KACHE_EXTRA_INPUTS ignored without a word, the inputs unkeyed."""
    s = S.load(env_with(clean_env, KACHE_EXTRA_INPUTS="data.txt"))
    assert s.caching_off == ["unknown environment variable KACHE_EXTRA_INPUTS, did you mean `cache.extra_inputs` "
                             "(a config file's, it has no variable)? caching is off until it is fixed or unset"]


def test_other_kache_variables_and_plain_unknown_keys_change_nothing(clean_env: Path, user_config: Path) -> None:
    # a test harness's own variables, and keys with no guarded word far from every
    # guarded key, are not misspelt settings (no nonsense "did you mean" either)
    user_config.write_text('[cache]\nnote = "team cache"\nversion = 2\nlocale = "C"\n[tooling]\nname = "x"\n')
    s = S.load(env_with(clean_env, KACHE_S3_BUCKET="team-cache", KACHE_TEST_FAULTS="x", KACHE_DIFF_SEED="1",
                        KACHE_BENCH_DIR="/b", KACHE_ENV="ci", KACHE_READ_TIMEOUT="5"))
    assert s.caching_off == [] and s.remote_off == [] and s["cache.remote.bucket"] == "team-cache"
    assert all("did you mean" not in w for w in s.warnings), s.warnings
    assert len(s.warnings) == 4
    # as near an unguarded key as a guarded word: a misspelt unguarded key, only a warning
    user_config.write_text("[cache]\nstore_executables = true\ns3_concurency = 16\n")
    s = S.load(env_with(clean_env, KACHE_S3_BUCKET="team-cache", KACHE_S3_CONCURENCY="4"))
    assert s.caching_off == [] and s.remote_off == []
    assert [w.rpartition("did you mean ")[2] for w in s.warnings] == ["`cache_executables`?", "`s3_concurrency`?"]


def test_an_unknown_key_far_from_guarded_settings_is_only_a_warning(clean_env: Path, user_config: Path) -> None:
    user_config.write_text('[cache]\nfoo = 1\nlocal_max = "1GB"\n')
    s = S.load(env_with(clean_env))
    assert s.caching_off == [] and s.remote_off == []
    assert s.warnings == [
        f"unknown key `foo` in {WHERE} (cache.foo) (ignored; `kache config schema` lists the known keys)",
        f"unknown key `local_max` in {WHERE} (cache.local_max), did you mean `local_max_size`?"]
    S.validate(s)


def test_validate_file_fails_for_an_unknown_key_that_turns_caching_off(clean_env: Path, tmp_path: Path) -> None:
    f = tmp_path / "team.toml"
    f.write_text('[cache]\nkey-salt = "teamB"\n')
    with pytest.raises(SettingsError) as e:
        S.validate_file(f, env_with(clean_env))
    assert e.value.problems == [f"unknown key `cache.key-salt` in {f}, did you mean `cache.key_salt`? caching is "
                                "off until it is fixed"]


@pytest.mark.parametrize("value", ["rel/kache.toml", "./kache.toml", "$NOPE_UNSET/kache.toml"])
def test_a_relative_kache_config_turns_caching_off(clean_env: Path, value: str) -> None:
    """Was: read against rustc's working directory, which differs between crates of one build."""
    s = S.load(env_with(clean_env, KACHE_CONFIG=value))
    problem = (f'invalid setting in environment variable KACHE_CONFIG: "{value}": expected an absolute path '
               "(after ~ and $VAR expansion; rustc runs in more than one directory); give the full path or unset "
               "KACHE_CONFIG")
    assert s.caching_off == [problem]
    assert s.warnings == [f"caching is off: {problem}; every rustc call runs directly until it is fixed"]
    assert s.store_problem == problem


def test_a_kache_config_naming_a_directory_turns_caching_off(clean_env: Path, tmp_path: Path) -> None:
    s = S.load(env_with(clean_env, KACHE_CONFIG=str(tmp_path)))
    assert s.caching_off == [f"cannot read config file: {tmp_path}: Is a directory (named by KACHE_CONFIG); fix it, "
                             "point KACHE_CONFIG at a readable file or unset it"]


def test_extra_inputs_of_every_layer_are_merged(clean_env: Path, user_config: Path, tmp_path: Path) -> None:
    """Was: the user file's table replaced the system file's (the admin's inputs lost)."""
    system = tmp_path / "system.toml"
    system.write_text('[cache.extra_inputs.util]\nenv = ["A", "B"]\nfiles = ["g.txt"]\n'
                      '[cache.extra_inputs."*"]\nenv = ["ALL"]\n')
    user_config.write_text('[cache.extra_inputs.util]\nenv = ["B", "C"]\n[cache.extra_inputs.app]\nfiles = ["f"]\n')
    s = S.load(env_with(clean_env, KACHE_CONFIG=str(system)))
    assert s["cache.extra_inputs"] == {"util": {"env": ["A", "B", "C"], "files": ["g.txt"]}, "*": {"env": ["ALL"]},
                                       "app": {"files": ["f"]}}
    assert s.merged["cache.extra_inputs"] == [S.Source("system", str(system)), S.Source("user", str(user_config))]
    assert s.warnings == [] and s.caching_off == []


def test_an_invalid_lower_layer_of_a_merged_setting_turns_caching_off(clean_env: Path, user_config: Path,
                                                                      tmp_path: Path) -> None:
    system = tmp_path / "system.toml"
    system.write_text('[cache.extra_inputs.util]\nenv = ["NOT A NAME"]\n')
    user_config.write_text('[cache.extra_inputs.util]\nenv = ["B"]\n')
    s = S.load(env_with(clean_env, KACHE_CONFIG=str(system)))
    assert len(s.caching_off) == 1 and str(system) in s.caching_off[0]


@pytest.mark.parametrize(("value", "on"), [("y", True), ("perhaps", True), ("1", True), ("TRUE", True),
                                           ("0", False), ("off", False), (" No ", False), ("", False)])
def test_an_env_only_flag_is_set_unless_it_says_no(value: str, on: bool) -> None:
    """Was: KACHE_RECACHE=y read as false, keeping the stale entry it exists to replace."""
    from kache.engine.decide import is_disabled

    assert S.env_flag("KACHE_RECACHE", {"KACHE_RECACHE": value}) is on
    assert is_disabled({"KACHE_DISABLED": value}) is on
    said = S.env_flag_problem("KACHE_RECACHE", {"KACHE_RECACHE": value})
    assert (said is not None) == (value in ("y", "perhaps"))


def test_an_invalid_store_is_refused_not_replaced_by_the_default(clean_env: Path) -> None:
    s = S.load(env_with(clean_env, KACHE_CACHE_DIR="rel/dir"))
    with pytest.raises(SettingsError) as e:
        s.local_store  # noqa: B018 - the property is what commands use
    assert e.value.problems == ['invalid setting in environment variable KACHE_CACHE_DIR: cache.local_store = '
                                '"rel/dir": expected an absolute path (after ~ and $VAR expansion): fix it or unset it']
    memo = S.load_checked(env_with(clean_env, KACHE_CACHE_DIR="rel/dir"))
    again = S.load_checked(env_with(clean_env, KACHE_CACHE_DIR="rel/dir"))  # from the memo
    assert memo.store_problem == again.store_problem == e.value.problems[0]


def test_a_shortened_value_states_its_own_length(clean_env: Path) -> None:
    s = S.load(env_with(clean_env, KACHE_KEY_SALT="s" * 300))
    assert "… (300 characters)" in s.caching_off[0]


def test_a_string_where_a_list_is_wanted_says_so(clean_env: Path, user_config: Path) -> None:
    user_config.write_text('[cache.extra_inputs.util]\nfiles = "pm_data.txt"\n')
    s = S.load(env_with(clean_env))
    assert s.caching_off == [f'invalid setting in {WHERE}: cache.extra_inputs = {{"util": {{"files": "pm_data.txt"}}}}: '
                             'cache.extra_inputs.util.files: expected a list of strings, e.g. ["schema.sql"]']
