# Evaluates nix/module.nix for tests/nix/test_module.py and prints JSON.
#
#   nix-instantiate --eval --strict --json tests/nix/eval.nix \
#     --arg host '"nixos"' --arg userConfig '{ services.kache.enable = true; }' [--arg libPath /path/to/nixpkgs/lib]
#
# With libPath, the real nixpkgs lib evaluates the module (lib.evalModules); without it,
# tests/nix/lib-double.nix (a TEST DOUBLE) does. `pkgs` is a stand-in either way: the
# package is a fake store path, and `formats.toml.generate` returns a fake store path
# that carries the settings it was given as JSON after "#settings=".
{
  host ? "nixos",
  userConfig ? { },
  libPath ? null,
  package ? "/nix/store/00000000000000000000000000000000-kache-0.1.0",
}:
let
  real = libPath != null;
  lib = if real then import libPath else import ./lib-double.nix;
  modulePath = ../../nix/module.nix;
  module = import modulePath;
  fakePackage = {
    outPath = package;
    name = "kache-0.1.0";
    type = "derivation";
    meta.mainProgram = "kache";
  };
  pkgs = {
    callPackage = _path: _args: fakePackage;
    formats.toml = _: {
      type =
        let
          value = lib.types.either lib.types.anything lib.types.anything;
        in
        lib.types.attrsOf value;
      generate = name: value: "/nix/store/11111111111111111111111111111111-${name}#settings=${builtins.toJSON value}";
    };
  };
  osOptions = if host == "darwin" then { launchd = { }; } else { systemd = { }; };

  doubled =
    let
      declared = (module { config = throw "the option tree must not depend on config"; inherit lib pkgs; options = osOptions; }).options;
      cfg = lib.evalOptions "" declared userConfig null;
      out = (module { config = cfg; inherit lib pkgs; options = osOptions; }).config;
    in
    {
      config = let r = lib.resolve out; in if (r._type or "") == "absent" then { } else r;
      options = lib.describe "" declared.services.kache;
      kache = cfg.services.kache;
    };

  evaluated =
    let
      stubs =
        { lib, ... }:
        {
          options = {
            environment = {
              systemPackages = lib.mkOption { type = lib.types.listOf lib.types.package; default = [ ]; };
              etc = lib.mkOption { type = lib.types.attrsOf (lib.types.attrsOf lib.types.anything); default = { }; };
              variables = lib.mkOption { type = lib.types.attrsOf lib.types.str; default = { }; };
            }
            // lib.optionalAttrs (host != "darwin") {
              sessionVariables = lib.mkOption { type = lib.types.attrsOf lib.types.str; default = { }; };
            };
            warnings = lib.mkOption { type = lib.types.listOf lib.types.str; default = [ ]; };
          }
          // (
            if host == "darwin" then
              {
                launchd.agents = lib.mkOption { type = lib.types.attrsOf lib.types.anything; default = { }; };
                launchd.envVariables = lib.mkOption { type = lib.types.attrsOf lib.types.str; default = { }; };
              }
            else
              {
                systemd.user.services = lib.mkOption { type = lib.types.attrsOf lib.types.anything; default = { }; };
              }
          );
          config._module.args.pkgs = pkgs;
        };
      # imported twice, by path, as a configuration may: the module system keeps one
      e = lib.evalModules { modules = [ modulePath modulePath stubs userConfig ]; };
      docs = lib.filter (o: lib.hasPrefix "services.kache." o.name) (lib.optionAttrSetToDocList e.options);
    in
    {
      config =
        { inherit (e.config) environment warnings; }
        // (if host == "darwin" then { inherit (e.config) launchd; } else { inherit (e.config) systemd; });
      options = lib.listToAttrs (
        map (o: {
          name = lib.removePrefix "services.kache." o.name;
          value = {
            inherit (o) type;
            default = o.default.text or null;
            description = o.description or "";
          };
        }) docs
      );
      kache = e.config.services.kache;
    };

  result = if real then evaluated else doubled;
in
{
  inherit (result) config options;
  settings = result.kache.settings;
  systemPackages = map (p: p.outPath or p) (result.config.environment.systemPackages or [ ]);
}
// {
  config = removeAttrs result.config [ "environment" ] // {
    environment = removeAttrs (result.config.environment or { }) [ "systemPackages" ];
  };
}
