# A stand-in for nixpkgs with the few attributes the module uses. Packages are names in the
# store that nothing builds; the generated files keep their content in `text`, so that the
# tests can read what would be written, and their path depends on it.
{ lib }:

let
  inherit (lib) types;

  # The hash covers a file's text, so that a test can tell the text by the path.
  storePath =
    name: content:
    let
      hash = builtins.substring 0 32 (builtins.hashString "sha256" "${name}\n${content}");
    in
    "${builtins.storeDir}/${hash}-${name}";

  package =
    name: attrs:
    {
      type = "derivation";
      inherit name;
      outPath = storePath name (attrs.text or "");
    }
    // attrs;

  file = name: text: package name { inherit text; };

  tomlValue =
    types.oneOf [
      types.bool
      types.int
      types.float
      types.str
      types.path
      (types.attrsOf tomlValue)
      (types.listOf tomlValue)
    ]
    // {
      description = "TOML value";
    };
in
{
  coreutils = package "coreutils-9.7" { };
  gnupg = package "gnupg-2.4.8" { };
  systemd = package "systemd-258" { };
  postgresql_17 = package "postgresql-17.6" { version = "17.6"; };
  datapunk = package "datapunk-0.1.0" { version = "0.1.0"; };

  formats.toml = { }: {
    type = types.attrsOf tomlValue;
    generate = name: value: file name (builtins.toJSON value);
  };

  writeText = file;
  writeShellScript = name: text: file name "#!/bin/sh\n${text}";
  writeShellScriptBin = name: text: file name "#!/bin/sh\n${text}";
}
