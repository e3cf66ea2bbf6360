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
      # The module as an attribute set that imports the file (Nix 2.8's flake check
      # rejects a bare path): `_file` names it in errors, and the module system imports a
      # `key` or a path once, so a configuration that imports it twice (directly and
      # through another flake) still evaluates.
      module = {
        _file = "${toString ./.}/nix/module.nix";
        key = "kache/nix/module.nix";
        imports = [ ./nix/module.nix ];
      };

      # The module evaluated alone, with stand-ins for the options of the host OS it
      # writes to: checks its option tree, types and the config it produces.
      evalModule =
        pkgs: host: userConfig:
        lib.evalModules {
          modules = [
            module
            module # imported twice, as a configuration may
            userConfig
            (
              { lib, ... }:
              {
                options = {
                  environment = {
                    systemPackages = lib.mkOption { type = lib.types.listOf lib.types.package; };
                    etc = lib.mkOption { type = lib.types.attrsOf (lib.types.attrsOf lib.types.anything); };
                    variables = lib.mkOption { type = lib.types.attrsOf lib.types.str; };
                  }
                  // lib.optionalAttrs (host != "darwin") {
                    sessionVariables = lib.mkOption { type = lib.types.attrsOf lib.types.str; };
                  };
                  warnings = lib.mkOption {
                    type = lib.types.listOf lib.types.str;
                    default = [ ];
                  };
                }
                // (
                  if host == "darwin" then
                    {
                      launchd.agents = lib.mkOption { type = lib.types.attrsOf lib.types.anything; };
                      launchd.envVariables = lib.mkOption { type = lib.types.attrsOf lib.types.str; };
                    }
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
            inherit (nixos.config.environment) sessionVariables;
            service = nixos.config.systemd.user.services.kache;
          };
          module-darwin = toJSONFile "kache-module-darwin.json" {
            inherit (darwin.config.environment) variables;
            inherit (darwin.config.launchd) envVariables;
            agent = darwin.config.launchd.agents.kache;
          };
        }
        // lib.optionalAttrs pkgs.stdenv.isLinux {
          # Boots NixOS with the module, MinIO as the remote and a lingering user (so the
          # user's systemd manager, and kache.service with it, start at boot); builds the
          # fixture twice as that user and shows hits served by the daemon and uploads.
          vm = pkgs.testers.runNixOSTest {
            name = "kache";
            nodes.machine =
              { pkgs, ... }:
              {
                imports = [ self.nixosModules.kache ];
                services.minio = {
                  enable = true;
                  rootCredentialsFile = pkgs.writeText "minio-root" ''
                    MINIO_ROOT_USER=kache-test
                    MINIO_ROOT_PASSWORD=kache-test-secret
                  '';
                };
                # credentials outside the settings, readable by alice alone
                environment.etc."kache/credentials.env" = {
                  text = ''
                    KACHE_S3_ACCESS_KEY=kache-test
                    KACHE_S3_SECRET_KEY=kache-test-secret
                  '';
                  mode = "0400";
                  user = "alice";
                };
                services.kache = {
                  enable = true;
                  package = self.packages.${system}.kache;
                  daemon.enable = true;
                  daemon.environmentFile = "/etc/kache/credentials.env";
                  settings.cache = {
                    local_max_size = "2GiB";
                    remote = {
                      bucket = "kache-vm";
                      endpoint = "http://127.0.0.1:9000";
                    };
                  };
                };
                users.users.alice = {
                  isNormalUser = true;
                  linger = true;
                };
                environment.systemPackages = [
                  pkgs.cargo
                  pkgs.rustc
                  pkgs.gcc
                  pkgs.minio-client
                ];
                virtualisation.memorySize = 2048;
              };
            testScript = ''
              import json
              machine.wait_for_unit("multi-user.target")
              machine.wait_for_unit("minio.service")
              machine.wait_for_open_port(9000)
              machine.succeed("mc alias set local http://127.0.0.1:9000 kache-test kache-test-secret")
              machine.succeed("mc mb local/kache-vm")
              machine.wait_for_unit("kache.service", "alice")
              machine.succeed("cp -r ${./tests/fixtures/ws} /tmp/ws && chmod -R u+w /tmp/ws && chown -R alice /tmp/ws")
              build = "su - alice -c 'cd /tmp/ws && cargo build --offline'"
              machine.succeed(build)
              machine.succeed("su - alice -c 'cd /tmp/ws && cargo clean'")
              machine.succeed(build)
              machine.succeed("su - alice -c '/tmp/ws/target/debug/kc-app' | grep -q LOUD")
              status = json.loads(machine.succeed("su - alice -c 'kache daemon --json'"))
              assert status["responding"] and status["hits_served"] >= 4, status
              machine.wait_until_succeeds("mc ls --recursive local/kache-vm | grep -q tar.zst")
              # the service stays past the idle timeout a daemon a build starts would use
              machine.succeed("sleep 5")
              machine.succeed("systemctl --user -M alice@ is-active kache.service")
            '';
          };
        }
      );
    };
}
