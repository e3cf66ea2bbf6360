# NixOS and nix-darwin module for kache, the Rust build cache.
#
# The same file works on both: a systemd user service on NixOS, a launchd user agent on
# nix-darwin. `settings` follows RFC 42: freeform TOML written to /etc/kache/config.toml
# (named by KACHE_CONFIG), with typed options for every key of kache's schema. A typed
# option left at null means kache's built-in default; nulls are not written.
{
  config,
  lib,
  options,
  pkgs,
  ...
}:
let
  cfg = config.services.kache;
  toml = pkgs.formats.toml { };
  stripNulls = lib.filterAttrsRecursive (_: v: v != null);
  configFile = toml.generate "kache-config.toml" (stripNulls cfg.settings);
  kache = lib.getExe cfg.package;
  daemonEnvironment = {
    KACHE_LOG = cfg.daemon.logLevel;
    KACHE_CONFIG = "${configFile}";
  };
  # Which service manager exists is read from the option tree, not from pkgs, so that
  # the module does not depend on its own config (NixOS has systemd, nix-darwin launchd).
  hasSystemd = options ? systemd;
  hasLaunchd = options ? launchd;
in
{
  options.services.kache = {
    enable = lib.mkEnableOption "kache, a build cache for Rust (installs it and writes /etc/kache/config.toml)";

    package = lib.mkOption {
      type = lib.types.package;
      default = pkgs.callPackage ./package.nix { };
      defaultText = lib.literalExpression "pkgs.callPackage ./package.nix { }";
      description = "The kache package to install and run.";
    };

    rustcWrapper = lib.mkOption {
      type = lib.types.bool;
      default = true;
      example = false;
      description = ''
        Set `RUSTC_WRAPPER` to kache for every user, so that every cargo build on this
        machine goes through the cache.
      '';
    };

    daemon = {
      enable = lib.mkEnableOption "the kache daemon, a user service that serves cache hits and uploads to and prefetches from the remote cache";

      logLevel = lib.mkOption {
        type = lib.types.str;
        default = "kache=info";
        example = "kache=debug";
        description = "How much the daemon logs (its `KACHE_LOG`).";
      };
    };

    settings = lib.mkOption {
      default = { };
      example = lib.literalExpression ''
        {
          cache.local_max_size = "20GiB";
          cache.remote = {
            bucket = "build-cache";
            endpoint = "https://s3.example.com";
            profile = "ceph";
          };
        }
      '';
      description = ''
        kache's configuration, written to `/etc/kache/config.toml` and named by
        `KACHE_CONFIG`. Each user's own `~/.config/kache/config.toml` and `KACHE_*`
        variables still override it. Keys kache does not know yet are passed through.
        Do not put S3 credentials here: the file is world-readable in the Nix store;
        use an AWS profile or the daemon's environment instead.
      '';
      type = @SETTINGS_TYPE@;
    };
  };

  config = lib.mkIf cfg.enable (
    lib.mkMerge (
      [
        {
          environment.systemPackages = [ cfg.package ];
          environment.etc."kache/config.toml".source = configFile;
          environment.variables.KACHE_CONFIG = lib.mkDefault "/etc/kache/config.toml";
        }
        (lib.mkIf cfg.rustcWrapper {
          environment.variables.RUSTC_WRAPPER = lib.mkDefault kache;
        })
      ]
      ++ lib.optionals hasSystemd [
        (lib.mkIf cfg.daemon.enable {
          systemd.user.services.kache = {
            description = "kache build cache daemon";
            documentation = [ "https://github.com/kunobi-ninja/kache" ];
            wantedBy = [ "default.target" ];
            environment = daemonEnvironment;
            restartTriggers = [ configFile ];
            serviceConfig = {
              Type = "simple";
              ExecStart = "${kache} daemon run";
              Restart = "on-failure";
              RestartSec = "5s";
              UMask = "0077";
              NoNewPrivileges = true;
            };
          };
        })
      ]
      ++ lib.optionals hasLaunchd [
        (lib.mkIf cfg.daemon.enable {
          launchd.user.agents.kache.serviceConfig = {
            ProgramArguments = [
              kache
              "daemon"
              "run"
            ];
            EnvironmentVariables = daemonEnvironment;
            RunAtLoad = true;
            KeepAlive.SuccessfulExit = false;
            ProcessType = "Background";
            ThrottleInterval = 5;
          };
        })
      ]
    )
  );
}
