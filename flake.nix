{
  description = "kache: a content-addressed build cache for Rust, used as cargo's RUSTC_WRAPPER";

  # nixpkgs is the only input, so the whole flake evaluates offline against a stand-in.
  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixpkgs-unstable";

  outputs =
    { self, nixpkgs }:
    let
      inherit (nixpkgs) lib;
      systems = [
        "x86_64-linux"
        "aarch64-linux"
        "x86_64-darwin"
        "aarch64-darwin"
      ];
      forAllSystems = f: lib.genAttrs systems (system: f system nixpkgs.legacyPackages.${system});
      # A module is exported as a function (Nix 2.8's flake check rejects bare paths).
      module = import ./nix/module.nix;

      # The module evaluated alone, with stand-ins for the options of the host OS it
      # writes to: checks its option tree, types and the config it produces.
      evalModule =
        pkgs: host: userConfig:
        lib.evalModules {
          modules = [
            module
            userConfig
            (
              { lib, ... }:
              {
                options = {
                  environment = {
                    systemPackages = lib.mkOption { type = lib.types.listOf lib.types.package; };
                    etc = lib.mkOption { type = lib.types.attrsOf (lib.types.attrsOf lib.types.anything); };
                    variables = lib.mkOption { type = lib.types.attrsOf lib.types.str; };
                  };
                }
                // (
                  if host == "darwin" then
                    { launchd.user.agents = lib.mkOption { type = lib.types.attrsOf lib.types.anything; }; }
                  else
                    { systemd.user.services = lib.mkOption { type = lib.types.attrsOf lib.types.anything; }; }
                );
                config._module.args.pkgs = pkgs;
              }
            )
          ];
        };
    in
    {
      overlays.default = final: _prev: { kache = final.callPackage ./nix/package.nix { }; };

      packages = forAllSystems (
        _system: pkgs: rec {
          kache = pkgs.callPackage ./nix/package.nix { };
          default = kache;
        }
      );

      apps = forAllSystems (
        system: _pkgs: rec {
          kache = {
            type = "app";
            program = lib.getExe self.packages.${system}.kache;
          };
          default = kache;
        }
      );

      nixosModules = {
        kache = module;
        default = module;
      };
      # Not a standard flake output (nix only warns); the name nix-darwin users expect.
      darwinModules = {
        kache = module;
        default = module;
      };

      devShells = forAllSystems (
        _system: pkgs: {
          default = pkgs.mkShell {
            packages = [
              (pkgs.python3.withPackages (
                ps: with ps; [
                  blake3
                  boto3
                  click
                  hypothesis
                  jsonschema
                  moto
                  pytest
                  pytest-textual-snapshot
                  pytest-timeout
                  textual
                  tomlkit
                  zstandard
                ]
              ))
              pkgs.cargo
              pkgs.rustc
              pkgs.nix
              pkgs.nixfmt-rfc-style
            ];
          };
        }
      );

      formatter = forAllSystems (_system: pkgs: pkgs.nixfmt-rfc-style);

      checks = forAllSystems (
        system: pkgs:
        let
          settings = {
            cache.local_max_size = "20GiB";
            cache.compression_level = 7;
            cache.remote.bucket = "build-cache";
          };
          nixos = evalModule pkgs "nixos" {
            services.kache = {
              enable = true;
              daemon.enable = true;
              inherit settings;
            };
          };
          darwin = evalModule pkgs "darwin" {
            services.kache = {
              enable = true;
              daemon.enable = true;
              inherit settings;
            };
          };
          toJSONFile = name: value: pkgs.writeText name (builtins.toJSON value);
        in
        {
          package = self.packages.${system}.kache;
          module-nixos = toJSONFile "kache-module-nixos.json" {
            inherit (nixos.config.environment) variables;
            service = nixos.config.systemd.user.services.kache;
          };
          module-darwin = toJSONFile "kache-module-darwin.json" {
            inherit (darwin.config.environment) variables;
            agent = darwin.config.launchd.user.agents.kache;
          };
        }
        // lib.optionalAttrs pkgs.stdenv.isLinux {
          vm = pkgs.testers.runNixOSTest {
            name = "kache";
            nodes.machine =
              { pkgs, ... }:
              {
                imports = [ self.nixosModules.kache ];
                services.kache = {
                  enable = true;
                  package = self.packages.${system}.kache;
                  daemon.enable = true;
                  settings.cache.local_max_size = "2GiB";
                };
                users.users.alice.isNormalUser = true;
                environment.systemPackages = [
                  pkgs.cargo
                  pkgs.rustc
                  pkgs.gcc
                ];
                virtualisation.memorySize = 2048;
              };
            testScript = ''
              import json
              machine.wait_for_unit("multi-user.target")
              machine.succeed("cp -r ${./tests/fixtures/ws} /tmp/ws && chmod -R u+w /tmp/ws && chown -R alice /tmp/ws")
              build = "su - alice -c 'cd /tmp/ws && cargo build --offline'"
              machine.succeed(build)
              machine.succeed("su - alice -c 'cd /tmp/ws && cargo clean'")
              machine.succeed(build)
              machine.succeed("su - alice -c '/tmp/ws/target/debug/kc-app' | grep -q LOUD")
              stats = json.loads(machine.succeed("su - alice -c 'kache stats --json'"))
              assert stats["hits"] >= 4, stats
            '';
          };
        }
      );
    };
}
