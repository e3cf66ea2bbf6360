"""What README and docs/ say holds in the repository: its commands, cited tests and results files."""

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


_DOCS = ("README.md", "docs/performance.md", "docs/remote.md", "docs/reliability.md", "docs/correctness.md")


def test_cited_results_files_exist() -> None:
    """Every results file README and docs/ cite (but the decisions log, which cites earlier runs
    by the commit that holds them) is in benchmarks/results/."""
    cited = {(doc, name) for doc in _DOCS
             for name in re.findall(r"results/([\w.-]+\.json)", (ROOT / doc).read_text())}
    assert len(cited) > 5
    for doc, name in cited:
        assert (ROOT / "benchmarks" / "results" / name).is_file(), f"{doc} cites results/{name}"


def test_one_results_file_per_benchmark() -> None:
    """Each benchmark writes one fixed file, results/<script>.json, which benchmarks/README names,
    and no other file is kept."""
    scripts = sorted((ROOT / "benchmarks").glob("*.py"))
    guide = (ROOT / "benchmarks" / "README.md").read_text()
    assert scripts
    for script in scripts:
        assert f'"results" / "{script.stem}.json"' in script.read_text(), f"{script.name} writes elsewhere"
        assert f"`results/{script.stem}.json`" in guide, f"benchmarks/README.md does not name {script.name}'s results"
    names = {script.stem + ".json" for script in scripts}
    for kept in (ROOT / "benchmarks" / "results").iterdir():
        assert kept.name in names, f"benchmarks/results/{kept.name} is no benchmark's results file"


def test_docs_cite_nothing_outside_the_repository() -> None:
    for doc in (*_DOCS, "docs/decisions.md"):
        text = (ROOT / doc).read_text()
        for outside in ("REFERENCE", "shared/bench", "research/"):
            assert outside not in text, f"{doc} cites {outside!r}, which is not in the repository"


def test_code_cites_no_document_outside_the_repository() -> None:
    """Comments and docstrings say the fact, not "see REFERENCE §N" of a file nobody has."""
    import re

    cite = re.compile(r"REFERENCE\s*§|REFERENCE\.md|STYLE\.md|shared/research")
    found = [f"{path.relative_to(ROOT)}:{n}" for top in ("kache", "tests", "benchmarks")
             for path in (ROOT / top).rglob("*.py")
             for n, line in enumerate(path.read_text().splitlines(), 1)
             if cite.search(line) and path.name != "test_docs.py"]
    assert not found, f"cites a document outside the repository: {found}"
