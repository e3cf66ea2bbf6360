"""The README's configuration table, generated from the schema between two markers."""

from __future__ import annotations

from kache import settings as settings_mod

__all__ = ["BEGIN", "END", "config_table", "render"]

BEGIN = "<!-- BEGIN GENERATED: kache dev gen readme -->"
END = "<!-- END GENERATED: kache dev gen readme -->"


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _code(text: str) -> str:
    return f"`{text}`" if text and text != "—" else "—"


def config_table(schema_path: str | None = None) -> str:
    """A Markdown table: variable, config key, default, description; env-only rows last."""
    lines = [
        "| Variable | Config key | Default | Description |",
        "|---|---|---|---|",
    ]
    for s in settings_mod.settings_table(schema_path):
        limits = []
        if "minimum" in s.schema and "maximum" in s.schema:
            limits.append(f"{s.schema['minimum']}–{s.schema['maximum']}")
        if "enum" in s.schema:
            limits.append("one of " + ", ".join(f"`{v}`" for v in s.schema["enum"]))
        desc = s.description + (f" ({'; '.join(limits)})" if limits else "")
        lines.append(
            f"| {_code(s.env or '')} | `{s.key}` | {_cell(_code(s.default_text))} | {_cell(desc)} |"
        )
    for e in settings_mod.env_settings(schema_path):
        default = settings_mod.display(e.default)
        lines.append(f"| `{e.name}` | — | {_cell(_code(default))} | {_cell(e.description)} |")
    return "\n".join(lines) + "\n"


def render(readme: str, schema_path: str | None = None) -> str:
    """The README with the text between the markers replaced by the current table."""
    start = readme.find(BEGIN)
    end = readme.find(END)
    if start < 0 or end < start:
        raise ValueError(f"README has no '{BEGIN}' … '{END}' block to fill")
    head = readme[: start + len(BEGIN)]
    return head + "\n" + config_table(schema_path) + readme[end:]
