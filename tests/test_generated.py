"""Generated files must match what the generators make from the schema now."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from kache.gen import GENERATED, generate
from kache.gen.readme import BEGIN, END, config_table

ROOT = Path(__file__).resolve().parent.parent


def test_generated_files_are_up_to_date() -> None:
    for rel, (current, wanted) in generate(ROOT).items():
        assert current == wanted, f"{rel} is stale: run `kache dev gen`"


def test_readme_table_lists_every_setting_and_env_var() -> None:
    from kache import settings as S

    readme = (ROOT / "README.md").read_text()
    block = readme[readme.index(BEGIN):readme.index(END)]
    for s in S.settings_table():
        row = next(line for line in block.splitlines() if f"`{s.key}`" in line)
        assert (f"`{s.env}`" if s.env else "| — |") in row and " ".join(s.description.split())[:40].replace("|", "\\|") in row
    for e in S.env_settings():
        assert f"| `{e.name}` |" in block


def test_a_schema_change_shows_up_in_the_table(tmp_path: Path) -> None:
    schema = json.loads((ROOT / "schema" / "config.schema.json").read_text())
    schema["properties"]["cache"]["properties"]["new_knob"] = {
        "type": "integer", "default": 4, "x-env": "KACHE_NEW_KNOB", "description": "A knob added for the test."}
    path = tmp_path / "schema.json"
    path.write_text(json.dumps(schema))
    table = config_table(str(path))
    assert "| `KACHE_NEW_KNOB` | `cache.new_knob` | `4` | A knob added for the test. |" in table


def test_dev_gen_check_fails_on_a_stale_copy(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from kache.cli import root

    for rel in ["schema/config.schema.json", *GENERATED]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / rel, tmp_path / rel)
    result = CliRunner().invoke(root, ["dev", "gen", "--check", "--root", str(tmp_path)])
    assert result.exit_code == 0, result.output
    readme = tmp_path / "README.md"
    readme.write_text(readme.read_text().replace("| `KACHE_MAX_SIZE` |", "| `KACHE_MAXSIZE` |"))
    result = CliRunner().invoke(root, ["dev", "gen", "--check", "--root", str(tmp_path)])
    assert result.exit_code == 1 and "out of date: README.md" in result.output
    result = CliRunner().invoke(root, ["dev", "gen", "--root", str(tmp_path)])
    assert result.exit_code == 0 and (tmp_path / "README.md").read_text() == (ROOT / "README.md").read_text()
