# datapunkd and datapunk, with their manual pages, shell completions and the systemd units
# of systemd/ (as user units, pointing at this package). `withSandbox` adds datapunk-sandbox,
# the stand-in for the providers that the VM test uses.
{
  lib,
  stdenv,
  rustPlatform,
  installShellFiles,
  coreutils,
  libnotify,
  util-linux,
  withSandbox ? false,
}:

let
  manifest = lib.importTOML ./Cargo.toml;
in
rustPlatform.buildRustPackage {
  pname = "datapunk";
  inherit (manifest.workspace.package) version;

  # What cargo needs to build the workspace, and the units; the Nix files stay out, so that
  # editing them does not rebuild the programs.
  src = lib.fileset.toSource {
    root = ./.;
    fileset = lib.fileset.unions [
      ./Cargo.toml
      ./Cargo.lock
      ./crates
      ./benches
      ./systemd
      (lib.fileset.difference ./tests ./tests/nixos)
    ];
  };

  cargoLock.lockFile = ./Cargo.lock;

  cargoBuildFlags = [
    "--package"
    "datapunk-cli"
    "--package"
    "datapunk-daemon"
  ]
  ++ lib.optionals withSandbox [
    "--package"
    "datapunk-sandbox"
  ];

  # The tests need PostgreSQL, a D-Bus session with GNOME Keyring and journald running, which
  # a build sandbox has not: `scripts/test` runs them, and the flake's VM test the whole.
  doCheck = false;

  nativeBuildInputs = [ installShellFiles ];

  postInstall = ''
    mkdir -p $out/lib/systemd/user
    for unit in systemd/*.service systemd/*.timer; do
      substitute "$unit" "$out/lib/systemd/user/''${unit#systemd/}" \
        --replace-quiet /usr/bin/datapunk "$out/bin/datapunk" \
        --replace-quiet /usr/bin/logger ${lib.getExe' util-linux "logger"} \
        --replace-quiet /usr/bin/notify-send ${lib.getExe' libnotify "notify-send"} \
        --replace-quiet /bin/mkdir ${lib.getExe' coreutils "mkdir"} \
        --replace-quiet /bin/kill ${lib.getExe' coreutils "kill"}
    done
  ''
  + lib.optionalString (stdenv.buildPlatform.canExecute stdenv.hostPlatform) ''
    $out/bin/datapunk generate man man
    installManPage man/*.1
    installShellCompletion --cmd datapunk \
      --bash <($out/bin/datapunk generate completions bash) \
      --fish <($out/bin/datapunk generate completions fish) \
      --zsh <($out/bin/datapunk generate completions zsh)
  '';

  meta = {
    description = "Keeps your calendar, contacts and listening history in your own PostgreSQL database";
    homepage = "https://github.com/datapunk/datapunk";
    license = lib.licenses.agpl3Plus;
    mainProgram = "datapunk";
    platforms = lib.platforms.linux;
  };
}
