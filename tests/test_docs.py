"""README carries the two commands, and .ci/run runs the README's test command."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _sh_blocks(text: str) -> list[str]:
    return re.findall(r"```sh\n(.*?)```", text, re.S)


def test_ci_runs_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Run the tests"):]
    command = _sh_blocks(section)[0].strip()
    assert "pytest" in command
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert command in ci_lines


def test_readme_has_an_install_and_run_command() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Install and run"):]
    command = _sh_blocks(section)[0]
    assert "pip install" in command and command.strip().endswith("kache demo")


def test_every_command_is_in_the_readme() -> None:

    import click

    from kache.cli import root

    readme = (ROOT / "README.md").read_text()
    ctx = click.Context(root)
    for name in root.list_commands(ctx):
        cmd = root.get_command(ctx, name)
        if cmd.hidden:
            continue
        assert f"`kache {name}" in readme, f"README does not mention `kache {name}`"


def test_the_reliability_table_names_tests_that_exist() -> None:
    """Every test docs/reliability.md cites is a real test function (or module)."""
    text = (ROOT / "docs" / "reliability.md").read_text()
    cited = re.findall(r"(tests/[\w/]+\.py)(?:::(\w+))?", text)
    assert len(cited) > 30
    for path, name in cited:
        source = (ROOT / path).read_text()
        assert not name or re.search(rf"^(async )?def {name}\(", source, re.M), f"{path}::{name} does not exist"
