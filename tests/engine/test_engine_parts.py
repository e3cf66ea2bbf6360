"""Small parts of the engine on their own: notices (warnings said once, the replay) and
the miss path's helpers in kache.engine.record."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from kache.engine import notices, outputs, record
from kache.store import layout


def test_a_warning_is_said_once_per_interval_and_goes_to_the_store_log(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture) -> None:
    env = {"HOME": str(tmp_path), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    store = tmp_path / "store"
    notices.warn_once("the sky fell", env, store=str(store))
    notices.warn_once("the sky fell", env, store=str(store))
    notices.warn_once("another thing", env, store=str(store), suffix="")
    log = Path(layout.wrapper_log_path(store)).read_text()
    assert log.count("kache: warning: the sky fell; running rustc directly") == 1
    assert "kache: warning: another thing\n" in log
    assert capfd.readouterr().err == ""  # never on rustc's stderr: cargo would keep it with the unit


def test_the_replay_goes_where_rustc_wrote(capfd: pytest.CaptureFixture) -> None:
    notices.write_replay('{"artifact":"x"}\n', "warning: w\n")
    out = capfd.readouterr()
    assert (out.out, out.err) == ('{"artifact":"x"}\n', "warning: w\n")


def test_one_compile_per_cheap_key(tmp_path: Path) -> None:
    (tmp_path / "locks").mkdir()
    store = SimpleNamespace(root=str(tmp_path))
    first, second, other = (record.KeyLock(store, k) for k in ("a" * 64, "a" * 64, "b" * 64))  # type: ignore[arg-type]
    assert first.acquire()
    assert not second.acquire(timeout=0.05) and second.waited
    assert other.acquire(timeout=0.05) and not other.waited
    first.release()
    assert second.acquire(timeout=1)
    second.release()
    other.release()


def test_only_outputs_sharing_a_blob_inode_are_unlinked_before_rustc(tmp_path: Path) -> None:
    blob, linked, plain = tmp_path / "blob", tmp_path / "linked.rlib", tmp_path / "plain.rlib"
    blob.write_bytes(b"b")
    os.link(blob, linked)
    plain.write_bytes(b"p")
    outputs.unlink_shared_outputs([str(linked), str(plain), str(tmp_path / "missing")])
    assert not linked.exists() and plain.exists() and blob.exists()


def test_the_real_compile_gets_kache_remaps_first_and_incremental_as_settings_say() -> None:
    from kache.engine import argv as A

    rc = A.parse(["rustc", "--crate-name", "c", "--crate-type", "lib", "src/lib.rs", "--out-dir", "o",
                  "-C", "incremental=target/inc", "--remap-path-prefix", "/mine=/theirs"], {})
    norm = SimpleNamespace(remap_flags=lambda: ["--remap-path-prefix", "/ws=/kache-ws"])
    c = SimpleNamespace(rustc=rc, norm=norm, keep_incremental=False)
    cmd = record.compiler_command(c)  # type: ignore[arg-type]
    assert cmd[:3] == ["rustc", "--remap-path-prefix", "/ws=/kache-ws"]
    assert "incremental=target/inc" not in cmd
    assert cmd.index("/mine=/theirs") > cmd.index("/ws=/kache-ws")  # the user's own remap wins (last)
    c.keep_incremental = True
    assert "incremental=target/inc" in record.compiler_command(c)  # type: ignore[arg-type]
