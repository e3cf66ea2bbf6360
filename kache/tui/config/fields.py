"""One field per kind of schema setting, each with its own DEFAULT_CSS.

A field shows one row (name, control, where the value comes from) and, below it, the
schema's description, a note (environment override, system file, parsed size) and the
schema's message when the value is invalid. Edits go up as :class:`SettingField.Changed`;
the app checks them and sends ``origin``, ``note`` and ``problem`` back down.

    kind (model.kind_of)   control
    bool                   Switch, with the value in words (readable without colour)
    enum                   Select of the schema's values
    integer, number        Input restricted to numbers
    size, duration         Input; the note shows what the text means (50GB = 46.6 GiB)
    path, string           Input
    json                   TextArea holding JSON (tables such as cache.extra_inputs)
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any, Literal

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.reactive import reactive
from textual.widgets import Input, Label, Select, Static, Switch, TextArea

from kache import units
from kache.tui.config.model import RESET, Layer, kind_of, text_of

if TYPE_CHECKING:
    from kache.settings import Setting

__all__ = ["SettingField", "BoolField", "EnumField", "NumberField", "UnitField", "TextField", "JsonField",
           "make_field", "field_id", "BADGES"]

BADGES = {"default": "default", "user": "user file", "edited": "edited", "system": "system file",
          "env": "env"}
"""The source badge of each layer kind (model.Layer.kind)."""

_INT = re.compile(r"[+-]?\d+")


def field_id(key: str) -> str:
    """The widget id of a setting's field: ``cache.remote.bucket`` → ``field-cache--remote--bucket``."""
    return "field-" + key.replace("_", "-").replace(".", "--")


