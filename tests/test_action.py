"""action.yml parses and offers what the README's CI section documents."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def test_action_has_the_documented_inputs_and_steps() -> None:
    action = yaml.safe_load((ROOT / "action.yml").read_text())
    assert action["runs"]["using"] == "composite"
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## CI"):readme.index("## Run the tests")]
    documented = re.search(r"Inputs: (.*?)\. Any other CI", section, re.S).group(1)  # type: ignore[union-attr]
    names = [n for n in re.findall(r"`([a-z-]+)`", documented) if n not in ("true", "false")]
    assert set(names) == set(action["inputs"])
    steps = [s["name"] for s in action["runs"]["steps"]]
    assert steps == ["Install kache", "Configure kache", "Pull the cache"]
    run = "\n".join(s["run"] for s in action["runs"]["steps"])
    assert "RUSTC_WRAPPER=" in run and "kache sync --pull" in run
    # every `with:` key in the README example is an input
    example = yaml.safe_load(re.search(r"```yaml\n(.*?)```", section, re.S).group(1))  # type: ignore[union-attr]
    assert set(example[0]["with"]) <= set(action["inputs"])
    assert any(step.get("run", "").startswith("kache sync --push") for step in example)
    # secrets are passed through env, never interpolated into a script
    configure = action["runs"]["steps"][1]["run"]
    assert "inputs.secret-key" not in configure and "INPUT_SECRET_KEY" in configure
