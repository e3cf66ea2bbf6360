"""nix/module.nix evaluated by real nix-instantiate (Debian's nix-bin).

Every evaluation runs with tests/nix/lib-double.nix (a test double of nixpkgs' lib,
always available) and, when KACHE_NIXPKGS_LIB names a nixpkgs `lib` directory (e.g. a
checkout of nix-community/nixpkgs.lib), with the real lib.evalModules as well.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import tomlkit

from kache import settings as S

ROOT = Path(__file__).resolve().parents[2]
EVAL = ROOT / "tests" / "nix" / "eval.nix"
NIX = shutil.which("nix-instantiate")
REAL_LIB = os.environ.get("KACHE_NIXPKGS_LIB")

if NIX is None:
    if os.environ.get("CI") == "true":
        raise RuntimeError("CI must install Debian's nix-bin (nix-instantiate); see .ci/run")
    pytest.skip("nix-instantiate is not installed (apt-get install nix-bin)", allow_module_level=True)

LIBS = ["double"] + (["real"] if REAL_LIB else [])


def nix_expr(value: object) -> str:
    """A Python value as a Nix expression (for --arg)."""
    from kache.gen.nix import nix_value

    return nix_value(value)


def evaluate(user_config: dict, *, host: str = "nixos", lib: str = "double", package: str | None = None,
             check: bool = True) -> subprocess.CompletedProcess[str]:
    cmd = [NIX, "--eval", "--strict", "--json", str(EVAL), "--arg", "host", json.dumps(host),
           "--arg", "userConfig", nix_expr(user_config)]
    if lib == "real":
        cmd += ["--arg", "libPath", REAL_LIB]
    if package:
        cmd += ["--arg", "package", json.dumps(package)]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if check and out.returncode != 0:
        raise AssertionError(out.stderr)
    return out


def result(user_config: dict, **kw: object) -> dict:
    return json.loads(evaluate(user_config, **kw).stdout)  # type: ignore[arg-type]


def settings_from(store_path: str) -> dict:
    """The settings the module handed to formats.toml.generate (see eval.nix)."""
    return json.loads(store_path.split("#settings=", 1)[1])


ENABLED = {"services": {"kache": {"enable": True, "daemon": {"enable": True}, "settings": {
    "cache": {"local_max_size": "20GiB", "compression_level": 7, "remote": {"bucket": "build-cache"},
              "extra_inputs": {"my-macros": {"env": ["DATABASE_URL"]}}, "some_future_key": True},
    "cc": {"flags": ["-O2"]}}}}}


def test_every_nix_file_parses() -> None:
    files = [ROOT / "flake.nix", *sorted((ROOT / "nix").glob("*.nix")), *sorted((ROOT / "tests" / "nix").glob("*.nix")),
             ROOT / "kache" / "gen" / "module.template.nix"]
    for f in files:
        if f.name == "module.template.nix":
            text = f.read_text().replace("@SETTINGS_TYPE@", "lib.types.attrs")
            out = subprocess.run([NIX, "--parse", "-E", text], capture_output=True, text=True)
        else:
            out = subprocess.run([NIX, "--parse", str(f)], capture_output=True, text=True)
        assert out.returncode == 0, f"{f}: {out.stderr}"


def test_flake_lock_pins_a_real_nixpkgs_for_the_flake_input() -> None:
    lock = json.loads((ROOT / "flake.lock").read_text())
    node = lock["nodes"]["nixpkgs"]
    assert node["locked"]["rev"] == "8c3cede7ddc26bd659d2d383b5610efbd2c7a16e"
    assert node["locked"]["narHash"].startswith("sha256-")
    assert node["original"] == {"owner": "NixOS", "ref": "nixpkgs-unstable", "repo": "nixpkgs", "type": "github"}
    assert 'inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixpkgs-unstable";' in (ROOT / "flake.nix").read_text()
    assert lock["nodes"]["root"]["inputs"] == {"nixpkgs": "nixpkgs"}  # nixpkgs is the only input


@pytest.mark.parametrize("lib", LIBS)
def test_option_tree_covers_every_schema_key(lib: str) -> None:
    options = result({}, lib=lib)["options"]
    options = {k: v for k, v in options.items() if "._module" not in k}
    for top in ("enable", "package", "rustcWrapper", "daemon.enable", "daemon.logLevel", "settings"):
        assert top in options
    for s in S.settings_table():
        opt = options.get(f"settings.{s.key}")
        assert opt is not None, f"settings.{s.key} is not an option of the module"
        assert opt["description"].startswith(" ".join(s.description.split())[:30])
        if s.env:
            assert f"`{s.env}`" in opt["description"]
    if lib == "double":
        assert options["settings.cache.compression_level"]["type"] == "nullOr ints.between 1 22"
        assert options["settings.cache.remote.type"]["type"] == 'nullOr enum ["s3"]'
        assert options["settings.cache.cache_executables"] == {
            **options["settings.cache.cache_executables"], "type": "nullOr bool", "default": None}
        assert options["daemon.logLevel"]["default"] == "kache=info"
        assert options["rustcWrapper"]["default"] is True
    else:
        assert "between 1 and 22" in options["settings.cache.compression_level"]["type"]
        assert options["settings.cache.compression_level"]["default"] == "null"


PKG = "/nix/store/00000000000000000000000000000000-kache-0.1.0"


@pytest.mark.parametrize("lib", LIBS)
def test_nixos_host_gets_wrapper_config_and_a_systemd_user_service(lib: str) -> None:
    r = result(ENABLED, lib=lib)
    assert r["systemPackages"] == [PKG]
    env = r["config"]["environment"]
    # for every session (PAM; NixOS copies them to the shells' variables), with the daemon
    # the package's native client (it hands the rest to kache)
    assert env["sessionVariables"] == {"KACHE_CONFIG": "/etc/kache/config.toml",
                                       "RUSTC_WRAPPER": f"{PKG}/bin/kache-client"}
    assert not env.get("variables")  # not twice: a user's own RUSTC_WRAPPER would conflict
    config_file = env["etc"]["kache/config.toml"]["source"]
    service = r["config"]["systemd"]["user"]["services"]["kache"]
    assert service["serviceConfig"]["ExecStart"] == f"{PKG}/bin/kache daemon run --service"
    # --service exits 0 only when asked to stop: restart on failure, and give up on one
    # that cannot start at all (a bad user config) instead of looping
    assert service["serviceConfig"]["Restart"] == "on-failure"
    assert service["unitConfig"] == {"ConditionUser": "!@system", "StartLimitIntervalSec": 120,
                                     "StartLimitBurst": 5}
    assert "EnvironmentFile" not in service["serviceConfig"]
    assert service["wantedBy"] == ["default.target"]
    # the same KACHE_CONFIG as shells, so the daemon sees the file a switch replaces
    assert service["environment"] == {"KACHE_CONFIG": "/etc/kache/config.toml", "KACHE_LOG": "kache=info"}
    assert service["restartTriggers"][0] == config_file and len(service["restartTriggers"]) == 2
    assert r["config"]["warnings"] == []
    assert "launchd" not in r["config"]


@pytest.mark.parametrize("lib", LIBS)
def test_darwin_host_gets_an_agent_for_every_user(lib: str) -> None:
    r = result(ENABLED, host="darwin", lib=lib)
    launchd = r["config"]["launchd"]
    assert "user" not in launchd  # launchd.user.agents would need system.primaryUser
    agent = launchd["agents"]["kache"]["serviceConfig"]
    assert agent["Label"] == "org.nixos.kache"
    # a shell only sends the output to the user's log (launchd does not expand ~), then
    # becomes kache, whose arguments are never shell text
    assert agent["ProgramArguments"][:2] == ["/bin/sh", "-c"]
    assert '>>"$HOME/Library/Logs/kache/daemon.log" 2>&1; exec "$@"' in agent["ProgramArguments"][2]
    assert agent["ProgramArguments"][3:] == ["kache-agent", f"{PKG}/bin/kache", "daemon", "run", "--service"]
    assert agent["EnvironmentVariables"] == {"KACHE_CONFIG": "/etc/kache/config.toml", "KACHE_LOG": "kache=info"}
    assert agent["RunAtLoad"] is True and agent["KeepAlive"] == {"SuccessfulExit": False}
    assert agent["ProcessType"] == "Standard"
    wanted = {"KACHE_CONFIG": "/etc/kache/config.toml", "RUSTC_WRAPPER": f"{PKG}/bin/kache-client"}
    assert launchd["envVariables"] == wanted  # GUI applications, IDEs
    assert r["config"]["environment"]["variables"] == wanted  # shells
    assert "systemd" not in r["config"]


@pytest.mark.parametrize("lib", LIBS)
@pytest.mark.parametrize("host", ["nixos", "darwin"])
def test_credentials_come_from_an_environment_file(lib: str, host: str) -> None:
    path = "/run/secrets/kache env $x;y'z"
    conf = {"services": {"kache": {"enable": True, "daemon": {"enable": True, "environmentFile": path}}}}
    r = result(conf, host=host, lib=lib)
    if host == "nixos":
        service = r["config"]["systemd"]["user"]["services"]["kache"]["serviceConfig"]
        assert service["EnvironmentFile"] == path
    else:  # kache reads it (never as shell code): an argument, not part of the shell text
        args = r["config"]["launchd"]["agents"]["kache"]["serviceConfig"]["ProgramArguments"]
        assert args[-2:] == ["--environment-file", path] and path not in args[2]
    assert r["config"]["warnings"] == []
    for bad in ("secrets.env", "/run/secrets/100%.env", "/run/a\nExecStartPre=/bin/evil"):
        out = evaluate({"services": {"kache": {"enable": True, "daemon": {"enable": True, "environmentFile": bad}}}},
                       host=host, lib=lib, check=False)
        assert out.returncode != 0 and "environmentFile" in out.stderr, bad
    in_store = {"services": {"kache": {"enable": True, "daemon": {
        "enable": True, "environmentFile": "/nix/store/0000-kache.env"}}}}
    [warning] = result(in_store, host=host, lib=lib)["config"]["warnings"]
    assert "environmentFile is in the Nix store" in warning


@pytest.mark.parametrize("lib", LIBS)
def test_secret_looking_settings_get_a_warning(lib: str) -> None:
    conf = {"services": {"kache": {"enable": True, "settings": {
        "cache": {"remote": {"bucket": "build-cache", "secret_key": "hunter2", "aws_access_key": "AKIA",
                             "credentials": "/home/u/.aws/credentials", "token": False}},
        "mirrors": [{"SecretAccessKey": "s3cr3t"}], "api": {"apikey": "k"}}}}}
    warnings = result(conf, lib=lib)["config"]["warnings"]
    assert len(warnings) == 1
    assert warnings[0].startswith("services.kache.settings: api.apikey, cache.remote.aws_access_key, "
                                  "cache.remote.secret_key, mirrors.SecretAccessKey look like secrets")
    assert "daemon.environmentFile" in warnings[0] and "hunter2" not in warnings[0]
    assert result(ENABLED, lib=lib)["config"]["warnings"] == []


@pytest.mark.parametrize("lib", LIBS)
def test_disabled_module_changes_nothing_and_switches_work(lib: str) -> None:
    r = result({}, lib=lib)
    assert r["systemPackages"] == []
    assert not r["config"]["environment"].get("variables")
    r = result({"services": {"kache": {"enable": True}}}, lib=lib)
    assert r["config"]["environment"]["sessionVariables"]["RUSTC_WRAPPER"] == f"{PKG}/bin/kache"  # no daemon
    r = result({"services": {"kache": {"enable": True, "rustcWrapper": False}}}, lib=lib)
    assert "RUSTC_WRAPPER" not in r["config"]["environment"]["sessionVariables"]
    assert not r["config"].get("systemd", {}).get("user", {}).get("services")  # daemon off by default


@pytest.mark.parametrize("lib", LIBS)
@pytest.mark.parametrize(
    ("settings", "option"),
    [
        ({"cache": {"compression_level": 99}}, "compression_level"),
        ({"cache": {"remote": {"type": "gcs"}}}, "type"),
        ({"cache": {"cache_executables": "yes"}}, "cache_executables"),
        ({"cache": {"s3_concurrency": 0}}, "s3_concurrency"),
        ({"cache": {"remote": {"endpoint": "minio:9000"}}}, "endpoint"),
        # checked as kache checks them (x-format), not only by type
        ({"cache": {"local_max_size": "banana"}}, "local_max_size"),
        ({"cache": {"local_max_size": "5 parsecs"}}, "local_max_size"),
        ({"cache": {"local_max_size": -1}}, "local_max_size"),
        ({"cache": {"local_store": "relative/dir"}}, "local_store"),
        ({"cache": {"local_store": "~someone/cache"}}, "local_store"),
        ({"cache": {"local_store": "${"}}, "local_store"),
        ({"cache": {"local_max_size": "2000PB"}}, "local_max_size"),  # more than kache's 1 EiB
        ({"cache": {"local_max_size": "99999999999999999999"}}, "local_max_size"),
        ({"cache": {"local_max_size": "1025PiB"}}, "local_max_size"),
    ],
)
def test_a_wrong_type_fails_evaluation(lib: str, settings: dict, option: str) -> None:
    out = evaluate({"services": {"kache": {"enable": True, "settings": settings}}}, lib=lib, check=False)
    assert out.returncode != 0
    assert option in out.stderr


@pytest.mark.parametrize("lib", LIBS)
@pytest.mark.parametrize("cache", [
    {"local_max_size": "512MiB"}, {"local_max_size": " 1.5 TB "}, {"local_max_size": "20gib"},
    {"local_max_size": 1000}, {"local_max_size": "7k"}, {"local_max_size": "1024PiB"},
    {"local_max_size": "0"}, {"local_max_size": "007.50 KB"}, {"local_store": "/var/cache/kache"},
    {"local_store": "~/.cache/kache"}, {"local_store": "$HOME/.cache/kache"}, {"local_store": "${HOME}/k"},
])
def test_what_kache_accepts_the_module_accepts(lib: str, cache: dict, tmp_path: Path, kache_exe: str) -> None:
    r = result({"services": {"kache": {"enable": True, "settings": {"cache": cache}}}}, lib=lib)
    written = settings_from(r["config"]["environment"]["etc"]["kache/config.toml"]["source"])
    path = tmp_path / "config.toml"
    path.write_text(tomlkit.dumps(written))
    out = subprocess.run([kache_exe, "config", "validate", str(path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


@pytest.mark.parametrize("lib", LIBS)
def test_written_settings_validate_against_the_schema(lib: str, tmp_path: Path, kache_exe: str) -> None:
    r = result(ENABLED, lib=lib)
    written = settings_from(r["config"]["environment"]["etc"]["kache/config.toml"]["source"])

    def has_null(v: object) -> bool:
        return v is None or (isinstance(v, dict) and any(has_null(x) for x in v.values())) or (
            isinstance(v, list) and any(has_null(x) for x in v))

    assert not has_null(written), "nulls must be stripped before TOML is written"
    assert written["cache"]["compression_level"] == 7 and written["cc"] == {"flags": ["-O2"]}
    path = tmp_path / "config.toml"
    path.write_text(tomlkit.dumps(written))
    out = subprocess.run([kache_exe, "config", "validate", str(path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout == f"ok: {path} is valid, with 2 warnings\n"  # cc and the future key
    assert "cache.some_future_key" in out.stderr  # unknown keys pass through, with a warning


def render_unit(service: dict) -> str:
    """A NixOS-style unit file from the module's systemd.user.services.kache."""
    def value(v: object) -> str:
        if isinstance(v, list):
            return " ".join(value(x) for x in v)
        return ("true" if v else "false") if isinstance(v, bool) else str(v)

    unit = [f"Description={service['description']}"] + [f"Documentation={d}" for d in service.get("documentation", [])]
    unit += [f"{k}={value(v)}" for k, v in sorted(service.get("unitConfig", {}).items())]
    svc = [f'Environment="{k}={v.split("#settings=")[0]}"' for k, v in sorted(service["environment"].items())]
    svc += [f"{k}={value(v)}" for k, v in sorted(service["serviceConfig"].items())]
    install = [f"WantedBy={t}" for t in service["wantedBy"]]
    return "\n".join(["[Unit]", *unit, "", "[Service]", *svc, "", "[Install]", *install, ""])


