"""The wrapper's path must not import the heavy libraries (click ~30 ms, tomlkit ~25 ms,
jsonschema ~80 ms, boto3 ~150 ms, textual ~165 ms to import)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.launch import LAUNCH, one_file_lib

HEAVY = ("click", "jsonschema", "tomlkit", "boto3", "botocore", "textual", "rich", "zstandard")


def imported_modules(args: list[str], env_extra: dict[str, str] | None = None, cwd: Path | None = None) -> set[str]:
    """Top-level modules imported by ``kache …`` run as a process (from ``-X importtime``)."""
    import os

    env = {**os.environ, **(env_extra or {})}
    out = subprocess.run([sys.executable, "-X", "importtime", "-c", LAUNCH, *args],
                         capture_output=True, text=True, env=env, cwd=cwd)
    names = set()
    for line in out.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            name = line.rsplit("|", 1)[1].strip()
            if not name.startswith("imported"):
                names.add(name.split(".")[0])
    return names


def startup_modules() -> set[str]:
    """Top-level modules this interpreter imports before running any code (site, .pth files)."""
    out = subprocess.run([sys.executable, "-X", "importtime", "-c", "pass"], capture_output=True, text=True)
    return {line.rsplit("|", 1)[1].strip().split(".")[0] for line in out.stderr.splitlines()
            if line.startswith("import time:") and "|" in line}


def bare_paths() -> list[str]:
    """kache's and the venv's import paths, for an interpreter run with ``-S``: no .pth
    files (an editable install's finder imports functools, re and pathlib itself)."""
    import site

    import kache

    return [str(Path(kache.__file__).resolve().parent.parent), *site.getsitepackages()]


def bare_imported(args: list[str], recache: str, cwd: Path | None = None) -> set[str]:
    """Every module (dotted names) ``kache …`` imports, run without .pth files, with
    ``KACHE_RECACHE`` set to ``recache``."""
    import os

    launch = f"import sys; sys.path[:0] = {bare_paths()!r}; from kache.__main__ import main; sys.exit(main())"
    out = subprocess.run([sys.executable, "-S", "-X", "importtime", "-c", launch, *args], capture_output=True,
                         text=True, env={**os.environ, "KACHE_RECACHE": recache}, cwd=cwd)
    assert out.returncode == 0, out.stderr
    return {line.rsplit("|", 1)[1].strip() for line in out.stderr.splitlines()
            if line.startswith("import time:") and "|" in line}


def test_version_probe_imports_nothing_heavy() -> None:
    rustc = shutil.which("rustc")
    assert rustc
    mods = imported_modules([rustc, "-vV"])
    assert "kache" in mods
    assert not mods & set(HEAVY), sorted(mods & set(HEAVY))


@pytest.mark.e2e  # compiles through kache
def test_wrapped_compile_with_validated_config_imports_nothing_heavy(tmp_path: Path, clean_env: Path) -> None:
    config = clean_env / ".config" / "kache" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text("[cache]\ncompression_level = 5\n")
    args = one_file_lib(tmp_path, "hot")
    first = imported_modules(args)  # the first call validates the config once (jsonschema)
    assert "jsonschema" in first
    second = imported_modules(args)  # the first call's memo is reused: a hit
    assert not second & set(HEAVY), sorted(second & set(HEAVY))
    # A hit also needs no TOML parser, no subprocess and no dataclasses (~25 ms together),
    # and no json, re, enum, datetime or contextlib (~15 ms: kache.quickjson, _sqlite3).
    # (Beyond what interpreter start-up imported already: an editable install's finder
    # imports pathlib and re from site.)
    light = {"tomllib", "subprocess", "dataclasses", "threading", "json", "re", "enum", "datetime", "contextlib",
             "typing", "pathlib", "shutil"} - startup_modules()
    assert not second & light, sorted(second & light)
    assert (tmp_path / "out" / "libhot.rmeta").exists()
    events = (clean_env / ".cache" / "kache" / "events.jsonl").read_text().splitlines()
    assert [json.loads(e)["outcome"] for e in events] == ["miss", "local_hit"]


@pytest.mark.e2e  # compiles through kache
def test_a_miss_spawns_rustc_without_subprocess_or_threads(tmp_path: Path, clean_env: Path) -> None:
    """A miss runs rustc through posix_spawn and poll (subprocess and threading cost ~9 ms
    per miss), with its output passed on and cached."""
    args = one_file_lib(tmp_path, "warm")
    src = tmp_path / "lib.rs"
    imported_modules(args)  # validates the config, fills the memos
    src.write_text("pub fn f() {}\n#[deprecated] pub fn g() {}\n")
    second = imported_modules(args)
    assert not second & {"subprocess", "threading"}, sorted(second & {"subprocess", "threading"})
    events = [json.loads(e) for e in (clean_env / ".cache" / "kache" / "events.jsonl").read_text().splitlines()]
    assert [e["outcome"] for e in events] == ["miss", "miss"]


@pytest.mark.e2e  # compiles through kache
def test_a_call_with_no_daemon_does_not_load_the_protocol(tmp_path: Path, clean_env: Path) -> None:
    """With no daemon socket (every call of a build without a daemon) the wrapper does not
    import the daemon's protocol module just to find nobody there (~0.3 ms a call)."""
    args = one_file_lib(tmp_path, "nodaemon")
    for recache in ("", "1"):  # validates the settings of both identities, fills the memos
        bare_imported(args, recache)
    miss = bare_imported(args, "1")
    assert "kache.wrapper.daemon_hit" in miss  # it did look for a daemon
    assert "kache.daemon.wire" not in miss
    events = [json.loads(e) for e in (clean_env / ".cache" / "kache" / "events.jsonl").read_text().splitlines()]
    assert [e["outcome"] for e in events][-1] in ("miss", "dup")


def test_run_compiler_passes_output_on_keeps_it_and_inherits_fds(tmp_path: Path, capfd) -> None:  # noqa: ANN001
    """rustc gets the wrapper's inheritable fds (cargo's jobserver), its stdout and
    stderr reach the wrapper's own as they come, and both are kept for the cache."""
    import os

    from kache.engine.record import run_compiler

    r, w = os.pipe()
    os.set_inheritable(w, True)
    script = tmp_path / "fake-rustc"
    script.write_text(f"#!{sys.executable}\nimport os, sys\nprint('out-line', flush=True)\n"
                      f"print('err-line', file=sys.stderr, flush=True)\nos.write({w}, b'token\\n')\nsys.exit(3)\n")
    script.chmod(0o755)
    try:
        status, out, err = run_compiler([str(script)])
    finally:
        os.close(w)
    assert (status, out, err) == (3, "out-line\n", "err-line\n")
    assert os.read(r, 100) == b"token\n"
    os.close(r)
    seen = capfd.readouterr()
    assert seen.out == "out-line\n" and seen.err == "err-line\n"


@pytest.mark.e2e  # compiles through kache
def test_a_hit_imports_neither_functools_nor_collections(tmp_path: Path, clean_env: Path) -> None:
    """Without .pth files (an editable install's finder imports functools itself, so the
    test above cannot see it): a miss and a hit import neither ``functools`` nor
    ``collections`` (~4 ms together on every call). ``_sqlite3`` gets a stand-in
    ``lru_cache`` (``kache.store.connection._import_sqlite``); no hot module imports
    ``collections.abc`` at run time."""
    args = one_file_lib(tmp_path, "bare")
    # A call with new settings validates and memoises them (tomllib, typing: once per
    # identity, and KACHE_RECACHE is part of it); then a miss (KACHE_RECACHE compiles and
    # records again) and a hit, each with its settings memoised.
    seen = [bare_imported(args, recache) for recache in ("", "1", "1", "")]
    events = (clean_env / ".cache" / "kache" / "events.jsonl").read_text().splitlines()
    assert [json.loads(e)["outcome"] for e in events] == ["miss", "dup", "dup", "local_hit"]
    for names in seen[2:]:
        assert "_sqlite3" in names and not {"functools", "collections", "collections.abc"} & names, sorted(names)


def test_the_sqlite_stand_in_leaves_the_real_functools_to_later_imports(tmp_path: Path) -> None:
    """The statement cache built through the stand-in works (the same statement run again,
    many statements), and ``import functools`` afterwards is the real module."""
    code = f"""
import sys
sys.path[:0] = {bare_paths()!r}
from kache.store.store import Store
assert "functools" not in sys.modules
store = Store({str(tmp_path / "store")!r})
for i in range(300):  # more distinct statements than the cache holds (128), and repeats
    store.db.execute(f"SELECT {{i % 200}}").fetchone()
    assert store.tool_memo("nothing") is None
import functools
assert functools.__file__ and callable(functools.partial) and callable(functools.reduce)
assert functools.lru_cache(maxsize=2)(abs)(-3) == 3
print("ok")
"""
    out = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


@pytest.mark.e2e  # compiles through kache
def test_incremental_snapshot_and_restore_import_neither_shutil_nor_re(tmp_path: Path, clean_env: Path) -> None:
    """A workspace crate's miss copies its incremental session into the store, and a hit
    after `cargo clean` copies it back: both without ``shutil`` (which brings ``fnmatch``,
    ``re`` and ``enum``, ~10 ms a call). Run without .pth files, as the test above."""
    import os

    incremental = tmp_path / "incremental"
    args = [*one_file_lib(tmp_path, "inc"), "-C", f"incremental={incremental}"]
    seen = []
    # Settings are validated once per identity (KACHE_RECACHE is part of it): two calls
    # fill both memos. Then an edit, so that the miss's session files are new (copied
    # into the store), and a hit after `cargo clean` (the session copied back).
    for step, recache in (("settings", ""), ("settings", "1"), ("miss", "1"), ("hit", "")):
        if step == "miss":
            (tmp_path / "lib.rs").write_text("pub fn f() {}\npub fn g() -> u8 { 7 }\n")
        if step == "hit":  # cargo clean: outputs and sessions gone
            shutil.rmtree(tmp_path / "out")
            shutil.rmtree(incremental)
        seen.append(bare_imported(args, recache, cwd=tmp_path))
    events = [json.loads(e) for e in (clean_env / ".cache" / "kache" / "events.jsonl").read_text().splitlines()]
    assert [e["outcome"] for e in events] == ["miss", "dup", "miss", "local_hit"]
    assert events[-1].get("incremental") == "restored"  # the session came back from the store
    assert any(name.startswith("s-") for d in incremental.iterdir() for name in os.listdir(d))
    for names in seen[2:]:
        assert not {"shutil", "fnmatch", "re", "enum"} & names, sorted({"shutil", "fnmatch", "re", "enum"} & names)
