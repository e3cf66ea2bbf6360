"""kache.paths: the normaliser's remap targets, the kernel's reading of `..`, and the
file names of rustc's messages turned back into this machine's paths."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kache.paths import Normalizer, resolve


def test_resolve_leaves_dotdot_to_the_kernel(tmp_path: Path) -> None:
    real = tmp_path / "real" / "dir"
    real.mkdir(parents=True)
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "linked").symlink_to(real)
    # lexically src/data.txt; for the kernel real/data.txt
    assert resolve(f"{tmp_path}/src/linked/../data.txt") == f"{tmp_path}/real/data.txt"
    assert resolve(f"{tmp_path}/a/./b//c") == f"{tmp_path}/a/b/c"  # no `..`: no system call
    assert resolve(f"{tmp_path}/src/../src") == f"{tmp_path}/src"


def _target(tmp_path: Path) -> Path:
    target = tmp_path / "target"
    (target / "debug" / "deps").mkdir(parents=True)
    (target / "CACHEDIR.TAG").write_text("")
    return target


def test_a_member_maps_to_dot_and_another_package_to_name_version(tmp_path: Path) -> None:
    target = _target(tmp_path)
    env = {"HOME": "/home/ann", "CARGO_PKG_NAME": "dep", "CARGO_PKG_VERSION": "0.1.0"}
    member = Normalizer.for_call(str(tmp_path / "ws"), str(target / "debug/deps"), env, "app/src/main.rs")
    other = Normalizer.for_call(str(tmp_path / "dep"), str(target / "debug/deps"), env, f"{tmp_path}/dep/src/lib.rs")
    assert member.targets["<CWD>"] == "."
    assert other.targets["<CWD>"] == "dep-0.1.0"
    assert other.targets["<TARGET>"] == "/cargo/build-dir"
    assert member.remap_text() != other.remap_text()  # the key holds where paths go
    # kache's flags, shortest prefix first (rustc takes the last match)
    flags = other.remap_flags()
    assert flags.index(f"--remap-path-prefix={tmp_path}/dep=dep-0.1.0") > flags.index("--remap-path-prefix=/home/ann=/kache/home")


def test_a_target_dir_spelled_with_dotdot_is_remapped_as_spelled(tmp_path: Path) -> None:
    target = _target(tmp_path)
    (tmp_path / "ws").mkdir()
    raw = f"{tmp_path}/ws/../target/debug/deps"
    norm = Normalizer.for_call(str(tmp_path / "ws"), raw, {"HOME": "/h"})
    assert norm.prefixes["<TARGET>"] == str(target)
    assert f"{tmp_path}/ws/../target" in norm.spellings("<TARGET>")
    assert norm.path(f"{tmp_path}/ws/../target/debug/build/x/out/gen.rs") == "<TARGET>/debug/build/x/out/gen.rs"


def _dep_norm() -> Normalizer:
    return Normalizer({"<CWD>": "/srv/dep", "<TARGET>": "/srv/ws/target", "<HOME>": "/home/ann"},
                      targets={"<CWD>": "dep-0.1.0"})


@pytest.mark.parametrize(("shown", "real"), [
    (" --> dep-0.1.0/src/lib.rs:1:34\n", " --> /srv/dep/src/lib.rs:1:34\n"),
    ("  ::: \x1b[0mdep-0.1.0/src/x.rs:2:1\n", "  ::: \x1b[0m/srv/dep/src/x.rs:2:1\n"),
    ("error: couldn't read `/cargo/build-dir/debug/x`\n", "error: couldn't read `/cargo/build-dir/debug/x`\n"),
    ("a mention of dep-0.1.0/src/lib.rs in prose\n", "a mention of dep-0.1.0/src/lib.rs in prose\n"),
    ("--> /cargo/build-dir/debug/build/x/out/gen.rs:1:1\n", "--> /srv/ws/target/debug/build/x/out/gen.rs:1:1\n"),
])
def test_rendered_file_names_become_real_paths(shown: str, real: str) -> None:
    assert _dep_norm().diagnostics(shown) == real


def test_json_spans_and_ansi_rendered_text_become_real_paths() -> None:
    line = json.dumps({"$message_type": "diagnostic", "spans": [{"file_name": "dep-0.1.0/src/lib.rs"}],
                       "rendered": "\x1b[1m\x1b[94m--> \x1b[0mdep-0.1.0/src/lib.rs:1:34\n"}, separators=(",", ":"))
    out = json.loads(_dep_norm().diagnostics(line + "\n"))
    assert out["spans"][0]["file_name"] == "/srv/dep/src/lib.rs"
    assert out["rendered"] == "\x1b[1m\x1b[94m--> \x1b[0m/srv/dep/src/lib.rs:1:34\n"


def test_a_path_needing_json_escapes_is_escaped() -> None:
    norm = Normalizer({"<CWD>": '/srv/a "quoted" dir'}, targets={"<CWD>": "dep-0.1.0"})
    line = '{"spans":[{"file_name":"dep-0.1.0/src/lib.rs"}]}'
    assert json.loads(norm.diagnostics(line))["spans"][0]["file_name"] == '/srv/a "quoted" dir/src/lib.rs'
