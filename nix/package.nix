# kache as a Python application. The version is read from kache/__init__.py, the one
# place it is written.
{
  lib,
  python3Packages,
  cargo,
  rustc,
}:
let
  initLines = lib.splitString "\n" (builtins.readFile ../kache/__init__.py);
  versionLine = lib.findFirst (lib.hasPrefix "__version__") (throw "no __version__ in kache/__init__.py") initLines;
  version = builtins.head (builtins.match ''__version__ = "([^"]+)"'' versionLine);
  ignored = [ ".git" ".venv" "result" "target" ".pytest_cache" ".hypothesis" "__pycache__" ];
in
python3Packages.buildPythonApplication {
  pname = "kache";
  inherit version;
  pyproject = true;

  src = lib.cleanSourceWith {
    src = ../.;
    filter = path: _type: !(builtins.elem (baseNameOf path) ignored);
  };

  build-system = [ python3Packages.setuptools ];

  dependencies = with python3Packages; [
    blake3
    boto3
    click
    jsonschema
    textual
    tomlkit
    zstandard
  ];

  nativeCheckInputs =
    (with python3Packages; [
      hypothesis
      moto
      pytest-textual-snapshot
      pytest-timeout
      pytestCheckHook
    ])
    ++ [
      cargo
      rustc
    ];

  # The tests run the installed `kache` (as cargo's RUSTC_WRAPPER) and real cargo builds.
  preCheck = ''
    export PATH="$out/bin:$PATH"
  '';

  # Tests that run nix-instantiate or systemd-analyze need tools the build sandbox
  # does not have; they are checked by the flake's module checks instead.
  disabledTestPaths = [ "tests/nix" ];

  pythonImportsCheck = [
    "kache"
    "kache.wrapper"
    "kache.cli"
  ];

  meta = {
    description = "Content-addressed build cache for Rust, used as cargo's RUSTC_WRAPPER";
    homepage = "https://github.com/kunobi-ninja/kache";
    license = lib.licenses.asl20;
    mainProgram = "kache";
    platforms = lib.platforms.unix;
  };
}
