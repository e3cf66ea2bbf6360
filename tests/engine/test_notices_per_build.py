"""warn_once: once per build (the parent process and its start time), stamps swept."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from kache.engine import notices
from kache.store import layout
from tests.support.tty import STOPPED, run_in_pty, run_in_pty_background


def test_a_warning_is_said_once_per_build_and_again_in_the_next(clean_env: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    store = clean_env / "store"
    monkeypatch.setattr(notices, "build_identity", lambda: "4242-100")
    notices.warn_once("the thing", suffix="", store=str(store))
    notices.warn_once("the thing", suffix="", store=str(store))
    assert (store / "kache.log").read_text().count("kache: warning: the thing\n") == 1
    monkeypatch.setattr(notices, "build_identity", lambda: "4243-180")  # the next cargo
    notices.warn_once("the thing", suffix="", store=str(store))
    assert (store / "kache.log").read_text().count("kache: warning: the thing\n") == 2


def test_this_build_is_the_parent_and_its_start_time() -> None:
    ident = notices.build_identity()
    assert ident is not None
    pid, _, start = ident.partition("-")
    assert int(pid) == os.getppid() and int(start) > 0


def test_saying_a_warning_sweeps_stamps_older_than_a_day(clean_env: Path) -> None:
    warned = Path(layout.tmp_path(str(clean_env / ".cache" / "kache"), layout.WARNED))
    warned.mkdir(parents=True)
    old, recent = warned / "old.1-1", warned / "recent.2-2"
    old.touch()
    recent.touch()
    past = time.time() - notices.STAMP_MAX_AGE_SECS - 60
    os.utime(old, (past, past))
    notices.warn_once("something new", suffix="")
    assert not old.exists() and recent.exists()


SAY = "from kache.engine import notices; notices.warn_once('the thing', suffix='', store={store!r})"


def _env() -> dict[str, str]:
    """This environment, with the kache being tested importable from any directory (the
    Nix check phase tests the source tree: no kache is installed)."""
    root = str(Path(notices.__file__).resolve().parents[2])
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)}


def test_a_build_in_the_terminals_background_is_not_stopped_by_a_warning(clean_env: Path, tmp_path: Path) -> None:
    # `cargo build &` under `stty tostop`: a write to the terminal would stop the build
    # (SIGTTOU) until someone brings it to the foreground. The log has the warning.
    store = tmp_path / "store"
    argv = [sys.executable, "-c", SAY.format(store=str(store))]
    status, said = run_in_pty_background(argv, tmp_path, _env(), tmp_path / "out", timeout=60)
    assert status == 0, f"stopped by the terminal ({status})" if status == STOPPED else (tmp_path / "out").read_text()
    assert "the thing" not in said
    assert (store / "kache.log").read_text().count("kache: warning: the thing\n") == 1


def test_a_build_in_the_terminals_foreground_sees_the_warning_there(clean_env: Path, tmp_path: Path) -> None:
    store = tmp_path / "store"
    status, said = run_in_pty([sys.executable, "-c", SAY.format(store=str(store))], tmp_path, _env(), timeout=60)
    assert status == 0
    assert said == "kache: warning: the thing\n"
    assert (store / "kache.log").read_text().count("kache: warning: the thing\n") == 1