def test_rendered_systemd_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        if os.environ.get("CI") == "true":
            raise AssertionError("CI must have systemd-analyze (Debian's systemd)")
        pytest.skip("systemd-analyze is not installed")
    prefix = Path(sys.executable).parent.parent  # a real package dir with bin/kache
    r = result(ENABLED, package=str(prefix))
    service = r["config"]["systemd"]["user"]["services"]["kache"]
    unit = tmp_path / "kache.service"
    unit.write_text(render_unit(service))
    out = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr + unit.read_text()
    assert f"ExecStart={prefix}/bin/kache daemon run --service" in unit.read_text()


def every_setting() -> dict:
    """Every key of the schema with a value kache accepts (its first example, else its
    default, else a plain string)."""
    out: dict = {}
    for s in S.settings_table():
        value = (s.schema.get("examples") or [None])[0]
        if value is None:
            value = s.schema.get("default")
        if value in (None, ""):
            value = "x-value"
        node = out
        *parents, last = s.key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    return out


@pytest.mark.parametrize("lib", LIBS)
@pytest.mark.parametrize("host", ["nixos", "darwin"])
def test_every_option_set_evaluates_and_kache_accepts_what_is_written(
        lib: str, host: str, tmp_path: Path, kache_exe: str) -> None:
    conf = {"services": {"kache": {
        "enable": True, "rustcWrapper": True,
        "daemon": {"enable": True, "logLevel": "kache=debug", "environmentFile": "/run/secrets/kache.env"},
        "settings": every_setting()}}}
    r = result(conf, host=host, lib=lib)
    written = settings_from(r["config"]["environment"]["etc"]["kache/config.toml"]["source"])
    assert written == every_setting()
    assert r["config"]["warnings"] == []
    path = tmp_path / "config.toml"
    path.write_text(tomlkit.dumps(written))
    out = subprocess.run([kache_exe, "config", "validate", str(path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
