from __future__ import annotations

import json

import pytest

from kache.cli import main


def checks(capsys: pytest.CaptureFixture[str]) -> dict[str, dict]:
    main(["doctor", "--json"])
    return {c["name"]: c for c in json.loads(capsys.readouterr().out)["checks"]}


def test_doctor_checks_a_reachable_remote(s3_env: dict[str, str], tmp_path, monkeypatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("KACHE_CACHE_DIR", str(tmp_path / "store"))
    remote = checks(capsys)["remote"]
    assert remote["status"] == "ok"
    assert remote["detail"] == f"s3://{s3_env['KACHE_S3_BUCKET']}/artifacts answers (credentials from env)"
    assert s3_env["KACHE_S3_SECRET_KEY"] not in json.dumps(remote)


def test_doctor_reports_a_missing_bucket_without_leaking_credentials(
        s3_env: dict[str, str], tmp_path, monkeypatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("KACHE_CACHE_DIR", str(tmp_path / "store"))
    monkeypatch.setenv("KACHE_S3_BUCKET", "no-such-bucket-here")
    remote = checks(capsys)["remote"]
    assert remote["status"] == "fail" and "no-such-bucket-here" in remote["detail"]
    assert s3_env["KACHE_S3_SECRET_KEY"] not in json.dumps(remote)
    assert s3_env["KACHE_S3_ACCESS_KEY"] not in json.dumps(remote)
