"""``kache config``: an editor generated from the schema.

The form is built from :func:`kache.settings.settings_table` and
:func:`kache.settings.sections` alone: a section header per table of the schema, a field
per setting (:mod:`kache.tui.config.fields` picks the widget from the type), the schema's
description as help. Each field says where its value comes from (default, system file,
user file, env), and a value from a variable or from the read-only system file says what
an edit will and will not do. Checks and messages are those of ``kache config validate``
(:class:`kache.tui.config.model.EditorState`); ``ctrl+s`` saves into the user's own file.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.widgets import Footer, Static

from kache import settings as settings_mod
from kache.errors import SettingsError
from kache.tui.config.fields import BADGES, SettingField, UnitField, field_id, make_field
from kache.tui.config.model import RESET, EditorState

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["ConfigApp"]


class ConfigApp(App[None]):
    """The editor of the settings that ``env`` names.

    Args:
        env: the environment (default ``os.environ``): it names the user and system files
            and may override values.
        schema_path: the schema (default: the one kache ships).
    """

    CSS_PATH = "editor.tcss"
    TITLE = "kache config"
    ENABLE_COMMAND_PALETTE = False

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+s", "save", "Save", priority=True),
        Binding("ctrl+r", "reset", "Reset to default", priority=True),
        Binding("ctrl+q", "quit", "Quit", priority=True),
    ]

    def __init__(self, env: Mapping[str, str] | None = None, schema_path: str | None = None) -> None:
        super().__init__()
        self.state = EditorState(env, schema_path)
        self.fields: dict[str, SettingField] = {}
        """Each setting's field, by key."""
        self.message = ""
        """The last thing a save said (shown until the next edit)."""
        self._quit_warned = False

    # ------------------------------------------------------------------ layout

    def compose(self) -> ComposeResult:
        state = self.state
        yield Static(self._files_text(), id="files")
        with VerticalScroll(id="form"):
            titles = {key: sub for key, sub in settings_mod.sections(state.schema_path)}
            section = None
            for setting in state.table:
                if setting.section != section:
                    section = setting.section
                    title = self._section_text(section, titles.get(section, {}))
                    yield Static(title, classes="section-title")
                field = make_field(setting, state.layer(setting.key))
                self.fields[setting.key] = field
                yield field
            env_only = settings_mod.env_settings(state.schema_path)
            if env_only:
                yield Static(Text.assemble(("Environment only", "bold"),
                                           ("  variables with no place in a file (read-only here)", "dim")),
                             classes="section-title")
                for e in env_only:
                    yield Static(self._env_text(e), classes="env-setting")
        yield Static("", id="status")
        yield Footer()

    def on_mount(self) -> None:
        problems = self.state.initial_problems()
        for key, field in self.fields.items():
            field.problem = problems.get(key, "")
            field.note = self._note(key)
            if key in problems and self.state.layer(key).kind == "user":
                self.state.problems[key] = problems[key]  # your file: fix it (or reset it) to save
        self._update_status()

    def _files_text(self) -> Text:
        state = self.state
        text = Text.assemble(("your file ", "bold"), state.shown(state.user_path))
        text.append(" (exists)" if state.user_exists else " (new: written on save)", style="dim")
        if state.system_path is not None:
            text.append(" · ")
            text.append("system file ", style="bold")
            text.append(state.shown(state.system_path))
            text.append(" (KACHE_CONFIG, read-only)", style="dim")
        return text

    @staticmethod
    def _section_text(section: str, sub: dict[str, Any]) -> Text:
        text = Text(f"[{section}]" if section else "[top level]", style="bold")
        if sub.get("title"):
            text.append(f"  {sub['title']}", style="bold")
        if sub.get("description"):
            text.append(f": {sub['description']}", style="dim")
        return text

    def _env_text(self, e: settings_mod.EnvSetting) -> Text:
        env = self.state.env
        if e.secret:
            value = "(set, hidden)" if e.name in env else "(unset)"
        elif e.name in env:
            value = env[e.name]
        else:
            value = f"{settings_mod.display(e.default)} (unset)"
        return Text.assemble((e.name, "bold"), " = ", value, "\n", (e.description, "dim"))

    # ------------------------------------------------------------------ notes and status

    def _note(self, key: str) -> str:
        """What a person must know about this value beyond its help text."""
        state, field = self.state, self.fields[key]
        user = state.shown(state.user_path)
        parts = []
        if key in state.pending and state.pending[key] is RESET:
            below = state.file_layer(key)
            parts.append(f"removed from your file on save; then the {BADGES[below.kind]} value applies: "
                         f"{self._value_text(key, below.value)}")
        var = state.env_var(key)
        file_layer = state.file_layer(key)
        if var is not None:
            files_say = self._value_text(key, file_layer.value)
            parts.append(f"{var} is set and wins over the files: an edit is saved to {user} but takes "
                         f"effect only once {var} is unset (files say: {files_say})")
        elif file_layer.kind == "system":
            parts.append(f"from the read-only system file {state.shown(state.system_path or '')}; "
                         f"a change is saved to {user} as an override")
        elif file_layer.kind == "edited" and state.in_system_file(key):
            parts.append(f"saved to {user}, this overrides the read-only system file")
        if isinstance(field, UnitField) and not field.problem:
            value = state.layer(key).value
            meaning = field.meaning(value) if value is not None else ""
            if meaning and meaning != f"= {value}":
                parts.insert(0, meaning)
        return "; ".join(parts)

    def _value_text(self, key: str, value: Any) -> str:
        if value is None:
            return self.state.by_key[key].default_text
        return settings_mod.display(value)

    def _update_status(self) -> None:
        state = self.state
        status = self.query_one("#status", Static)
        n_bad, n_edits = len(state.problems), len(state.pending)
        if n_bad:
            plural = n_bad != 1
            text = Text(f"{n_bad} invalid value{'s' if plural else ''}: fix {'them' if plural else 'it'} "
                        "or press ctrl+r to reset, then save", style="bold red")
        elif n_edits:
            text = Text(f"{n_edits} unsaved change{'s' if n_edits != 1 else ''}: ctrl+s saves them "
                        f"to {state.shown(state.user_path)}", style="bold")
        elif self.message:
            text = Text(self.message)
        else:
            text = Text("tab moves between fields; changes are checked as you type", style="dim")
        status.update(text)

    # ------------------------------------------------------------------ edits

    def on_setting_field_changed(self, event: SettingField.Changed) -> None:
        state, field, key = self.state, event.field, event.key
        self.message = ""
        self._quit_warned = False
        if event.error is not None:
            state.problems[key] = event.error
            field.problem = event.error
        elif event.value is RESET:
            field.origin = state.reset(key)
            field.problem = ""
        else:
            problem = state.set(key, event.value)
            field.problem = problem or ""
            field.origin = state.layer(key) if not problem else field.origin
        field.note = self._note(key)
        self._update_status()

    def _focused_field(self) -> SettingField | None:
        node = self.focused
        while node is not None and not isinstance(node, SettingField):
            node = node.parent  # type: ignore[assignment]
        return node

    def action_reset(self) -> None:
        """Reset the focused setting: remove it from your file (on save)."""
        field = self._focused_field()
        if field is None:
            return
        key = field.setting.key
        layer = self.state.reset(key)
        field.show_value(layer.value)
        field.origin, field.problem = layer, ""
        field.note = self._note(key)
        self._update_status()

    def action_save(self) -> None:
        """Write the edits into your file (never the system file)."""
        state = self.state
        if not state.dirty and not state.problems:
            self.message = f"nothing to save; {state.shown(state.user_path)} is unchanged"
            self._update_status()
            return
        try:
            result = state.save()
        except SettingsError as e:
            failure = Text("cannot save: " + "; ".join(e.problems), style="bold red")
            self.query_one("#status", Static).update(failure)
            return
        message = f"saved {state.shown(result.path)}: " + (", ".join(result.written) or "no change")
        if result.overrides_system:
            message += f"; overrides of the system file: {', '.join(result.overrides_system)}"
        if result.env_wins:
            wins = ", ".join(f"{state.env_var(k)} ({k})" for k in result.env_wins)
            message += f"; still overridden by {wins} while set"
        self.message = message
        self.query_one("#files", Static).update(self._files_text())
        for key, field in self.fields.items():
            field.origin = state.layer(key)
            field.note = self._note(key)
        self._update_status()

    async def action_quit(self) -> None:
        """Quit; with unsaved changes, the first press only warns."""
        if self.state.dirty and not self._quit_warned:
            self._quit_warned = True
            n = len(self.state.pending)
            self.query_one("#status", Static).update(Text(
                f"{n} unsaved change{'s' if n != 1 else ''}: ctrl+s saves, ctrl+q again quits without saving",
                style="bold yellow"))
            return
        self.exit()


def field_of(app: ConfigApp, key: str) -> SettingField:
    """The field of ``key`` (for tests and callers that know only the key)."""
    return app.query_one(f"#{field_id(key)}", SettingField)
