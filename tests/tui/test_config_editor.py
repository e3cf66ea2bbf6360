"""The config editor (kache.tui.config), driven by textual's pilot."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from textual.widgets import Input, Label, Switch, TextArea

from kache import settings as settings_mod
from kache.cli import main
from kache.tui.config.app import ConfigApp, field_of
from kache.tui.config.fields import BoolField, EnumField, JsonField, NumberField, TextField, UnitField

Run = Callable[..., None]

USER_FILE = """\
# kache settings of the team (keep this comment)
[cache]
compression_level = 5  # agreed in review
future_knob = "kept"

[tooling]
owner = "infra"
"""


def _badge(app: ConfigApp, key: str) -> str:
    return str(field_of(app, key).query_one(".field-source", Label).render())


async def _type_into(pilot: Any, app: ConfigApp, key: str, text: str) -> None:
    """Focus a field's input, put all but the last character of ``text`` in it and type
    the last one (as a person would; typing every key costs ~0.1 s under the pilot)."""
    control = field_of(app, key).query_one(Input)
    control.focus()
    await pilot.pause()
    control.value = text[:-1]
    control.cursor_position = len(control.value)
    await pilot.press(text[-1])
    await pilot.pause()


def _status(app: ConfigApp) -> str:
    return str(app.query_one("#status").render())


def test_a_change_is_saved_keeping_comments_order_and_unknown_keys(
        user_config: Path, run: Run, capsys: pytest.CaptureFixture[str]) -> None:
    user_config.write_text(USER_FILE)
    app = ConfigApp()

    async def body(pilot: Any) -> None:
        assert _badge(app, "cache.compression_level") == "user file"
        await _type_into(pilot, app, "cache.compression_level", "9")
        assert field_of(app, "cache.compression_level").problem == ""
        assert _badge(app, "cache.compression_level") == "edited"
        assert _status(app).startswith("1 unsaved change: ctrl+s saves them to ~/.config/kache/config.toml")
        await pilot.press("ctrl+s")
        assert _status(app) == "saved ~/.config/kache/config.toml: cache.compression_level"
        assert _badge(app, "cache.compression_level") == "user file"

    run(app, body)
    assert user_config.read_text() == USER_FILE.replace("compression_level = 5", "compression_level = 9")
    capsys.readouterr()
    assert main(["config", "validate", str(user_config)]) == 0
    assert capsys.readouterr().out == f"ok: {user_config} is valid, with 2 warnings\n"


def test_an_invalid_value_shows_the_schemas_message_and_is_not_saved(user_config: Path, run: Run) -> None:
    user_config.write_text(USER_FILE)
    app = ConfigApp()

    async def body(pilot: Any) -> None:
        await _type_into(pilot, app, "cache.compression_level", "99")
        field = field_of(app, "cache.compression_level")
        assert field.problem == ("invalid setting in ~/.config/kache/config.toml: "
                                 "cache.compression_level = 99: must be between 1 and 22")
        assert field.has_class("-invalid")
        assert _status(app) == "1 invalid value: fix it or press ctrl+r to reset, then save"
        await pilot.press("ctrl+s")
        assert _status(app).startswith("cannot save: invalid setting in ~/.config/kache/config.toml: "
                                       "cache.compression_level = 99: must be between 1 and 22")
        await _type_into(pilot, app, "cache.local_max_size", "lots")
        assert field_of(app, "cache.local_max_size").problem.endswith(
            'cache.local_max_size = "lots": expected a size such as 50GB, 512MiB or a number of bytes')
        await _type_into(pilot, app, "cache.local_max_size", "20GB")
        assert field_of(app, "cache.local_max_size").problem == ""
        assert field_of(app, "cache.local_max_size").note == "= 18.6 GiB"

    run(app, body)
    assert user_config.read_text() == USER_FILE


def test_a_value_from_the_environment_is_shown_as_env(user_config: Path, run: Run,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    user_config.write_text(USER_FILE)
    monkeypatch.setenv("KACHE_COMPRESSION_LEVEL", "7")
    app = ConfigApp()

    async def body(pilot: Any) -> None:
        field = field_of(app, "cache.compression_level")
        assert field.query_one(Input).value == "7"
        assert _badge(app, "cache.compression_level") == "env"
        assert field.note == ("KACHE_COMPRESSION_LEVEL is set and wins over the files: an edit is saved "
                              "to ~/.config/kache/config.toml but takes effect only once "
                              "KACHE_COMPRESSION_LEVEL is unset (files say: 5)")
        await _type_into(pilot, app, "cache.compression_level", "11")
        assert _badge(app, "cache.compression_level") == "env"  # the variable still wins
        await pilot.press("ctrl+s")
        status = _status(app)
        assert "still overridden by KACHE_COMPRESSION_LEVEL (cache.compression_level) while set" in status

    run(app, body)
    assert "compression_level = 11  # agreed in review" in user_config.read_text()


def test_a_system_file_value_is_read_only_and_a_change_is_a_user_override(
        tmp_path: Path, user_config: Path, run: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    system = tmp_path / "nix-store" / "kache.toml"
    system.parent.mkdir()
    system.write_text('[cache.remote]\nbucket = "team-cache"\nregion = "eu-west-1"\n')
    system.chmod(0o444)
    monkeypatch.setenv("KACHE_CONFIG", str(system))
    app = ConfigApp()

    async def body(pilot: Any) -> None:
        field = field_of(app, "cache.remote.bucket")
        assert field.query_one(Input).value == "team-cache"
        assert _badge(app, "cache.remote.bucket") == "system file"
        assert field.note == (f"from the read-only system file {system}; a change is saved to "
                              "~/.config/kache/config.toml as an override")
        assert "system file" in str(app.query_one("#files").render())
        await _type_into(pilot, app, "cache.remote.bucket", "my-own-cache")
        assert field.note == "saved to ~/.config/kache/config.toml, this overrides the read-only system file"
        await pilot.press("ctrl+s")
        assert _status(app) == ("saved ~/.config/kache/config.toml: cache.remote.bucket; "
                                "overrides of the system file: cache.remote.bucket")
        assert _badge(app, "cache.remote.bucket") == "user file"
        assert _badge(app, "cache.remote.region") == "system file"

    run(app, body)
    assert system.read_text() == '[cache.remote]\nbucket = "team-cache"\nregion = "eu-west-1"\n'
    assert user_config.read_text() == "[cache.remote]\nbucket = \"my-own-cache\"\n"
    s = settings_mod.load()
    assert s.values["cache.remote.bucket"] == "my-own-cache"
    assert s.sources["cache.remote.bucket"].kind == "user"


def test_reset_removes_the_key_from_the_user_file(user_config: Path, run: Run) -> None:
    user_config.write_text(USER_FILE)
    app = ConfigApp()

    async def body(pilot: Any) -> None:
        field = field_of(app, "cache.compression_level")
        field.query_one(Input).focus()
        await pilot.press("ctrl+r")
        assert field.query_one(Input).value == "3"
        assert _badge(app, "cache.compression_level") == "default"
        assert field.note == "removed from your file on save; then the default value applies: 3"
        await pilot.press("ctrl+s")

    run(app, body)
    text = user_config.read_text()
    assert "compression_level" not in text
    assert "# kache settings of the team (keep this comment)" in text and 'future_knob = "kept"' in text


def test_switches_selects_and_tables_save_as_toml(user_config: Path, run: Run,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    app = ConfigApp()
    inputs = {"my_macros": {"env": ["DATABASE_URL"], "files": ["schema.sql"]}}

    async def body(pilot: Any) -> None:
        assert isinstance(field_of(app, "cache.cache_executables"), BoolField)
        switch = field_of(app, "cache.cache_executables").query_one(Switch)
        switch.focus()
        await pilot.press("enter")
        assert str(field_of(app, "cache.cache_executables").query_one(".bool-text", Label).render()) == "true"
        extra = field_of(app, "cache.extra_inputs")
        area = extra.query_one(TextArea)
        area.text = '{"my_macros": {"env": ["DATABASE_URL"], "files": ['
        await pilot.pause()
        assert extra.problem.startswith("not JSON yet:")
        area.text = '{"my_macros": {"env": ["not a name!"]}}'
        await pilot.pause()
        assert extra.problem == ('invalid setting in ~/.config/kache/config.toml: cache.extra_inputs = '
                                 '{"my_macros": {"env": ["not a name!"]}}: cache.extra_inputs.my_macros.env[0]: '
                                 'must match the pattern ^[A-Za-z_][A-Za-z0-9_]*$')
        area.text = json.dumps(inputs)
        await pilot.pause()
        assert extra.problem == ""
        await pilot.press("ctrl+s")

    run(app, body)
    saved = settings_mod.load()
    assert saved.values["cache.cache_executables"] is True
    assert saved.values["cache.extra_inputs"] == inputs
    capsys.readouterr()
    assert main(["config", "validate", str(user_config)]) == 0


def test_quitting_with_unsaved_changes_warns_once(user_config: Path, run: Run) -> None:
    app = ConfigApp()

    async def body(pilot: Any) -> None:
        await _type_into(pilot, app, "cache.s3_concurrency", "4")
        await pilot.press("ctrl+q")
        assert app.is_running
        assert _status(app) == "1 unsaved change: ctrl+s saves, ctrl+q again quits without saving"
        await pilot.press("ctrl+q")
        assert not app.is_running

    run(app, body)
    assert not user_config.exists()


def test_every_setting_of_the_schema_has_the_field_of_its_type(run: Run) -> None:
    app = ConfigApp()
    expected = {"bool": BoolField, "enum": EnumField, "integer": NumberField, "size": UnitField,
                "json": JsonField, "path": TextField, "string": TextField}

    async def body(pilot: Any) -> None:
        from kache.tui.config.model import kind_of

        for setting in settings_mod.settings_table():
            field = field_of(app, setting.key)
            assert isinstance(field, expected[kind_of(setting)]), setting.key
            assert setting.description in str(field.query_one(".field-help").render())

    run(app, body)


def test_a_key_added_to_the_schema_appears_in_the_editor(tmp_path: Path, run: Run) -> None:
    schema = json.loads(Path(settings_mod.SCHEMA_PATH).read_text())
    schema["properties"]["cache"]["properties"]["upload_window"] = {
        "type": ["string", "integer"], "default": "10m", "x-format": "duration",
        "x-env": "KACHE_UPLOAD_WINDOW", "description": "How long uploads may be batched."}
    schema["properties"]["telemetry"] = {
        "type": "object", "title": "Telemetry", "description": "What kache reports.",
        "properties": {"mode": {"type": "string", "enum": ["off", "local"], "default": "off",
                                "description": "Where reports go."}}}
    path = tmp_path / "schema.json"
    path.write_text(json.dumps(schema))
    app = ConfigApp(schema_path=str(path))

    async def body(pilot: Any) -> None:
        window = field_of(app, "cache.upload_window")
        assert isinstance(window, UnitField) and window.query_one(Input).value == "10m"
        assert window.note == ""  # "10m" says it all; "600" would get "= 10m"
        assert "How long uploads may be batched." in str(window.query_one(".field-help").render())
        mode = field_of(app, "telemetry.mode")
        assert isinstance(mode, EnumField)
        titles = [str(w.render()) for w in app.query(".section-title")]
        assert any(t.startswith("[telemetry]  Telemetry: What kache reports.") for t in titles)
        await _type_into(pilot, app, "cache.upload_window", "forever")
        assert window.problem.endswith('cache.upload_window = "forever": expected a duration such as '
                                       "7d, 24h, 30m, 1h30m or a number of seconds")

    run(app, body)


def test_an_invalid_value_in_the_file_is_shown_and_must_be_fixed_to_save(user_config: Path, run: Run) -> None:
    user_config.write_text("[cache]\ncompression_level = 99\ns3_concurrency = 2\n")
    app = ConfigApp()

    async def body(pilot: Any) -> None:
        assert field_of(app, "cache.compression_level").problem.endswith(
            "cache.compression_level = 99: must be between 1 and 22")
        assert _status(app) == "1 invalid value: fix it or press ctrl+r to reset, then save"
        await _type_into(pilot, app, "cache.compression_level", "19")
        await pilot.press("ctrl+s")
        assert _status(app) == "saved ~/.config/kache/config.toml: cache.compression_level"

    run(app, body)
    assert user_config.read_text() == "[cache]\ncompression_level = 19\ns3_concurrency = 2\n"
