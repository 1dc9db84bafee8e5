# Evaluates the module with nixpkgs' lib, the stub NixOS options and the stand-in pkgs, for one
# case of ./cases.nix, and either checks it or renders its units:
#
#   nix-instantiate --eval --strict tests/nixos/eval.nix \
#     --argstr nixpkgsLib "$NIXPKGS_LIB" --argstr case full [--argstr mutation NAME] \
#     [--argstr output units --json]
#
# The checks' result forces the whole configuration (bar `_module`), so that an error anywhere
# in it fails the case even where no check looks. A failed check throws with every failure.
{
  nixpkgsLib,
  case,
  mutation ? "",
  output ? "checks",
}:

let
  lib = import nixpkgsLib;
  pkgs = import ./pkgs.nix { inherit lib; };
  render = import ./render.nix { inherit lib; };
  cases = import ./cases.nix { inherit lib pkgs; };
  mutations = import ./mutations.nix { inherit lib; };

  chosen = cases.${case} or (throw "no case `${case}`; cases: ${toString (lib.attrNames cases)}");
  evaluated = lib.evalModules {
    modules = [
      ./stubs.nix
      ../../nixos-module
      { _module.args.pkgs = pkgs; }
    ]
    ++ chosen.modules
    ++ lib.optional (mutation != "") (
      mutations.${mutation}
        or (throw "no mutation `${mutation}`; mutations: ${toString (lib.attrNames mutations)}")
    );
  };
  inherit (evaluated) config;

  checks = chosen.checks config;
  failed = lib.filter (check: !check.ok) checks;
  describe =
    check:
    "  - ${check.name}"
    + lib.optionalString (check ? got) ": got ${builtins.toJSON check.got}";
  mutated = lib.optionalString (mutation != "") " with mutation `${mutation}`";
  counted = "${toString (lib.length failed)} of ${toString (lib.length checks)}";

  units = {
    "datapunk.service" = render.service config.systemd.user.services.datapunk;
    "datapunk-db-setup.service" = render.service config.systemd.services.datapunk-db-setup;
    "datapunk-backup.service" = render.service config.systemd.services.datapunk-backup;
    "datapunk-backup.timer" = render.timer config.systemd.timers.datapunk-backup;
  };
in
if output == "units" then
  units
else if failed != [ ] then
  throw ''
    case `${case}`${mutated}: ${counted} checks failed:
    ${lib.concatMapStringsSep "\n" describe failed}''
else
  {
    passed = lib.length checks;
    configuration = removeAttrs config [ "_module" ];
  }