class SettingField(Vertical):
    """The field of one setting; subclasses supply the control."""

    DEFAULT_CSS = """
    SettingField {
        height: auto;
        padding: 0 1 1 1;
        & > .field-row {
            height: auto;
        }
        & .field-name {
            width: 26;
            text-style: bold;
        }
        & .field-control {
            width: 1fr;
        }
        & .field-source {
            width: 13;
            margin-left: 1;
            color: $text-muted;
        }
        & .field-help {
            color: $text-muted;
            padding-left: 2;
            height: 1;
            text-wrap: nowrap;
            text-overflow: ellipsis;
        }
        &:focus-within .field-help {
            height: auto;
            text-wrap: wrap;
        }
        & .field-note {
            display: none;
            padding-left: 2;
            color: $text-warning;
        }
        & .field-problem {
            display: none;
            padding-left: 2;
            color: $text-error;
            text-style: bold;
        }
        &.-has-note .field-note {
            display: block;
        }
        &.-invalid .field-problem {
            display: block;
        }
        &.-env .field-source, &.-edited .field-source {
            text-style: bold;
            color: $text-warning;
        }
        &:focus-within {
            background: $boost;
        }
    }
    """

    class Changed(Message):
        """A person changed the value (``value`` is :data:`RESET` for an emptied field);
        ``error`` says why the text is not a value at all (bad JSON)."""

        def __init__(self, field: SettingField, value: Any, error: str | None = None) -> None:
            super().__init__()
            self.field = field
            self.value = value
            self.error = error

        @property
        def key(self) -> str:
            return self.field.setting.key

    origin: reactive[Layer | None] = reactive(None)
    """Where the value comes from (set by the app)."""
    note: reactive[str] = reactive("")
    """A line under the help: env override, system file, what a size means."""
    problem: reactive[str] = reactive("")
    """The schema's message for the value shown, or ``""``."""

    def __init__(self, setting: Setting, layer: Layer) -> None:
        super().__init__(id=field_id(setting.key))
        self.setting = setting
        self.set_reactive(SettingField.origin, layer)
        self._given: Any = None
        """What the control held when it was last set or edited (see :meth:`changed`)."""

    def compose(self) -> ComposeResult:
        assert self.origin is not None
        name = self.setting.key.rsplit(".", 1)[-1]
        with Horizontal(classes="field-row"):
            yield Label(name, classes="field-name")
            yield from self.compose_control(self.origin.value)
            yield Label(BADGES.get(self.origin.kind, self.origin.kind), classes="field-source")
        yield Static(self.setting.description, classes="field-help", markup=False)
        yield Static("", classes="field-note", markup=False)
        yield Static("", classes="field-problem", markup=False)

    def on_mount(self) -> None:
        self._given = self.shown()
        self.watch_origin(self.origin)
        self.watch_note(self.note)
        self.watch_problem(self.problem)

    # ------------------------------------------------------------------ subclasses

    def compose_control(self, value: Any) -> ComposeResult:
        """Yield the control, showing ``value``."""
        raise NotImplementedError

    def show_value(self, value: Any) -> None:
        """Put ``value`` into the control without sending :class:`Changed`."""
        self.put_value(value)
        self._given = self.shown()

    def put_value(self, value: Any) -> None:
        """Set the control to ``value`` (messages it sends are suppressed)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ reactives

    def watch_origin(self, layer: Layer | None) -> None:
        if layer is None or not self.is_mounted:
            return
        self.query_one(".field-source", Label).update(BADGES.get(layer.kind, layer.kind))
        for kind in BADGES:
            self.set_class(layer.kind == kind, f"-{kind}")

    def watch_note(self, note: str) -> None:
        if self.is_mounted:
            self.query_one(".field-note", Static).update(note)
            self.set_class(bool(note), "-has-note")

    def watch_problem(self, problem: str) -> None:
        if self.is_mounted:
            self.query_one(".field-problem", Static).update(problem)
            self.set_class(bool(problem), "-invalid")

    def shown(self) -> Any:
        """What the control holds now (its text or value)."""
        raise NotImplementedError

    def changed(self, value: Any, error: str | None = None) -> None:
        """Send :class:`Changed`, unless the control merely holds what it was given
        (controls announce their first value, and :meth:`show_value` is not an edit)."""
        shown = self.shown()
        if shown == self._given:
            return
        self._given = shown
        self.post_message(self.Changed(self, value, error))


class BoolField(SettingField):
    """A switch, and the value in words beside it."""

    DEFAULT_CSS = """
    BoolField {
        & .field-control {
            height: auto;
        }
        & Switch {
            border: none;
            padding: 0;
            height: 1;
            width: auto;
            &:focus {
                border: none;
                text-style: reverse;
            }
        }
        & .bool-text {
            width: 1fr;
            margin-left: 1;
        }
    }
    """

    def compose_control(self, value: Any) -> ComposeResult:
        with Horizontal(classes="field-control"):
            yield Switch(bool(value), animate=False)
            yield Label(text_of(self.setting, bool(value)), classes="bool-text")

    def put_value(self, value: Any) -> None:
        switch = self.query_one(Switch)
        with switch.prevent(Switch.Changed):
            switch.value = bool(value)
        self.query_one(".bool-text", Label).update(text_of(self.setting, bool(value)))

    def on_switch_changed(self, event: Switch.Changed) -> None:
        event.stop()
        self.query_one(".bool-text", Label).update(text_of(self.setting, event.value))
        self.changed(event.value)

    def shown(self) -> Any:
        return self.query_one(Switch).value


class EnumField(SettingField):
    """A select of the schema's ``enum``."""

    def compose_control(self, value: Any) -> ComposeResult:
        options = [(text_of(self.setting, v), v) for v in self.setting.schema["enum"]]
        current = value if value in self.setting.schema["enum"] else Select.NULL
        yield Select(options, value=current, allow_blank=current is Select.NULL, compact=True,
                     classes="field-control")

    def put_value(self, value: Any) -> None:
        select = self.query_one(Select)
        with select.prevent(Select.Changed):
            select.value = value if value in self.setting.schema["enum"] else Select.NULL

    def on_select_changed(self, event: Select.Changed) -> None:
        event.stop()
        self.changed(RESET if event.value is Select.NULL else event.value)

    def shown(self) -> Any:
        return self.query_one(Select).value


