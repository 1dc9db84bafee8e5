# services.datapunk: Datapunk's daemon in the desktop user's session, its PostgreSQL in a
# rootless Podman container (or the host's server), the data on a LUKS volume, least-privilege
# roles set up at boot, and encrypted backups on a timer.
#
# Secrets are only ever paths read at run time (`*File` options), handed to the units that
# need them with LoadCredential=; nothing secret is copied into the Nix store.
{
  config,
  lib,
  pkgs,
  ...
}:

let
  inherit (lib)
    literalExpression
    mkEnableOption
    mkIf
    mkMerge
    mkOption
    mkPackageOption
    types
    ;

  cfg = config.services.datapunk;
  settingsFormat = pkgs.formats.toml { };
  configFile = settingsFormat.generate "datapunk.toml" cfg.settings;

  volume = cfg.dataVolume;
  db = cfg.database;
  dbName = db.name;
  container = db.backend == "container";

  # The rootless container: its account, its unit and where its socket appears on the host.
  containerName = "datapunk-postgres";
  containerUnit = "podman-${containerName}.service";
  containerUser = db.container.user;
  # Only the account running the container and the members of the `datapunk` group may reach
  # the socket (the directory is 0750); scram passwords then decide who logs in as what.
  socketParent = "/run/datapunk-db";
  socketDir = if container then "${socketParent}/postgresql" else "/run/postgresql";
  dataDir = "${volume.mountPoint}/postgresql";
  databaseUnit = if container then containerUnit else "postgresql.service";
  postgresql =
    if container then db.container.postgresqlPackage else config.services.postgresql.package;

  datapunk = "${cfg.package}/bin/datapunk --config ${configFile}";

  # Credential names: files in $CREDENTIALS_DIRECTORY of the units that load them.
  appPasswordCredential = "datapunk-app-password";
  backupPasswordCredential = "datapunk-backup-password";
  clientSecretCredential = provider: "datapunk-${provider}-client-secret";

  enabledIntegrations = lib.filterAttrs (_: integration: integration.enable) cfg.integrations;

  # The hardening every system unit of the module starts from. A unit that loosens one of these
  # says why next to it.
  hardening = {
    AmbientCapabilities = "";
    CapabilityBoundingSet = "";
    DevicePolicy = "closed";
    IPAddressDeny = "any";
    KeyringMode = "private";
    LockPersonality = true;
    MemoryDenyWriteExecute = true;
    NoNewPrivileges = true;
    PrivateDevices = true;
    PrivateIPC = true;
    PrivateMounts = true;
    PrivateNetwork = true;
    PrivateTmp = true;
    PrivateUsers = true;
    ProcSubset = "pid";
    ProtectClock = true;
    ProtectControlGroups = true;
    ProtectHome = true;
    ProtectHostname = true;
    ProtectKernelLogs = true;
    ProtectKernelModules = true;
    ProtectKernelTunables = true;
    ProtectProc = "invisible";
    ProtectSystem = "strict";
    RemoveIPC = true;
    # PostgreSQL is reached over its Unix socket only.
    RestrictAddressFamilies = [ "AF_UNIX" ];
    RestrictNamespaces = true;
    RestrictRealtime = true;
    RestrictSUIDSGID = true;
    SystemCallArchitectures = "native";
    SystemCallErrorNumber = "EPERM";
    SystemCallFilter = [
      "@system-service"
      "~@privileged @resources"
    ];
    # Files 0600 and directories 0700, whatever the manager's umask.
    UMask = "0077";
  };

  # What a user manager cannot apply: systemd.exec(5) and systemd.resource-control(5) mark
  # these as system services only (ProtectProc=, ProcSubset=, ProtectControlGroups=,
  # RemoveIPC=) or they need BPF programs that only the system manager may attach
  # (IPAddressDeny=, DevicePolicy=). Leaving them out keeps the unit honest about what it gets.
  userHardening = removeAttrs hardening [
    "DevicePolicy"
    "IPAddressDeny"
    "ProcSubset"
    "ProtectControlGroups"
    "ProtectProc"
    "RemoveIPC"
  ];

  # The environment of the module's system units running `datapunk`: their own state
  # directory (the audit anchor and spool) and runtime directory.
  commandEnvironment = name: {
    XDG_STATE_HOME = "/var/lib/${name}";
    XDG_RUNTIME_DIR = "/run/${name}";
  };

  # Datasets each provider offers, as `datapunk connect --datasets` names them.
  providerDatasets = {
    google = [
      "calendar"
      "contacts"
    ];
    microsoft = [
      "calendar"
      "contacts"
    ];
    spotify = [
      "recently-played"
      "saved-tracks"
      "playlists"
    ];
  };

  integrationOptions =
    provider:
    mkOption {
      description = "The ${provider} account Datapunk syncs from.";
      default = { };
      type = types.submodule {
        options = {
          enable = mkEnableOption "syncing from ${provider}";

          datasets = mkOption {
            type = types.nonEmptyListOf (types.enum providerDatasets.${provider});
            default = providerDatasets.${provider};
            defaultText = literalExpression (builtins.toJSON providerDatasets.${provider});
            example = lib.take 1 providerDatasets.${provider};
            description = ''
              The datasets to ask the account for. `datapunk-connect ${provider}` asks the
              person for exactly these when it connects the account; the daemon syncs those
              the person grants.
            '';
          };

          interval = mkOption {
            type = types.nullOr (types.ints.between 1 86400);
            default = null;
            example = 3600;
            description = ''
              Seconds between two syncs of each of this integration's datasets, give or take a
              tenth (`providers.${provider}.sync_interval_secs` in the daemon's configuration).
              `null` keeps the common interval, `settings.sync.interval_secs` (900 unless set).
            '';
          };

          clientId = mkOption {
            type = types.nullOr types.str;
            default = null;
            example = "1234567890-abc.apps.googleusercontent.com";
            description = ''
              The id of the OAuth client registered with ${provider} for Datapunk. Required
              when the integration is enabled.
            '';
          };

          clientSecretFile = mkOption {
            type = types.nullOr types.path;
            default = null;
            example = "/run/secrets/datapunk-${provider}-client-secret";
            description = ''
              A file holding the OAuth client's secret, for clients that have one. It is read
              at run time by the daemon's user manager and handed to `datapunkd` with
              `LoadCredential=`, so it must be readable by {option}`services.datapunk.user`
              and must not be in the Nix store.
            '';
          };
        };
      };
    };

  # Assertions that a secret's path is not in the Nix store, which every user can read.
  notInStore =
    path: value:
    let
      text = toString value;
    in
    {
      assertion = value == null || !lib.hasPrefix "${builtins.storeDir}/" text;
      message = ''
        ${path} is ${text}, in the Nix store, which every user of the machine can read:
        give the path of a file outside it (written by sops-nix, agenix or by hand).'';
    };

  secretPaths = [
    [
      "services.datapunk.dataVolume.keyFile"
      volume.keyFile
    ]
    [
      "services.datapunk.database.appPasswordFile"
      db.appPasswordFile
    ]
    [
      "services.datapunk.database.backupPasswordFile"
      db.backupPasswordFile
    ]
    [
      "services.datapunk.settings.database.password_file"
      (if container then null else cfg.settings.database.password_file or null)
    ]
    [
      "services.datapunk.settings.vault.master_key_file"
      (cfg.settings.vault.master_key_file or null)
    ]
    [
      "services.datapunk.settings.backup.passphrase_file"
      (cfg.settings.backup.passphrase_file or null)
    ]
    [
      "services.datapunk.settings.backup.password_file"
      (cfg.settings.backup.password_file or null)
    ]
  ]
  ++ lib.mapAttrsToList (provider: integration: [
    "services.datapunk.integrations.${provider}.clientSecretFile"
    integration.clientSecretFile
  ]) cfg.integrations
  ++ lib.mapAttrsToList (provider: settings: [
    "services.datapunk.settings.providers.${provider}.client_secret_file"
    (settings.client_secret_file or null)
  ]) (cfg.settings.providers or { });

  # `datapunk-connect PROVIDER`: connects an account with the configured datasets, inside a
  # transient user unit that loads the client secret as the daemon's unit does.
  connectCommand =
    let
      arm =
        provider: integration:
        let
          secret = "${clientSecretCredential provider}:${toString integration.clientSecretFile}";
          credential = lib.optional (
            integration.clientSecretFile != null
          ) "--property=LoadCredential=${secret}";
          command = [
            "${pkgs.systemd}/bin/systemd-run"
            "--user"
            # A terminal when there is one, the caller's pipes otherwise.
            "--pty"
            "--pipe"
            "--wait"
            "--collect"
            "--quiet"
          ]
          ++ credential
          ++ [
            "--"
            "${cfg.package}/bin/datapunk"
            "--config"
            "${configFile}"
            "connect"
            provider
            "--datasets"
            (lib.concatStringsSep "," integration.datasets)
          ];
        in
        ''
          ${provider}) shift; exec ${lib.escapeShellArgs command} "$@" ;;
        '';
      names = lib.concatStringsSep "|" (lib.attrNames enabledIntegrations);
    in
    pkgs.writeShellScriptBin "datapunk-connect" ''
      case "''${1-}" in
      ${lib.concatStrings (lib.mapAttrsToList arm enabledIntegrations)}
      *) echo "usage: datapunk-connect ${names} [--no-browser]" >&2; exit 2 ;;
      esac
    '';

  # The container's own authentication: the official image trusts every local connection
  # otherwise. Its administrator is the container's root, which is the Podman account on the
  # host (peer authentication sees user ids as the container's user namespace maps them);
  # Datapunk's roles log in with scram passwords, since peer authentication cannot see host
  # users across the namespace.
  containerHba = pkgs.writeText "datapunk-pg_hba.conf" ''
    local  all        postgres                          peer map=admin
    local  ${dbName}  datapunk_app,datapunk_reader      scram-sha-256
    local  ${dbName}  datapunk_backup                   scram-sha-256
  '';
  containerIdent = pkgs.writeText "datapunk-pg_ident.conf" ''
    admin  root      postgres
    admin  postgres  postgres
  '';

  # Directories the container needs on the host, made as root before it starts: the socket's
  # parent, group `datapunk`, and the data directory on the volume. Both are created only when
  # missing, since the image hands them to its postgres account when it starts.
  prepareContainer = pkgs.writeShellScript "datapunk-postgres-prepare" ''
    set -eu
    ${pkgs.coreutils}/bin/install -d -m 0750 -o ${containerUser} -g datapunk ${socketParent}
    for dir in ${socketDir} ${dataDir}; do
      [ -d "$dir" ] ||
        ${pkgs.coreutils}/bin/install -d -m 0700 -o ${containerUser} -g ${containerUser} "$dir"
    done
  '';
  prepareHostDataDir = pkgs.writeShellScript "datapunk-postgresql-prepare" ''
    set -eu
    dir=${config.services.postgresql.dataDir}
    [ -d "$dir" ] || ${pkgs.coreutils}/bin/install -d -m 0700 -o postgres -g postgres "$dir"
  '';
  hostDataOnVolume = lib.hasPrefix "${volume.mountPoint}/" config.services.postgresql.dataDir;

  # Waits up to a minute for the server to accept connections: the container counts as started
  # before PostgreSQL inside it listens.
  waitForServer = pkgs.writeShellScript "datapunk-wait-for-postgresql" ''
    for _ in $(${pkgs.coreutils}/bin/seq 60); do
      ${postgresql}/bin/pg_isready --quiet --host=${socketDir} --dbname=postgres && exit 0
      ${pkgs.coreutils}/bin/sleep 1
    done
    echo "PostgreSQL does not accept connections on ${socketDir}" >&2
    exit 1
  '';

  adminUrl = "host=${socketDir} user=postgres dbname=postgres";
  setupPassword =
    role: credential:
    "${datapunk} db password ${role} --password-file %d/${credential} --admin-url '${adminUrl}'";

  # What starts the daemon: the graphical session, unless a configuration adds to it.
  daemonTargets = config.systemd.user.services.datapunk.wantedBy;

  # With a passphrase, nothing opens the volume at boot: the first unit that needs it asks.
  onDemand = volume.device != null && volume.unlock == "passphrase";
