# NixOS and nix-darwin module for kache, the Rust build cache.
#
# The same file works on both: a systemd user service on NixOS, a launchd agent for
# every user on nix-darwin. `settings` follows RFC 42: freeform TOML written to
# /etc/kache/config.toml (named by KACHE_CONFIG, for shells and the daemon alike), with
# typed options for every key of kache's schema, checked as kache checks them. A typed
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
  configPath = "/etc/kache/config.toml";
  kache = lib.getExe cfg.package;
  # With the daemon, cargo's wrapper is the package's native client: it asks the daemon
  # (a hit without starting Python) and hands everything else to kache.
  wrapperProgram = if cfg.daemon.enable then "${cfg.package}/bin/kache-client" else kache;
  # What every session gets (shells, graphical sessions, IDEs).
  sessionEnvironment = {
    KACHE_CONFIG = lib.mkDefault configPath;
  }
  // lib.optionalAttrs cfg.rustcWrapper { RUSTC_WRAPPER = lib.mkDefault wrapperProgram; };
  daemonEnvironment = {
    KACHE_LOG = cfg.daemon.logLevel;
    KACHE_CONFIG = configPath;
  };
  # Settings that look like secrets (a key naming one, with a text value that is not a
  # path): the settings file is world-readable in the Nix store.
  secretLooking = map (f: f.path) (
    lib.filter (
      f:
      builtins.isString f.value
      && builtins.match "(/|~/).*" f.value == null
      && builtins.match ".*(secret|password|passwd|token|api_?key|access_?key|private_?key|credential).*" (
        lib.toLower f.path
      ) != null
    ) (settingLeaves "" cfg.settings)
  );
  settingLeaves =
    prefix: v:
    if builtins.isAttrs v then
      lib.concatLists (map (n: settingLeaves "${prefix}${n}." v.${n}) (builtins.attrNames v))
    else if builtins.isList v then
      lib.concatLists (map (x: settingLeaves prefix x) v)
    else
      [ { path = lib.removeSuffix "." prefix; value = v; } ];
  # launchd has no EnvironmentFile (kache reads it: --environment-file) and does not
  # expand ~ in log paths: a shell sends the output to the user's log, then becomes kache.
  agentArguments =
    [
      "/bin/sh"
      "-c"
      ''mkdir -p "$HOME/Library/Logs/kache" && exec >>"$HOME/Library/Logs/kache/daemon.log" 2>&1; exec "$@"''
      "kache-agent"
      kache
      "daemon"
      "run"
      "--service"
    ]
    ++ lib.optionals (cfg.daemon.environmentFile != null) [
      "--environment-file"
      cfg.daemon.environmentFile
    ];
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
        Set `RUSTC_WRAPPER` for every user and every session (shells, graphical
        sessions, IDEs: NixOS session variables; on nix-darwin shell variables and
        launchd's environment), so that every cargo build on this machine goes through
        the cache: the package's native client `kache-client` when the daemon runs
        (hits without starting Python), else `kache`.
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

      environmentFile = lib.mkOption {
        # absolute; no % (a systemd specifier) and no line break (it would end the line)
        type = lib.types.nullOr (lib.types.strMatching "/[^%\n]*");
        default = null;
        example = "/run/secrets/kache.env";
        description = ''
          A file of `NAME=value` lines read when the daemon starts, outside the Nix
          store: the remote's credentials (`KACHE_S3_ACCESS_KEY`, `KACHE_S3_SECRET_KEY`,
          or `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`). The
          daemon uploads with them for builds that bring no credentials of their own.
          Give it to agenix, sops-nix or a file only root and the users can read; never a
          Nix path (it would be copied to the world-readable store).
        '';
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
          warnings =
            lib.optional (secretLooking != [ ]) (
              "services.kache.settings: ${lib.concatStringsSep ", " secretLooking} look like secrets, and the "
              + "settings file is world-readable in the Nix store. Put credentials in "
              + "services.kache.daemon.environmentFile or an AWS profile instead."
            )
            ++ lib.optional (lib.hasPrefix "/nix/store/" (toString cfg.daemon.environmentFile)) (
              "services.kache.daemon.environmentFile is in the Nix store, which every user can read: "
              + "give a path outside it (agenix, sops-nix, a root-owned file)."
            );
        }
      ]
      ++ lib.optionals hasSystemd [
        {
          # PAM sets these for every session, graphical ones and their IDEs included (and
          # NixOS copies them to the shells' variables). To use another wrapper, set
          # rustcWrapper = false.
          environment.sessionVariables = sessionEnvironment;
        }
        (lib.mkIf cfg.daemon.enable {
          systemd.user.services.kache = {
            description = "kache build cache daemon";
            wantedBy = [ "default.target" ];
            environment = daemonEnvironment;
            # a switch that changes the settings or the package restarts it (NixOS
            # versions that restart user units; the daemon also re-reads a changed file)
            restartTriggers = [
              configFile
              cfg.package
            ];
            unitConfig = {
              ConditionUser = "!@system";
              # a daemon that cannot start (a bad user config) stops being retried
              StartLimitIntervalSec = 120;
              StartLimitBurst = 5;
            };
            serviceConfig = {
              Type = "simple";
              # --service: never exits when idle (it exits 0 only when asked to stop),
              # replaces a daemon a build started, stands by behind another service
              ExecStart = "${kache} daemon run --service";
              Restart = "on-failure";
              RestartSec = "5s";
              UMask = "0077";
              # Its runner compiles the builds' misses (rustc, proc macros, linkers) in
              # this unit: a stop must not kill them (the runner lets them finish), and
              # they must run with the rights of the builds they come from, so no
              # sandboxing here (the runner refuses a build whose no_new_privs, seccomp,
              # capabilities or groups differ from its own).
              KillMode = "process";
            }
            // lib.optionalAttrs (cfg.daemon.environmentFile != null) {
              EnvironmentFile = cfg.daemon.environmentFile;
            };
          };
        })
      ]
      ++ lib.optionals hasLaunchd [
        {
          environment.variables = sessionEnvironment;
        }
        {
          # GUI applications (IDEs) get launchd's environment, not the shell's.
          launchd.envVariables = sessionEnvironment;
        }
        (lib.mkIf cfg.daemon.enable {
          # launchd.agents: for every user who logs in (launchd.user.agents would need
          # system.primaryUser and serve that one user).
          launchd.agents.kache.serviceConfig = {
            Label = "org.nixos.kache";
            ProgramArguments = agentArguments;
            EnvironmentVariables = daemonEnvironment;
            RunAtLoad = true;
            KeepAlive.SuccessfulExit = false; # it exits 0 only when asked to stop
            ProcessType = "Standard"; # it serves hits builds wait for: no background throttling
            ThrottleInterval = 5;
          };
        })
      ]
    )
  );
}