class _InputField(SettingField):
    """A one-line text input; subclasses turn its text into a value."""

    def input_type(self) -> Literal["integer", "number", "text"]:
        """What the input lets a person type."""
        return "text"

    def compose_control(self, value: Any) -> ComposeResult:
        if self.setting.default is not None:
            placeholder = "(empty)"
        elif "x-default-text" in self.setting.schema:
            placeholder = self.setting.default_text
        else:
            placeholder = "(not set)"
        yield Input(text_of(self.setting, value), placeholder=placeholder, type=self.input_type(),
                    compact=True, classes="field-control", select_on_focus=False)

    def put_value(self, value: Any) -> None:
        control = self.query_one(Input)
        with control.prevent(Input.Changed):
            control.value = text_of(self.setting, value)

    def parse(self, text: str) -> Any:
        """The value of a non-empty text (anything that does not fit stays text, for the
        schema to reject with its own message)."""
        return text

    def on_input_changed(self, event: Input.Changed) -> None:
        event.stop()
        text = event.value.strip()
        self.changed(RESET if text == "" else self.parse(text))

    def shown(self) -> Any:
        return self.query_one(Input).value


class TextField(_InputField):
    """Text and paths."""


class NumberField(_InputField):
    """An integer (or number) with the schema's bounds."""

    def input_type(self) -> Literal["integer", "number", "text"]:
        return "integer" if "integer" in self.setting.types else "number"

    def parse(self, text: str) -> Any:
        if _INT.fullmatch(text):
            return int(text)
        try:
            return float(text) if "number" in self.setting.types else text
        except ValueError:
            return text


class UnitField(_InputField):
    """A size (``50GB``) or duration (``7d``); a bare number is bytes or seconds."""

    def parse(self, text: str) -> Any:
        if text.isdigit() and "integer" in self.setting.types:
            return int(text)
        return text

    def meaning(self, value: Any) -> str:
        """What the value means, in the other units (``""`` when it does not parse)."""
        try:
            if self.setting.format == "size":
                return f"= {units.format_size(units.parse_size(value))}"
            return f"= {units.format_duration(units.parse_duration(value))}"
        except units.UnitError:
            return ""


class JsonField(SettingField):
    """Tables and lists, edited as JSON (saved as TOML)."""

    DEFAULT_CSS = """
    JsonField {
        & TextArea {
            height: auto;
            max-height: 10;
            width: 1fr;
        }
    }
    """

    def compose_control(self, value: Any) -> ComposeResult:
        yield TextArea(text_of(self.setting, value) or "{}", compact=True, classes="field-control",
                       show_line_numbers=False, soft_wrap=True)

    def put_value(self, value: Any) -> None:
        area = self.query_one(TextArea)
        with area.prevent(TextArea.Changed):
            area.text = text_of(self.setting, value) or "{}"

    def shown(self) -> Any:
        return self.query_one(TextArea).text

    def on_text_area_changed(self, event: TextArea.Changed) -> None:
        event.stop()
        text = event.text_area.text.strip()
        if not text:
            self.changed(RESET)
            return
        try:
            value = json.loads(text)
        except ValueError as e:
            self.changed(None, f"not JSON yet: {e}")
            return
        self.changed(value)


def make_field(setting: Setting, layer: Layer) -> SettingField:
    """The field for a setting's kind."""
    kind = kind_of(setting)
    cls: type[SettingField] = {
        "bool": BoolField, "enum": EnumField, "integer": NumberField, "number": NumberField,
        "size": UnitField, "duration": UnitField, "json": JsonField,
    }.get(kind, TextField)
    return cls(setting, layer)
