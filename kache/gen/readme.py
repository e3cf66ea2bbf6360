"""The README's generated tables, each between two markers: the configuration table (from
the schema) and the environment policy of the cache key (from kache.engine.envpolicy)."""

from __future__ import annotations

from kache import settings as settings_mod

__all__ = ["BEGIN", "END", "ENV_BEGIN", "ENV_END", "config_table", "env_policy_table", "render"]

BEGIN = "<!-- BEGIN GENERATED: kache dev gen readme -->"
END = "<!-- END GENERATED: kache dev gen readme -->"
ENV_BEGIN = "<!-- BEGIN GENERATED: kache dev gen env-policy -->"
ENV_END = "<!-- END GENERATED: kache dev gen env-policy -->"


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
    if_invalid = settings_mod.if_invalid(schema_path)
    said = {"no-cache": " Invalid: caching is off.", "no-remote": " Invalid: the remote is off."}
    for s in settings_mod.settings_table(schema_path):
        limits = []
        if "minimum" in s.schema and "maximum" in s.schema:
            limits.append(f"{s.schema['minimum']}–{s.schema['maximum']}")
        if "enum" in s.schema:
            limits.append("one of " + ", ".join(f"`{v}`" for v in s.schema["enum"]))
        desc = s.description + (f" ({'; '.join(limits)})" if limits else "") + said.get(if_invalid[s.key], "")
        lines.append(
            f"| {_code(s.env or '')} | `{s.key}` | {_cell(_code(s.default_text))} | {_cell(desc)} |"
        )
    for e in settings_mod.env_settings(schema_path):
        default = settings_mod.display(e.default)
        lines.append(f"| `{e.name}` | — | {_cell(_code(default))} | {_cell(e.description)} |")
    return "\n".join(lines) + "\n"


def env_policy_table() -> str:
    """A Markdown table: variable, whether the cheap key holds it, why."""
    from kache.engine.envpolicy import ENV_POLICY

    lines = ["| Variable | In the key | Why |", "|---|---|---|"]
    for name, policy, why in ENV_POLICY:
        shown = "any other" if name == "*" else f"`{name}`"
        lines.append(f"| {shown} | {policy} | {_cell(why)} |")
    return "\n".join(lines) + "\n"


def _fill(text: str, begin: str, end: str, table: str) -> str:
    start = text.find(begin)
    stop = text.find(end)
    if start < 0 or stop < start:
        raise ValueError(f"README has no '{begin}' … '{end}' block to fill")
    return text[: start + len(begin)] + "\n" + table + text[stop:]


def render(readme: str, schema_path: str | None = None) -> str:
    """The README with the text between each pair of markers replaced by the current table."""
    readme = _fill(readme, BEGIN, END, config_table(schema_path))
    return _fill(readme, ENV_BEGIN, ENV_END, env_policy_table())
