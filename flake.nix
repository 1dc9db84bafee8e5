{
  description = "Datapunk: your calendar, contacts and listening history in your own PostgreSQL database";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-25.11";

  outputs =
    { self, nixpkgs }:
    let
      inherit (nixpkgs) lib;
      systems = [
        "x86_64-linux"
        "aarch64-linux"
      ];
      forEachSystem = f: lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
    in
    {
      packages = forEachSystem (pkgs: {
        default = pkgs.callPackage ./package.nix { };
      });

      # The module, with this flake's package as the default of services.datapunk.package.
      nixosModules.default =
        { lib, pkgs, ... }:
        {
          imports = [ ./nixos-module ];
          services.datapunk.package =
            lib.mkDefault
              self.packages.${pkgs.stdenv.hostPlatform.system}.default;
        };

      checks = forEachSystem (pkgs: {
        vm = pkgs.testers.runNixOSTest (import ./tests/nixos/vm.nix { inherit self; });
      });

      devShells = forEachSystem (pkgs: {
        default = pkgs.mkShell {
          inputsFrom = [ self.packages.${pkgs.stdenv.hostPlatform.system}.default ];
          packages = with pkgs; [
            cargo
            clippy
            rustc
            rustfmt
            postgresql
            gnome-keyring
            libsecret
            dbus
            gnupg
            pass
            openssl
            jq
            nix
          ];
        };
      });
    };
}
