# kache as a Python application. The version is read from kache/__init__.py, the one
# place it is written.
#
# The check phase runs a fast subset of the tests that holds in the build sandbox (no
# network, HOME not writable, moto without its server extra, no TUI snapshots, which
# depend on textual's exact version): the whole suite is CI's job. CI rehearses this
# phase with exactly these inputs (.ci/rehearse-nix-check).
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
in
python3Packages.buildPythonApplication {
  pname = "kache";
  inherit version;
  pyproject = true;

  # What the package and its check phase read, and nothing else: an edit to the docs,
  # the benchmarks or the flake does not rebuild it.
  src = lib.fileset.toSource {
    root = ../.;
    fileset = lib.fileset.unions [
      ../pyproject.toml
      ../README.md
      ../LICENSE
      ../kache
      ../schema
      ../tests
    ];
  };

  build-system = [ python3Packages.setuptools ];

  # The native client (kache/native/client.rs): a small program that asks the daemon and
  # hands everything else to this kache; it finds each user's store when it runs. Built
  # here with this rustc; the module makes it RUSTC_WRAPPER when the daemon runs.
  nativeBuildInputs = [ rustc ];
  postInstall = ''
    PYTHONPATH="$out/${python3Packages.python.sitePackages}:$PYTHONPATH" HOME="$TMPDIR" \
      python -m kache daemon client --kache "$out/bin/kache" --output "$out/bin/kache-client" --rustc rustc
  '';

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
      pytest
      pytest-timeout
    ])
    ++ [
      cargo
      rustc
    ];

  # The tests run the installed `kache` (as cargo's RUSTC_WRAPPER in the few real
  # builds kept here).
  checkPhase = ''
    runHook preCheck
    export PATH="$out/bin:$PATH"
    python -m pytest -p no:cacheprovider -q -m "not e2e and not faults and not concurrency" --ignore=tests/nix --ignore=tests/tui --ignore=tests/remote --ignore=tests/differential --ignore=tests/faults --ignore=tests/e2e --ignore=tests/correctness --ignore=tests/daemon/test_daemon_remote.py --ignore=tests/security/test_credentials.py --ignore=tests/test_docs.py --ignore=tests/test_architecture.py --ignore=tests/test_generated.py --ignore=tests/test_action.py tests
    runHook postCheck
  '';

  pythonImportsCheck = [
    "kache"
    "kache.wrapper"
    "kache.engine"
    "kache.cli"
  ];

  meta = {
    description = "Content-addressed build cache for Rust, used as cargo's RUSTC_WRAPPER";
    license = lib.licenses.asl20;
    mainProgram = "kache";
    platforms = lib.platforms.unix;
  };
}
