from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import tomlkit

from kache.cli import main
from kache.selfexec import kache_executable
from kache.store.store import Store
from tests.support.entries import add_entry


def doctor(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict]:
    code = main(["doctor", "--json", *args])
    return code, json.loads(capsys.readouterr().out)


def by_name(doc: dict) -> dict[str, dict]:
    return {c["name"]: c for c in doc["checks"]}


def test_doctor_flags_sccache_and_fix_repairs_it(store_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cargo_config = Path(os.environ["CARGO_HOME"]) / "config.toml"
    cargo_config.write_text('[build]\nrustc-wrapper = "sccache"  # old\njobs = 3\n')
    sccache = Path(os.environ["XDG_CACHE_HOME"]) / "sccache"
    _sccache_cache(sccache)
    bashrc = Path(os.environ["HOME"]) / ".bashrc"
    bashrc.write_text("export PATH=$PATH:/opt/bin\nexport RUSTC_WRAPPER=sccache\n")
    code, doc = doctor(capsys)
    assert code == 1
    checks = by_name(doc)
    assert checks["cargo wrapper"]["status"] == "fail"
    assert "sccache" in checks["cargo wrapper"]["detail"]
    assert checks["shell start-up"]["detail"] == f"{bashrc}:2: export RUSTC_WRAPPER=sccache"
    code, doc = doctor(capsys, "--fix", "--purge-sccache")
    assert by_name(doc)["cargo wrapper"]["status"] == "ok"
    doc_toml = tomlkit.parse(cargo_config.read_text())
    assert doc_toml["build"]["rustc-wrapper"] == kache_executable() and doc_toml["build"]["jobs"] == 3
    assert not sccache.exists()
    assert any("(3 file(s), 2.0 KiB), freeing 2.0 KiB" in f for f in doc["fixed"])
    assert bashrc.read_text().endswith("export RUSTC_WRAPPER=sccache\n")  # shell files are never edited
    assert code == 0


def _sccache_cache(root: Path) -> None:
    """What sccache's local disk cache looks like (src/cache/disk.rs): entries sharded by
    the first two hex digits of their key, a preprocessor cache the same way, a temp file
    at the top; 2 KiB in all."""
    key = "ab" + "3f" * 31
    (root / "a" / "b").mkdir(parents=True)
    (root / "a" / "b" / key).write_bytes(b"z" * 1024)
    (root / "preprocessor" / "0" / "c").mkdir(parents=True)
    (root / "preprocessor" / "0" / "c" / ("0c" + "1" * 62)).write_bytes(b"p" * 512)
    (root / ".sccachetmpXy12ab").write_bytes(b"t" * 512)


def test_purge_sccache_leaves_a_directory_with_other_files_alone(store_env: Path, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """SCCACHE_DIR naming a directory that holds anything sccache does not make (a
    thesis, a symbolic link): nothing is deleted, the refusal names what was unexpected
    and doctor exits 1. It used to delete whatever SCCACHE_DIR named."""
    monkeypatch.chdir(tmp_path)
    target = tmp_path / "x"
    _sccache_cache(target)
    (target / "thesis.tex").write_text("\\chapter{One}\n")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("mine")
    (target / "a" / "b" / "cd").symlink_to(outside)
    monkeypatch.setenv("SCCACHE_DIR", str(target))
    before = sorted(str(p) for p in target.rglob("*"))
    code, doc = doctor(capsys, "--fix", "--purge-sccache", "--yes")
    assert code == 1 and doc["ok"] is False
    assert sorted(str(p) for p in target.rglob("*")) == before
    assert (target / "thesis.tex").read_text() == "\\chapter{One}\n" and (outside / "keep").exists()
    [refusal] = doc["not_fixed"]
    assert refusal.startswith(f"sccache: left {target} as it is: it does not look like sccache's local disk cache")
    assert "thesis.tex" in refusal and "a/b/cd (a symbolic link)" in refusal
    assert not any(f.startswith("sccache") for f in doc["fixed"])

    (target / "thesis.tex").unlink()
    (target / "a" / "b" / "cd").unlink()
    link = tmp_path / "link"
    link.symlink_to(target)
    monkeypatch.setenv("SCCACHE_DIR", str(link))  # the directory itself a symbolic link: not followed
    code, doc = doctor(capsys, "--fix", "--purge-sccache", "--yes")
    assert code == 1 and "is a symbolic link" in doc["not_fixed"][0] and target.is_dir() and link.is_symlink()

    monkeypatch.setenv("SCCACHE_DIR", str(target))  # sccache's alone now: deleted
    code, doc = doctor(capsys, "--fix", "--purge-sccache", "--yes")
    assert code == 0 and not target.exists() and (outside / "keep").exists()
    assert f"sccache: deleted {target} (3 file(s), 2.0 KiB), freeing 2.0 KiB" in doc["fixed"]
    code, doc = doctor(capsys, "--fix", "--purge-sccache", "--yes")  # gone: said as it is
    assert f"sccache: nothing to delete: no cache directory at {target}" in doc["fixed"]


def test_purge_sccache_asks_in_a_terminal(store_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from kache.cli import root

    monkeypatch.chdir(tmp_path)
    target = tmp_path / "sccache"
    _sccache_cache(target)
    monkeypatch.setenv("SCCACHE_DIR", str(target))
    monkeypatch.setattr("kache.cli.doctor._interactive", lambda: True)
    result = CliRunner().invoke(root, ["doctor", "--fix", "--purge-sccache"], input="n\n")
    assert f"Delete sccache's cache {target} (3 file(s), 2.0 KiB)? [y/N]" in result.output
    assert f"not fixed sccache: left {target} as it is (not confirmed)" in result.output
    assert result.exit_code == 1 and target.is_dir()
    result = CliRunner().invoke(root, ["doctor", "--fix", "--purge-sccache"], input="y\n")
    assert f"fixed sccache: deleted {target} (3 file(s), 2.0 KiB)" in result.output and not target.exists()


def test_doctor_reports_a_missing_blob_and_a_corrupt_index(store_env: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    store = Store(str(store_env))
    entry = add_entry(store, "serde", blobs=[b"a" * 10, b"b" * 20])
    os.chmod(store.blob_path(entry.meta["files"][0]["hash"]), 0o644)
    os.unlink(store.blob_path(entry.meta["files"][0]["hash"]))
    store.close()
    code, doc = doctor(capsys)
    index = by_name(doc)["store index"]
    assert code == 1 and index["status"] == "fail" and "missing" in index["detail"]
    code, doc = doctor(capsys, "--fix")
    assert by_name(doc)["store index"]["status"] in ("ok", "warn")  # the other blob may be an orphan
    assert Store(str(store_env)).entries() == []

    db = store_env / "index.db"
    for suffix in ("-wal", "-shm"):
        Path(str(db) + suffix).unlink(missing_ok=True)
    db.write_bytes(b"not a database" * 50)
    code, doc = doctor(capsys)
    assert code == 1 and by_name(doc)["store index"]["status"] == "fail"
    assert db.read_bytes().startswith(b"not a database")  # doctor alone changes nothing
    code, doc = doctor(capsys, "--fix")
    assert by_name(doc)["store index"]["status"] == "ok"
    assert any("moved the corrupt index aside" in f for f in doc["fixed"])


def test_doctor_human_output_has_one_line_per_check(store_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main(["doctor"])
    out = capsys.readouterr().out
    for name in ("kache on PATH", "cargo wrapper", "config", "store writable", "store index", "free disk",
                 "daemon", "rustc"):
        assert f"  {name}: " in out


def test_doctor_reports_an_altered_blob_and_fix_removes_its_entry(store_env: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    store = Store(str(store_env))
    bad = add_entry(store, "serde", blobs=[b"a" * 64])
    good = add_entry(store, "log", blobs=[b"b" * 64])
    path = store.blob_path(bad.meta["files"][0]["hash"])
    os.chmod(path, 0o644)
    Path(path).write_bytes(b"c" * 64)  # same size, other bytes
    store.close()
    code, doc = doctor(capsys)
    index = by_name(doc)["store index"]
    assert code == 1 and "content does not match its hash" in index["detail"]
    code, doc = doctor(capsys, "--fix")
    assert by_name(doc)["store index"]["status"] == "ok"
    assert [e.key for e in Store(str(store_env)).entries()] == [good.key]
    assert not os.path.exists(path)


def test_doctor_fixes_a_store_others_can_read(store_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = Store(str(store_env))
    store.totals()  # opens (creates) the index
    store.close()
    os.chmod(store_env, 0o755)
    os.chmod(store_env / "index.db", 0o644)
    code, doc = doctor(capsys)
    check = by_name(doc)["store private"]
    assert check["status"] == "warn" and "0755" in check["detail"]
    code, doc = doctor(capsys, "--fix")
    assert by_name(doc)["store private"]["status"] == "ok"
    assert store_env.stat().st_mode & 0o777 == 0o700
    assert (store_env / "index.db").stat().st_mode & 0o777 == 0o600


def test_doctor_verify_rehashes_blobs_whose_stamp_was_put_back(store_env: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    """An alteration that keeps size and mtime passes the cheap stamp check; --verify
    re-hashes every blob and --fix --verify removes it."""
    store = Store(str(store_env))
    bad = add_entry(store, "serde", blobs=[b"a" * 64])
    path = store.blob_path(bad.meta["files"][0]["hash"])
    st = os.stat(path)
    os.chmod(path, 0o644)
    Path(path).write_bytes(b"c" * 64)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    store.close()
    assert by_name(doctor(capsys)[1])["store index"]["status"] == "ok"
    code, doc = doctor(capsys, "--verify")
    assert code == 1 and "content does not match its hash" in by_name(doc)["store index"]["detail"]
    doctor(capsys, "--fix", "--verify")
    assert Store(str(store_env)).entries() == []


def test_doctor_fix_says_what_the_wrapper_was_and_is_now(store_env: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """The whole --fix output: the checks after the repair, then each repair saying what
    was there before and what is there now (it used to print "(now 'sccache')" for the
    value it had just replaced)."""
    monkeypatch.chdir(tmp_path)
    exe = kache_executable()
    cargo_config = Path(os.environ["CARGO_HOME"]) / "config.toml"
    cargo_config.write_text('[build]\nrustc-wrapper = "/usr/bin/sccache"\n')
    store_env.mkdir(mode=0o700)
    assert main(["doctor", "--fix"]) == 0
    lines = capsys.readouterr().out.splitlines()
    varying = {"kache on PATH", "free disk", "rustc"}  # this machine's PATH, disk and toolchain
    checks = [line for line in lines if not line.startswith(("      fix: ", "fixed "))]
    assert [line.split(":", 1)[0].split(None, 1)[1] for line in checks] == [
        "kache on PATH", "cargo wrapper", "config", "store writable", "store private", "same filesystem",
        "store index", "free disk", "daemon", "rustc"]
    assert [line for line in lines if line.split(":", 1)[0].split(None, 1)[-1] not in varying
            and not line.startswith("      fix: ")] == [
        f"ok    cargo wrapper: cargo runs {exe} (from {cargo_config})",
        "ok    config: valid (defaults)",
        f"ok    store writable: {store_env}",
        f"ok    store private: {store_env} is mode 0700 (only you can read it)",
        f"ok    same filesystem: store and {tmp_path} share a filesystem (hits are hardlinks)",
        "ok    store index: empty store (no builds yet)",
        "ok    daemon: not running (needed only with a remote or the native client)",
        f"fixed cargo wrapper: {cargo_config}: [build] rustc-wrapper was '/usr/bin/sccache' (sccache), now {exe!r}"]


def test_doctor_on_a_fresh_account_creates_nothing_others_can_read(clean_env: Path, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """Under umask 022, on a HOME with no store and no config: doctor does not create the
    store by looking (it used to make it 0755 and then warn that others can read it), and
    what init creates (the config dir and file) is owner-only."""
    monkeypatch.chdir(tmp_path)
    cache = clean_env / ".cache"
    store = cache / "kache"
    old = os.umask(0o022)
    try:
        main(["doctor"])
        out = capsys.readouterr().out
        assert not cache.exists()
        assert (f"ok    store writable: {store} does not exist yet: the first build creates it there, owner-only "
                f"({clean_env} is writable)\n") in out
        assert "store private" not in out and "other local users" not in out
        assert main(["init", "--yes", "--no-service"]) == 0
        main(["doctor", "--fix"])
    finally:
        os.umask(old)
    capsys.readouterr()
    config = clean_env / ".config" / "kache" / "config.toml"
    assert (config.parent.stat().st_mode & 0o777, config.stat().st_mode & 0o777) == (0o700, 0o600)
    assert not cache.exists()


def test_doctor_names_the_environment_variable_that_wins_and_fix_does_not_claim_it(
        store_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """RUSTC_WRAPPER=sccache in the environment wins over every cargo config file: doctor
    says so and what to do; --fix writes nothing it would have to call "fixed" (it used to
    say `kache doctor --fix` points cargo's config at kache, again and again)."""
    monkeypatch.chdir(tmp_path)
    exe = kache_executable()
    cargo_config = Path(os.environ["CARGO_HOME"]) / "config.toml"
    cargo_config.write_text('[build]\nrustc-wrapper = "/usr/bin/sccache"\n')
    monkeypatch.setenv("RUSTC_WRAPPER", "/usr/bin/sccache")
    code, doc = doctor(capsys, "--fix")
    check = by_name(doc)["cargo wrapper"]
    assert code == 1 and check["status"] == "fail"
    assert check["detail"] == (f"cargo runs sccache as its wrapper: it sets '/usr/bin/sccache' (from environment "
                               f"variable RUSTC_WRAPPER, which wins over {cargo_config}), not kache")
    assert check["fix"] == (f"unset RUSTC_WRAPPER (set in your environment: check your shell profile) or set it to "
                            f"{exe}; while it is set it wins over every cargo config file, {cargo_config} included; "
                            f"then `kache doctor --fix` sets {cargo_config} too (it names '/usr/bin/sccache' now)")
    assert not any(f.startswith("cargo wrapper") for f in doc["fixed"])
    assert cargo_config.read_text() == '[build]\nrustc-wrapper = "/usr/bin/sccache"\n'

    monkeypatch.setenv("RUSTC_WRAPPER", "")  # set but empty: cargo runs no wrapper, whatever the files say
    check = by_name(doctor(capsys)[1])["cargo wrapper"]
    assert check["status"] == "warn" and check["detail"].startswith(
        "cargo runs rustc without a wrapper: it is set but empty (from environment variable RUSTC_WRAPPER")

    monkeypatch.delenv("RUSTC_WRAPPER")  # the file decides now, and --fix sets it
    code, doc = doctor(capsys, "--fix")
    assert by_name(doc)["cargo wrapper"]["detail"] == f"cargo runs {exe} (from {cargo_config})"
    assert any(f.startswith("cargo wrapper: ") for f in doc["fixed"])


def test_doctor_names_the_project_config_that_wins(store_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """A workspace's .cargo/config.toml (found from the working directory upward) wins over
    $CARGO_HOME/config.toml: doctor names the file and the edit; --fix leaves it (and
    says nothing is fixed) and exits 1."""
    exe = kache_executable()
    ws = tmp_path / "ws"
    (ws / ".cargo").mkdir(parents=True)
    project = ws / ".cargo" / "config.toml"
    project.write_text('[build]\nrustc-wrapper = "sccache"\n')
    (ws / "src").mkdir()
    monkeypatch.chdir(ws / "src")
    cargo_config = Path(os.environ["CARGO_HOME"]) / "config.toml"
    code, doc = doctor(capsys, "--fix")
    check = by_name(doc)["cargo wrapper"]
    assert code == 1 and check["status"] == "fail"
    assert check["detail"] == (f"cargo runs sccache as its wrapper: it sets 'sccache' (from {project}, which wins "
                               f"over {cargo_config}), not kache")
    assert check["fix"] == (f'edit {project}: [build] rustc-wrapper = "sccache": set it to "{exe}", or remove it '
                            f"so that {cargo_config} applies; then `kache doctor --fix` sets {cargo_config} too (it "
                            "names no wrapper now)")
    assert project.read_text() == '[build]\nrustc-wrapper = "sccache"\n'
    assert not any(f.startswith("cargo wrapper") for f in doc["fixed"])


def test_doctor_counts_cargo_home_once_when_the_project_is_under_home(
        store_env: Path, clean_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """~/.cargo/config.toml is found again walking up from ~/proj: it is still the file
    --fix may write, not a project's file that wins over it."""
    (clean_env / "proj").mkdir()
    monkeypatch.chdir(clean_env / "proj")
    cargo_config = Path(os.environ["CARGO_HOME"]) / "config.toml"
    cargo_config.write_text('[build]\nrustc-wrapper = "sccache"\n')
    code, doc = doctor(capsys, "--fix")
    assert by_name(doc)["cargo wrapper"]["status"] == "ok"
    assert any(f.startswith("cargo wrapper: ") for f in doc["fixed"])


def test_doctor_wants_the_daemon_when_the_native_client_is_cargos_wrapper(
        store_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Without a remote the daemon is optional for kache, not for kache-client: without it
    the client hands every call to kache (it used to say "only needed with a remote")."""
    monkeypatch.chdir(tmp_path)
    assert by_name(doctor(capsys)[1])["daemon"] == {
        "name": "daemon", "status": "ok", "detail": "not running (needed only with a remote or the native client)",
        "fix": ""}
    cargo_config = Path(os.environ["CARGO_HOME"]) / "config.toml"
    cargo_config.write_text(f'[build]\nrustc-wrapper = "{tmp_path / "kache-client"}"\n')
    assert by_name(doctor(capsys)[1])["daemon"] == {
        "name": "daemon", "status": "warn",
        "detail": f"not running: kache-client, cargo's wrapper (from {cargo_config}), hands every call to kache "
                  "(slower hits)",
        "fix": "start it with `kache daemon start` or install the service (`kache daemon install`)"}