in
{
  options.services.datapunk = {
    enable = mkEnableOption ''
      Datapunk, which keeps your calendar, contacts and listening history in your own
      PostgreSQL database'';

    package = mkPackageOption pkgs "datapunk" {
      extraDescription = ''
        It is not in nixpkgs: the flake's `nixosModules.default` sets this to the flake's
        package.'';
    };

    user = mkOption {
      type = types.str;
      example = "alice";
      description = ''
        The desktop account whose data Datapunk keeps. Its user manager runs `datapunkd` once
        it has logged in (the login unlocks the keyring), and the backups run as it.
      '';
    };

    settings = mkOption {
      type = types.submodule {
        freeformType = settingsFormat.type;
        options = {
          vault.backend = mkOption {
            type = types.enum [
              "secret-service"
              "pass"
              "encrypted-table"
            ];
            default = "secret-service";
            description = ''
              Where OAuth tokens and the per-integration data keys live: the desktop keyring
              through the Secret Service (which needs
              {option}`services.gnome.gnome-keyring.enable`), `pass`, or a table sealed under a
              master key.
            '';
          };
          log.level = mkOption {
            type = types.enum [
              "error"
              "warn"
              "info"
              "debug"
              "trace"
            ];
            default = "info";
            description = "How much `datapunkd` logs to the journal.";
          };
        };
      };
      default = { };
      example = literalExpression ''
        {
          log.level = "debug";
          vault.timeout_secs = 60;
        }
      '';
      description = ''
        The configuration of `datapunkd` and `datapunk`, rendered to TOML and installed as
        {file}`/etc/datapunk/config.toml`; `datapunk config example` prints every key. The
        module fills in `database`, `providers` and `backup` from the
        options below. No secret belongs here: name files instead, and keep them out of the
        Nix store.
      '';
    };

    dataVolume = {
      device = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "/dev/disk/by-uuid/4f6a1c2e-0b7d-4c55-9a41-2f3c9d1e8b70";
        description = ''
          The LUKS device holding Datapunk's data, opened after boot (stage 2) as
          {file}`/dev/mapper/''${name}` and mounted on {option}`mountPoint`. With `null` the
          module manages no volume, and the data sits on whatever file system holds
          {option}`mountPoint`.
        '';
      };

      name = mkOption {
        type = types.strMatching "[A-Za-z0-9_.-]+";
        default = "datapunk";
        description = "The name of the opened volume under {file}`/dev/mapper`.";
      };

      mountPoint = mkOption {
        type = types.strMatching "/.+[^/]";
        default = "/var/lib/datapunk";
        description = ''
          Where the volume is mounted. PostgreSQL's data directory is
          {file}`''${mountPoint}/postgresql`; every unit that touches it requires this mount,
          so nothing writes to the disk underneath while the volume is closed.
        '';
      };

      fsType = mkOption {
        type = types.str;
        default = "ext4";
        example = "btrfs";
        description = "The file system inside the LUKS container.";
      };

      unlock = mkOption {
        type = types.enum [
          "passphrase"
          "keyFile"
          "tpm2"
        ];
        default = "passphrase";
        description = ''
          How the volume is opened: `passphrase` asks for it (at boot, or when a unit that
          needs the volume is started); `keyFile` reads {option}`keyFile`; `tpm2` uses a key
          enrolled in the TPM with `systemd-cryptenroll --tpm2-device=auto`.
        '';
      };

      keyFile = mkOption {
        type = types.nullOr types.path;
        default = null;
        example = "/etc/keys/datapunk.key";
        description = ''
          The key file for `unlock = "keyFile"`, read when the volume is opened. It must not
          be in the Nix store.
        '';
      };
    };

    database = {
      name = mkOption {
        type = types.strMatching "[a-z_][a-z0-9_]{0,62}";
        default = "datapunk";
        description = "The name of the PostgreSQL database Datapunk keeps its data in.";
      };

      backend = mkOption {
        type = types.enum [
          "container"
          "host"
        ];
        default = "container";
        description = ''
          Where PostgreSQL runs. `container`: a server of Datapunk's own in a rootless Podman
          container run by {option}`container.user`, without a network, its data directory on
          the volume and its socket shared through a directory only the group `datapunk` can
          enter; the roles log in with scram passwords. `host`: the machine's
          {option}`services.postgresql`, with peer authentication mapping
          {option}`services.datapunk.user` to Datapunk's roles.
        '';
      };

      appPasswordFile = mkOption {
        type = types.nullOr types.path;
        default = null;
        example = "/run/secrets/datapunk-app-password";
        description = ''
          The container backend: a file holding the password of `datapunk_app` (and of
          `datapunk_reader`, whose commands log in with the same file). `datapunk-db-setup`
          loads it with `LoadCredential=` and gives the roles the password at every boot;
          `datapunkd` and the commands in the user's shell read it as
          `database.password_file`, so it must be readable by {option}`services.datapunk.user`.
          Not in the Nix store.
        '';
      };

      backupPasswordFile = mkOption {
        type = types.nullOr types.path;
        default = null;
        example = "/run/secrets/datapunk-backup-password";
        description = ''
          The container backend: a file holding the password of `datapunk_backup`, handed to
          `datapunk-db-setup` and `datapunk-backup` with `LoadCredential=`; `backup create`
          gives it to `pg_dump` in a private password file. Not in the Nix store.
        '';
      };

      container = {
        user = mkOption {
          type = types.str;
          default = "datapunk-postgres";
          description = ''
            The unprivileged account that runs the container with rootless Podman. Inside the
            container it is root, which administers the server through peer authentication.
          '';
        };

        image = mkOption {
          type = types.str;
          default = "docker.io/library/postgres:17";
          description = ''
            The PostgreSQL image. With {option}`imageStream` it must be the name and tag of the
            image that stream produces.
          '';
        };

        imageStream = mkOption {
          type = types.nullOr types.package;
          default = null;
          example = literalExpression ''
            pkgs.dockerTools.streamLayeredImage { name = "datapunk-postgres"; tag = "17"; ... }
          '';
          description = ''
            A Nix-built image streamed into Podman before the container starts, so that nothing
            is pulled from a registry: for machines without access to one, and for the VM test.
          '';
        };

        postgresqlPackage = mkPackageOption pkgs "postgresql_17" {
          extraDescription = ''
            Its client programs (`pg_dump`, `pg_isready`) talk to the container, so its major
            version must be the image's.
          '';
        };
      };
    };

    backup = {
      enable = mkEnableOption "encrypted backups of the database on a timer";

      startAt = mkOption {
        type = types.str;
        default = "daily";
        example = "*-*-* 03:00:00";
        description = ''
          When to back up, as a systemd calendar event. A run missed while the machine was off
          happens at the next boot; each run starts at a random moment of the hour after.
        '';
      };

      directory = mkOption {
        type = types.strMatching "/.+";
        default = "/var/backup/datapunk";
        description = ''
          Where the encrypted backups and their manifests are written, owned by
          {option}`services.datapunk.user` and readable by nobody else. It is off the volume
          on purpose: backups are encrypted, and should outlive it.
        '';
      };

      recipients = mkOption {
        type = types.listOf (types.strMatching "(0x)?[0-9A-Fa-f ]{40,80}");
        default = [ ];
        example = [ "0123456789ABCDEF0123456789ABCDEF01234567" ];
        description = ''
          The full fingerprints of the OpenPGP keys backups are encrypted to. Only their public
          parts are needed here, in {option}`recipientKeyFile`.
        '';
      };

      recipientKeyFile = mkOption {
        type = types.nullOr types.path;
        default = null;
        example = literalExpression "./datapunk-backup-key.asc";
        description = ''
          The recipients' public keys (`gpg --export --armor FINGERPRINT`), imported into a
          keyring of the backup service's own at each run. A public key is no secret: this file
          may be in the Nix store.
        '';
      };

      keepLast = mkOption {
        type = types.ints.positive;
        default = 14;
        description = ''
          How many backups `datapunk backup prune` keeps after each backup; the newest backup
          that verifies is kept in any case.
        '';
      };
    };

    integrations = lib.genAttrs (lib.attrNames providerDatasets) integrationOptions;
  };

  config = mkIf cfg.enable (mkMerge [
    {
      assertions = [
        {
          assertion = config.users.users ? ${cfg.user};
          message = "services.datapunk.user: the account `${cfg.user}` is not declared in users.users.";
        }
        {
          assertion =
            cfg.settings.vault.backend != "secret-service"
            || config.services.gnome.gnome-keyring.enable;
          message = ''
            services.datapunk.settings.vault.backend = "secret-service" keeps tokens and data keys
            in the desktop keyring: enable services.gnome.gnome-keyring.enable, or choose another
            backend.'';
        }
        {
          assertion = volume.unlock != "keyFile" || volume.keyFile != null;
          message = ''services.datapunk.dataVolume.unlock = "keyFile" needs services.datapunk.dataVolume.keyFile.'';
        }
        {
          assertion = !container || config.virtualisation.oci-containers.backend == "podman";
          message = ''
            services.datapunk.database.backend = "container" runs PostgreSQL with rootless Podman:
            set virtualisation.oci-containers.backend = "podman".'';
        }
        {
          assertion = !container || db.appPasswordFile != null;
          message = ''
            services.datapunk.database.appPasswordFile is needed with the container backend, where
            datapunk_app logs in with a password.'';
        }
        {
          assertion = !(container && cfg.backup.enable) || db.backupPasswordFile != null;
          message = ''
            services.datapunk.database.backupPasswordFile is needed for backups with the container
            backend, where datapunk_backup logs in with a password.'';
        }
      ]
      ++ map (pair: notInStore (lib.elemAt pair 0) (lib.elemAt pair 1)) secretPaths
      ++ lib.mapAttrsToList (provider: integration: {
        assertion = integration.clientId != null;
        message = "services.datapunk.integrations.${provider}.clientId is needed when the integration is enabled.";
      }) enabledIntegrations;

      warnings =
        lib.optional (volume.device == null) ''
          services.datapunk.dataVolume.device is null: no encrypted volume is managed, and
          Datapunk's data sits on whatever file system holds ${volume.mountPoint}.''
        ++ lib.optional (volume.device != null && volume.unlock == "passphrase") ''
          services.datapunk.dataVolume.unlock = "passphrase": nothing of Datapunk starts until the
          volume is opened, and Datapunk does not open it at boot. Run
          `systemctl start datapunk-db-setup.service`, which asks for the passphrase, then
          `systemctl --user start datapunk.service` as ${cfg.user}.''
        ++ lib.optional (lib.any (target: target != "graphical-session.target") daemonTargets) ''
          systemd.user.services.datapunk.wantedBy starts the daemon before ${cfg.user} logs in,
          when the keyring is still locked: nothing syncs until the login unlocks it.''
        ++ lib.optional (!container && volume.device != null && !hostDataOnVolume) ''
          services.datapunk.database.backend = "host" keeps Datapunk's tables in
          services.postgresql.dataDir (${config.services.postgresql.dataDir}), which is not on the
          encrypted volume: set services.postgresql.dataDir = "${dataDir}" to move the server
          there.'';

      services.datapunk.settings = {
        database = {
          mode = "external";
          name = dbName;
          conninfo = "host=${socketDir} user=datapunk_app dbname=${dbName}";
        }
        // lib.optionalAttrs container { password_file = toString db.appPasswordFile; };
        providers = lib.mapAttrs (
          provider: integration:
          lib.optionalAttrs (integration.interval != null) { sync_interval_secs = integration.interval; }
          // lib.optionalAttrs (integration.clientId != null) { client_id = integration.clientId; }
          // lib.optionalAttrs (integration.clientSecretFile != null) {
            client_secret_credential = clientSecretCredential provider;
          }
        ) enabledIntegrations;
        backup = mkIf cfg.backup.enable (
          {
            recipients = cfg.backup.recipients;
            dir = cfg.backup.directory;
          }
          # Loaded by datapunk-backup alone, and read only when `backup create` connects.
          // lib.optionalAttrs container { password_credential = backupPasswordCredential; }
        );
      };

      users.groups.datapunk.members = [ cfg.user ];

      environment.etc."datapunk/config.toml".source = configFile;
      environment.sessionVariables.DATAPUNK_CONFIG = "/etc/datapunk/config.toml";
      environment.systemPackages = [
        cfg.package
        connectCommand
      ];

      # The daemon, in the user's session: the login has unlocked the keyring by then.
      systemd.user.services.datapunk = {
        description = "Datapunk: your calendar, contacts and listening history in your own database";
        wantedBy = [ "graphical-session.target" ];
        partOf = [ "graphical-session.target" ];
        after = [ "graphical-session.target" ];
        unitConfig = {
          ConditionUser = cfg.user;
          Documentation = "https://github.com/datapunk/datapunk/tree/main/docs";
          RequiresMountsFor = [ volume.mountPoint ];
        };
        serviceConfig = userHardening // {
          Type = "notify";
          NotifyAccess = "main";
          ExecStart = "${cfg.package}/bin/datapunkd --config ${configFile}";
          ExecReload = "${pkgs.coreutils}/bin/kill -HUP $MAINPID";
          Restart = "on-failure";
          RestartSec = "5s";
          # 78: a bad configuration, 77: started as root; restarting fixes neither.
          RestartPreventExitStatus = "77 78";
          WatchdogSec = "60s";
          TimeoutStopSec = "5s";
          LoadCredential = lib.mapAttrsToList (
            provider: integration:
            "${clientSecretCredential provider}:${toString integration.clientSecretFile}"
          ) (lib.filterAttrs (_: i: i.clientSecretFile != null) enabledIntegrations);
          # The providers' APIs are on the internet.
          PrivateNetwork = false;
          RestrictAddressFamilies = [
            "AF_UNIX"
            "AF_INET"
            "AF_INET6"
          ];
          # Its state directory (the audit anchor, the spool) is in the home, the only place
          # it writes to besides its runtime directory; made before the sandbox is.
          ProtectHome = "read-only";
          ExecStartPre = "+${pkgs.coreutils}/bin/mkdir -p -m 0700 %h/.local/state/datapunk";
          ReadWritePaths = [ "%h/.local/state/datapunk" ];
          RuntimeDirectory = "datapunk";
          RuntimeDirectoryMode = "0700";
        };
      };

      # Roles, database, schema and, with the container, passwords: at every boot, before the
      # daemon needs them. Each step is idempotent.
      systemd.services.datapunk-db-setup = {
        description = "Datapunk: database roles, schema and migrations";
        wantedBy = lib.optional (!onDemand) "multi-user.target";
        requires = [ databaseUnit ];
        after = [ databaseUnit ];
        unitConfig.RequiresMountsFor = [ volume.mountPoint ];
        environment = commandEnvironment "datapunk-db-setup";
        serviceConfig = hardening // {
          Type = "oneshot";
          RemainAfterExit = true;
          # Peer authentication makes this account the server's administrator.
          User = if container then containerUser else "postgres";
          StateDirectory = "datapunk-db-setup";
          StateDirectoryMode = "0700";
          RuntimeDirectory = "datapunk-db-setup";
          RuntimeDirectoryMode = "0700";
          ExecStartPre = [ "${waitForServer}" ];
          ExecStart = [
            "${datapunk} db init --admin-url '${adminUrl}'"
            "${datapunk} db migrate --admin-url '${adminUrl}'"
          ]
          ++ lib.optionals container (
            [
              (setupPassword "app" appPasswordCredential)
              (setupPassword "reader" appPasswordCredential)
            ]
            ++ lib.optional (db.backupPasswordFile != null) (
              setupPassword "backup" backupPasswordCredential
            )
          );
          LoadCredential = lib.optionals container (
            [ "${appPasswordCredential}:${toString db.appPasswordFile}" ]
            ++ lib.optional (
              db.backupPasswordFile != null
            ) "${backupPasswordCredential}:${toString db.backupPasswordFile}"
          );
        };
      };
    }

    (mkIf (volume.device != null) {
      # Stage 2: opened after boot, never in the initrd, and a volume that stays closed does
      # not stop the boot (nofail); the units above wait for its mount instead. With a
      # passphrase nothing opens it at boot (noauto): the first unit that needs it asks.
      environment.etc.crypttab.text =
        let
          key =
            {
              passphrase = "none";
              keyFile = toString volume.keyFile;
              tpm2 = "-";
            }
            .${volume.unlock};
          options = [
            "luks"
            "nofail"
          ]
          ++ lib.optional onDemand "noauto"
          ++ lib.optional (volume.unlock == "tpm2") "tpm2-device=auto";
        in
        "${volume.name} ${volume.device} ${key} ${lib.concatStringsSep "," options}\n";

      fileSystems.${volume.mountPoint} = {
        device = "/dev/mapper/${volume.name}";
        inherit (volume) fsType;
        # Data only: nothing on it is run, and no device node or set-id file is honoured.
        options = [
          "nofail"
          "nodev"
          "nosuid"
          "noexec"
        ]
        ++ lib.optional onDemand "noauto";
      };
    })

    (mkIf container {
      users.users.${containerUser} = {
        isSystemUser = true;
        group = containerUser;
        home = "/var/lib/${containerUser}";
        createHome = true;
        # Rootless Podman maps the container's users onto these.
        autoSubUidGidRange = true;
      };
      users.groups.${containerUser} = { };

      virtualisation.oci-containers.containers.${containerName} = {
        inherit (db.container) image imageStream;
        pull = if db.container.imageStream != null then "never" else "missing";
        autoStart = !onDemand;
        podman.user = containerUser;
        volumes = [
          "${dataDir}:/var/lib/postgresql/data"
          "${socketDir}:/var/run/postgresql"
          "${containerHba}:/etc/datapunk/pg_hba.conf:ro"
          "${containerIdent}:/etc/datapunk/pg_ident.conf:ro"
        ];
        environment = {
          PGDATA = "/var/lib/postgresql/data";
          # The image's first start refuses to run without a superuser password unless told to
          # trust; the pg_hba.conf below replaces the one it writes, and there is no network.
          POSTGRES_HOST_AUTH_METHOD = "trust";
        };
        cmd = [
          "postgres"
          "-c"
          "hba_file=/etc/datapunk/pg_hba.conf"
          "-c"
          "ident_file=/etc/datapunk/pg_ident.conf"
          "-c"
          "listen_addresses="
          "-c"
          "password_encryption=scram-sha-256"
          # Bind parameters carry sealed data; they stay out of the server log.
          "-c"
          "log_parameter_max_length=0"
          "-c"
          "log_parameter_max_length_on_error=0"
        ];
        extraOptions = [
          "--network=none"
          "--security-opt=no-new-privileges"
        ];
      };

      systemd.services.${lib.removeSuffix ".service" containerUnit} = {
        unitConfig.RequiresMountsFor = [ volume.mountPoint ];
        serviceConfig.ExecStartPre = lib.mkBefore [ "+${prepareContainer}" ];
      };
    })

    (mkIf (!container) {
      services.postgresql = {
        enable = true;
        # Bind parameters carry sealed data; they stay out of the server log.
        settings = {
          log_parameter_max_length = 0;
          log_parameter_max_length_on_error = 0;
        };
        authentication = ''
          local  ${dbName}  datapunk_app,datapunk_reader,datapunk_backup  peer map=datapunk
        '';
        identMap = ''
          datapunk  ${cfg.user}  datapunk_app
          datapunk  ${cfg.user}  datapunk_reader
          datapunk  ${cfg.user}  datapunk_backup
        '';
      };

      systemd.services.postgresql = {
        unitConfig.RequiresMountsFor = [ config.services.postgresql.dataDir ];
        serviceConfig.ExecStartPre = mkIf hostDataOnVolume (
          lib.mkBefore [ "+${prepareHostDataDir}" ]
        );
      };
    })

    (mkIf cfg.backup.enable {
      assertions = [
        {
          assertion = cfg.backup.recipients != [ ];
          message = "services.datapunk.backup.recipients is empty: backups need a key to be encrypted to.";
        }
        {
          assertion = cfg.backup.recipientKeyFile != null;
          message = "services.datapunk.backup.recipientKeyFile is needed: the recipients' public keys to encrypt backups to.";
        }
      ];

      systemd.tmpfiles.rules = [ "d ${cfg.backup.directory} 0700 ${cfg.user} datapunk - -" ];

      systemd.services.datapunk-backup = {
        description = "Datapunk: encrypted backup of the database";
        requires = [ "datapunk-db-setup.service" ];
        after = [ "datapunk-db-setup.service" ];
        unitConfig = {
          Documentation = "https://github.com/datapunk/datapunk/tree/main/docs/backups.md";
          RequiresMountsFor = [
            volume.mountPoint
            cfg.backup.directory
          ];
        };
        path = [
          postgresql
          pkgs.gnupg
        ];
        environment = commandEnvironment "datapunk-backup" // {
          GNUPGHOME = "/run/datapunk-backup/gnupg";
        };
        serviceConfig = hardening // {
          Type = "oneshot";
          User = cfg.user;
          Nice = 10;
          IOSchedulingClass = "idle";
          StateDirectory = "datapunk-backup";
          StateDirectoryMode = "0700";
          RuntimeDirectory = [
            "datapunk-backup"
            "datapunk-backup/gnupg"
          ];
          RuntimeDirectoryMode = "0700";
          ReadWritePaths = [ cfg.backup.directory ];
          # A public key may be a path in the flake: interpolated, it is copied to the store.
          ExecStartPre = lib.optional (
            cfg.backup.recipientKeyFile != null
          ) "${pkgs.gnupg}/bin/gpg --batch --quiet --import ${cfg.backup.recipientKeyFile}";
          ExecStart = [
            "${datapunk} backup create"
            "${datapunk} backup prune --keep-last ${toString cfg.backup.keepLast}"
          ];
          LoadCredential = lib.optional container (
            "${backupPasswordCredential}:${toString db.backupPasswordFile}"
          );
        };
      };

      systemd.timers.datapunk-backup = {
        description = "Datapunk: encrypted backup of the database";
        wantedBy = [ "timers.target" ];
        timerConfig = {
          OnCalendar = cfg.backup.startAt;
          Persistent = true;
          RandomizedDelaySec = "1h";
          AccuracySec = "15min";
        };
      };
    })
  ]);
}
