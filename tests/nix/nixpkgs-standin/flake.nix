# A STAND-IN for nixpkgs, for `nix flake check --no-build --override-input nixpkgs
# path:<copy of this dir with lib/ added>`: the real nixpkgs `lib` (copied in by
# tests/nix/test_flake.py from KACHE_NIXPKGS_LIB) and stub packages whose derivations
# evaluate but are never built. It checks the flake's structure and its module checks.
{
  outputs =
    { self }:
    let
      lib = import ./lib;
      systems = [
        "x86_64-linux"
        "aarch64-linux"
        "x86_64-darwin"
        "aarch64-darwin"
      ];
      stub =
        system: name: extra:
        derivation {
          inherit name system;
          builder = "/bin/sh";
          args = [
            "-c"
            "echo stand-in > $out"
          ];
        }
        // extra;
      packagesFor =
        system:
        let
          pkgs = {
            inherit lib system;
            stdenv.isLinux = lib.hasSuffix "linux" system;
            callPackage =
              f: args:
              let
                fn = if builtins.isFunction f then f else import f;
              in
              fn (builtins.intersectAttrs (builtins.functionArgs fn) pkgs // args);
            python3Packages =
              lib.genAttrs [
                "blake3" "boto3" "click" "jsonschema" "textual" "tomlkit" "zstandard" "hypothesis" "moto"
                "pytest-textual-snapshot" "pytest-timeout" "pytestCheckHook" "setuptools" "pytest"
              ] (n: stub system n { })
              // {
                buildPythonApplication =
                  attrs:
                  assert attrs.pyproject;
                  stub system "${attrs.pname}-${attrs.version}" { inherit (attrs) meta version; };
              };
            python3.withPackages = f: stub system "python3-env" { deps = f pkgs.python3Packages; };
            cargo = stub system "cargo" { };
            rustc = stub system "rustc" { };
            gcc = stub system "gcc" { };
            nix = stub system "nix" { };
            nixfmt-rfc-style = stub system "nixfmt" { meta.mainProgram = "nixfmt"; };
            mkShell = attrs: stub system "shell" { inherit (attrs) packages; };
            writeText = name: text: stub system name { inherit text; };
            formats.toml = _: {
              type = lib.types.attrsOf lib.types.anything;
              generate = name: value: stub system name { inherit value; };
            };
            testers.runNixOSTest = test: stub system "vm-test-${test.name}" { inherit (test) testScript; };
          };
        in
        pkgs;
    in
    {
      inherit lib;
      legacyPackages = lib.genAttrs systems packagesFor;
    };
}
