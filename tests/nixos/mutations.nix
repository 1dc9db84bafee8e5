# Mutations of the generated units, each taking away one protection the checks of case `full`
# must notice: with any of these added, that case has to fail.
{ lib }:

let
  without =
    path: setting:
    lib.setAttrByPath (
      path
      ++ [
        (if setting == "RequiresMountsFor" then "unitConfig" else "serviceConfig")
        setting
      ]
    ) (lib.mkForce [ ]);
in
{
  daemon-requires-mounts-for = without [ "systemd" "user" "services" "datapunk" ] "RequiresMountsFor";
  db-setup-requires-mounts-for = without [ "systemd" "services" "datapunk-db-setup" ] "RequiresMountsFor";
  backup-requires-mounts-for = without [ "systemd" "services" "datapunk-backup" ] "RequiresMountsFor";
  container-requires-mounts-for = without [
    "systemd"
    "services"
    "podman-datapunk-postgres"
  ] "RequiresMountsFor";
  daemon-load-credential = without [ "systemd" "user" "services" "datapunk" ] "LoadCredential";
  db-setup-load-credential = without [ "systemd" "services" "datapunk-db-setup" ] "LoadCredential";
  backup-load-credential = without [ "systemd" "services" "datapunk-backup" ] "LoadCredential";
}
