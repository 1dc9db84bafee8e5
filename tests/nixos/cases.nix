# The evaluation cases: each is a list of modules added to the module under test and a
# function from the evaluated configuration to its checks ({ name, ok, got? }).
{ lib, pkgs }:

let
  mountPoint = "/var/lib/datapunk";
  backupDir = "/var/backup/datapunk";
  fingerprint = "0123456789ABCDEF0123456789ABCDEF01234567";
  adminUrl = socket: "--admin-url 'host=${socket} user=postgres dbname=postgres'";

  is = name: got: want: {
    inherit name got;
    ok = got == want;
  };
  holds = name: ok: { inherit name ok; };
  has = name: list: item: {
    inherit name;
    got = list;
    ok = builtins.elem item (lib.toList list);
  };
  hasSuffixIn = name: list: suffix: {
    inherit name;
    got = list;
    ok = lib.any (lib.hasSuffix suffix) (lib.toList list);
  };

  # The hardening settings a shipped unit in systemd/ must share with the module's unit.
  hardeningKeys = [
    "AmbientCapabilities"
    "CapabilityBoundingSet"
    "DevicePolicy"
    "IPAddressDeny"
    "KeyringMode"
    "LockPersonality"
    "MemoryDenyWriteExecute"
    "NoNewPrivileges"
    "PrivateDevices"
    "PrivateIPC"
    "PrivateMounts"
    "PrivateNetwork"
    "PrivateTmp"
    "PrivateUsers"
    "ProcSubset"
    "ProtectClock"
    "ProtectControlGroups"
    "ProtectHome"
    "ProtectHostname"
    "ProtectKernelLogs"
    "ProtectKernelModules"
    "ProtectKernelTunables"
    "ProtectProc"
    "ProtectSystem"
    "RemoveIPC"
    "RestrictAddressFamilies"
    "RestrictNamespaces"
    "RestrictRealtime"
    "RestrictSUIDSGID"
    "SystemCallArchitectures"
    "SystemCallErrorNumber"
    "SystemCallFilter"
    "UMask"
  ];

  # A setting as a sorted list of words, true/false spelled yes/no, and "no" as unset.
  words =
    values:
    let
      spelled = map (
        value:
        if value == true then
          "yes"
        else if value == false then
          "no"
        else
          toString value
      ) (lib.toList values);
      all = lib.filter (word: word != "") (lib.concatMap (lib.splitString " ") spelled);
    in
    if all == [ "no" ] then [ ] else lib.sort lib.lessThan all;

  # The [Service] settings of a unit file in systemd/, as lists of assignments.
  shippedSettings =
    name:
    let
      lines = lib.splitString "\n" (builtins.readFile (../../systemd + "/${name}"));
      pairs = lib.concatMap (
        line:
        let
          pair = builtins.match "([A-Za-z]+)=(.*)" line;
        in
        lib.optional (pair != null) {
          name = lib.elemAt pair 0;
          value = lib.elemAt pair 1;
        }
      ) lines;
    in
    lib.foldl' (
      settings: pair:
      settings // { ${pair.name} = (settings.${pair.name} or [ ]) ++ [ pair.value ]; }
    ) { } pairs;

  # Checks that the shipped unit `name` hardens as `settings` (a module unit's serviceConfig)
  # does, but for the settings in `except`.
  sameHardening =
    name: settings: except:
    let
      shipped = shippedSettings name;
    in
    map (key: {
      name = "systemd/${name} has the module's ${key}=";
      got = {
        module = words (settings.${key} or [ ]);
        shipped = words (shipped.${key} or [ ]);
      };
      ok = words (settings.${key} or [ ]) == words (shipped.${key} or [ ]);
    }) (lib.subtractLists except hardeningKeys);

  failedAssertions = config: map (a: a.message) (lib.filter (a: !a.assertion) config.assertions);
  warned = config: start: lib.any (lib.hasPrefix start) config.warnings;

  desktop = {
    users.users.alice = {
      isNormalUser = true;
      group = "users";
    };
    services.gnome.gnome-keyring.enable = true;
  };

  # Every part of the module at once: the volume opened with a key file, the container,
  # backups, and two integrations with different intervals.
  full = {
    services.datapunk = {
      enable = true;
      user = "alice";
      dataVolume = {
        device = "/dev/disk/by-uuid/4f6a1c2e-0b7d-4c55-9a41-2f3c9d1e8b70";
        unlock = "keyFile";
        keyFile = "/etc/keys/datapunk.key";
      };
      database = {
        appPasswordFile = "/run/secrets/datapunk-app-password";
        backupPasswordFile = "/run/secrets/datapunk-backup-password";
      };
      backup = {
        enable = true;
        recipients = [ fingerprint ];
        recipientKeyFile = "${builtins.storeDir}/c0ffeec0ffeec0ffeec0ffeec0ffeec0-backup-key.asc";
      };
      integrations.google = {
        enable = true;
        clientId = "1234567890-abc.apps.googleusercontent.com";
        clientSecretFile = "/run/secrets/google-client-secret";
        interval = 600;
      };
      integrations.spotify = {
        enable = true;
        clientId = "0f1e2d3c4b5a69788796a5b4c3d2e1f0";
        datasets = [ "recently-played" ];
        interval = 300;
      };
      settings.log.level = "debug";
    };
  };

  fullChecks =
    config:
    let
      daemon = config.systemd.user.services.datapunk;
      setup = config.systemd.services.datapunk-db-setup;
      backup = config.systemd.services.datapunk-backup;
      timer = config.systemd.timers.datapunk-backup;
      containerUnit = config.systemd.services.podman-datapunk-postgres;
      container = config.virtualisation.oci-containers.containers.datapunk-postgres;
      settings = config.services.datapunk.settings;
      setupStarts = setup.serviceConfig.ExecStart;
      hba = ''
        local  all        postgres                          peer map=admin
        local  datapunk  datapunk_app,datapunk_reader      scram-sha-256
        local  datapunk  datapunk_backup                   scram-sha-256
      '';
      datapunk = "${pkgs.datapunk}/bin/datapunk --config ${config.environment.etc."datapunk/config.toml".source} ";
      socket = "/run/datapunk-db/postgresql";
    in
    [
      (is "no assertion fails" (failedAssertions config) [ ])
      (holds "no warning about passphrases or an unmanaged volume" (
        !warned config "services.datapunk.dataVolume"
      ))
      (is "no warning at all" config.warnings [ ])

      # The volume.
      (is "the crypttab line opens the volume in stage 2 with the key file"
        config.environment.etc.crypttab.text
        "datapunk /dev/disk/by-uuid/4f6a1c2e-0b7d-4c55-9a41-2f3c9d1e8b70 /etc/keys/datapunk.key luks,nofail\n"
      )
      (is "the volume is mounted from /dev/mapper, nofail, data only"
      config.fileSystems.${mountPoint}
      {
        device = "/dev/mapper/datapunk";
        fsType = "ext4";
        options = [
          "nofail"
          "nodev"
          "nosuid"
          "noexec"
        ];
      })

      # Every unit touching the volume waits for its mount.
      (has "datapunk.service requires the volume's mount"
        (daemon.unitConfig.RequiresMountsFor or [ ])
        mountPoint
      )
      (has "datapunk-db-setup.service requires the volume's mount"
        (setup.unitConfig.RequiresMountsFor or [ ])
        mountPoint
      )
      (has "datapunk-backup.service requires the volume's mount"
        (backup.unitConfig.RequiresMountsFor or [ ])
        mountPoint
      )
      (has "datapunk-backup.service requires the backup directory's mount"
        (backup.unitConfig.RequiresMountsFor or [ ])
        backupDir
      )
      (has "the container's unit requires the volume's mount"
        (containerUnit.unitConfig.RequiresMountsFor or [ ])
        mountPoint
      )

      # The daemon in the user's session.
      (is "datapunk.service runs only in alice's user manager"
        daemon.unitConfig.ConditionUser
        "alice"
      )
      (is "datapunk.service starts with the graphical session"
        daemon.wantedBy
        [ "graphical-session.target" ]
      )
      (is "datapunk.service is Type=notify" daemon.serviceConfig.Type "notify")
      (is "datapunk.service has a watchdog" daemon.serviceConfig.WatchdogSec "60s")
      (is "datapunk.service restarts on failure" daemon.serviceConfig.Restart "on-failure")
      (is "datapunk.service loads the Google client secret, and only that"
        (daemon.serviceConfig.LoadCredential or [ ])
        [ "datapunk-google-client-secret:/run/secrets/google-client-secret" ]
      )
      (holds "datapunk.service sets nothing a user manager cannot apply" (
        !lib.any (key: daemon.serviceConfig ? ${key}) [
          "ProtectProc"
          "ProcSubset"
          "ProtectControlGroups"
          "RemoveIPC"
          "IPAddressDeny"
          "DevicePolicy"
          "User"
        ]
      ))
      (hasSuffixIn "datapunk.service runs datapunkd with the generated configuration"
        daemon.serviceConfig.ExecStart
        "-datapunk.toml"
      )

      # Roles and schema.
      (is "datapunk-db-setup.service is the container's administrator"
        setup.serviceConfig.User
        "datapunk-postgres"
      )
      (has "datapunk-db-setup.service needs the container"
        setup.requires
        "podman-datapunk-postgres.service"
      )
      (hasSuffixIn "datapunk-db-setup.service runs db init"
        setupStarts
        "db init ${adminUrl socket}"
      )
      (hasSuffixIn "datapunk-db-setup.service runs db migrate"
        setupStarts
        "db migrate ${adminUrl socket}"
      )
      (hasSuffixIn "datapunk-db-setup.service gives datapunk_app its password"
        setupStarts
        "db password app --password-file %d/datapunk-app-password ${adminUrl socket}"
      )
      (hasSuffixIn "datapunk-db-setup.service gives datapunk_reader the app's password"
        setupStarts
        "db password reader --password-file %d/datapunk-app-password ${adminUrl socket}"
      )
      (hasSuffixIn "datapunk-db-setup.service gives datapunk_backup its password"
        setupStarts
        "db password backup --password-file %d/datapunk-backup-password ${adminUrl socket}"
      )
      (is "datapunk-db-setup.service loads both passwords as credentials"
      (setup.serviceConfig.LoadCredential or [ ])
      [
        "datapunk-app-password:/run/secrets/datapunk-app-password"
        "datapunk-backup-password:/run/secrets/datapunk-backup-password"
      ])
      (has "datapunk-db-setup.service runs at boot" setup.wantedBy "multi-user.target")

      # Backups.
      (is "datapunk-backup.service runs as alice" backup.serviceConfig.User "alice")
      (is "datapunk-backup.service creates then prunes"
      (map (lib.removePrefix datapunk) backup.serviceConfig.ExecStart)
      [
        "backup create"
        "backup prune --keep-last 14"
      ])
      (is "datapunk-backup.service loads the backup password as a credential"
        (backup.serviceConfig.LoadCredential or [ ])
        [ "datapunk-backup-password:/run/secrets/datapunk-backup-password" ]
      )
      (is "datapunk-backup.service writes only to the backup directory"
        backup.serviceConfig.ReadWritePaths
        [ backupDir ]
      )
      (is "datapunk-backup.service has no network" backup.serviceConfig.PrivateNetwork true)
      (has "datapunk-backup.service imports the recipients' keys first"
        backup.serviceConfig.ExecStartPre
        "${pkgs.gnupg}/bin/gpg --batch --quiet --import ${builtins.storeDir}/c0ffeec0ffeec0ffeec0ffeec0ffeec0-backup-key.asc"
      )
      (is "the timer runs daily" timer.timerConfig.OnCalendar "daily")
      (is "the timer catches up missed runs" timer.timerConfig.Persistent true)
      (is "the timer is started with the system" timer.wantedBy [ "timers.target" ])
      (has "the backup directory is alice's alone"
        config.systemd.tmpfiles.rules
        "d ${backupDir} 0700 alice datapunk - -"
      )

      # The container.
      (is "the container runs rootless as datapunk-postgres"
        container.podman.user
        "datapunk-postgres"
      )
      (has "the container has no network" container.extraOptions "--network=none")
      (has "the container keeps its data on the volume"
        container.volumes
        "${mountPoint}/postgresql:/var/lib/postgresql/data"
      )
      (has "the container shares its socket through a directory"
        container.volumes
        "${socket}:/var/run/postgresql"
      )
      (has "the container keeps parameters out of its log"
        container.cmd
        "log_parameter_max_length=0"
      )
      (has "the container keeps parameters out of its log on errors"
        container.cmd
        "log_parameter_max_length_on_error=0"
      )
      (has "the container listens on no address" container.cmd "listen_addresses=")
      (has "the container authenticates with its own pg_hba.conf"
        container.cmd
        "hba_file=/etc/datapunk/pg_hba.conf"
      )
      (is "the container starts at boot" container.autoStart true)
      (hasSuffixIn "the container's directories are made first, as root"
        (lib.head containerUnit.serviceConfig.ExecStartPre)
        "-datapunk-postgres-prepare"
      )
      (has "the container authenticates by its own rules: scram for Datapunk's roles, peer for its root"
        container.volumes
        "${pkgs.writeText "datapunk-pg_hba.conf" hba}:/etc/datapunk/pg_hba.conf:ro"
      )
      (is "the Podman account is a system account with subordinate ids"
        {
          inherit (config.users.users.datapunk-postgres) isSystemUser autoSubUidGidRange;
        }
        {
          isSystemUser = true;
          autoSubUidGidRange = true;
        }
      )
      (is "only alice may enter the socket's directory"
        config.users.groups.datapunk.members
        [ "alice" ]
      )

      # The rendered configuration.
      (is "the daemon reaches the container's socket as datapunk_app" settings.database {
        mode = "external";
        name = "datapunk";
        conninfo = "host=${socket} user=datapunk_app dbname=datapunk";
        password_file = "/run/secrets/datapunk-app-password";
      })
      (is "the providers name their clients, credentials and intervals" settings.providers {
        google = {
          client_id = "1234567890-abc.apps.googleusercontent.com";
          client_secret_credential = "datapunk-google-client-secret";
          sync_interval_secs = 600;
        };
        spotify = {
          client_id = "0f1e2d3c4b5a69788796a5b4c3d2e1f0";
          sync_interval_secs = 300;
        };
      })
      (holds "no common interval is set for them" (!(settings ? sync)))
      (is "backups go to the recipients and the directory, logging in with the credential"
        settings.backup
        {
          recipients = [ fingerprint ];
          dir = backupDir;
          password_credential = "datapunk-backup-password";
        }
      )
      (is "the shell finds the configuration"
        config.environment.sessionVariables.DATAPUNK_CONFIG
        "/etc/datapunk/config.toml"
      )
      # The units in systemd/ for machines without NixOS harden the same way. The user unit for
      # backups keeps its state in the home, which it may therefore read.
    ]
    ++ sameHardening "datapunkd.service" daemon.serviceConfig [ ]
    ++ sameHardening "datapunk-backup.service" backup.serviceConfig [ "ProtectHome" ]
    ++ [
      (holds "datapunk-connect connects Spotify with the chosen datasets" (
        lib.hasInfix "connect spotify --datasets recently-played"
          (lib.last config.environment.systemPackages).text
      ))
    ];

  # The host's PostgreSQL, a volume opened by passphrase, no backups.
  host = {
    services.datapunk = {
      enable = true;
      user = "alice";
      dataVolume.device = "/dev/sdb2";
      database.backend = "host";
      # No interval of its own: the common one applies.
      integrations.google = {
        enable = true;
        clientId = "google-client";
      };
      settings.sync.interval_secs = 3600;
    };
    services.postgresql.dataDir = "${mountPoint}/postgresql";
  };

  hostChecks =
    config:
    let
      setup = config.systemd.services.datapunk-db-setup;
      postgresql = config.systemd.services.postgresql;
    in
    [
      (is "no assertion fails" (failedAssertions config) [ ])
      (holds "a warning that nothing starts before the passphrase" (
        warned config "services.datapunk.dataVolume.unlock = \"passphrase\""
      ))
      (holds "no warning that the server's data is off the volume" (
        !warned config "services.datapunk.database.backend = \"host\""
      ))
      (is "the passphrase is asked only when the volume is needed"
        config.environment.etc.crypttab.text
        "datapunk /dev/sdb2 none luks,nofail,noauto\n"
      )
      (has "the mount waits to be needed too" config.fileSystems.${mountPoint}.options "noauto")
      (is "datapunk-db-setup.service does not start at boot" setup.wantedBy [ ])
      (is "datapunk-db-setup.service is PostgreSQL's administrator"
        setup.serviceConfig.User
        "postgres"
      )
      (has "datapunk-db-setup.service needs the server" setup.requires "postgresql.service")
      (is "datapunk-db-setup.service sets no passwords"
        (lib.length setup.serviceConfig.ExecStart)
        2
      )
      (is "datapunk-db-setup.service loads no credential" setup.serviceConfig.LoadCredential [ ])
      (has "the server requires the volume's mount"
        (postgresql.unitConfig.RequiresMountsFor or [ ])
        "${mountPoint}/postgresql"
      )
      (hasSuffixIn "the server's data directory is made first, as root"
        (lib.head postgresql.serviceConfig.ExecStartPre)
        "-datapunk-postgresql-prepare"
      )
      (is "the server keeps parameters out of its log" config.services.postgresql.settings {
        log_parameter_max_length = 0;
        log_parameter_max_length_on_error = 0;
      })
      (holds "peer authentication maps alice to the login roles" (
        lib.hasInfix "local  datapunk  datapunk_app,datapunk_reader,datapunk_backup  peer map=datapunk"
          config.services.postgresql.authentication
        && lib.all (role: lib.hasInfix "datapunk  alice  ${role}" config.services.postgresql.identMap)
          [
          "datapunk_app"
          "datapunk_reader"
          "datapunk_backup"
        ]
      ))
      (is "the daemon reaches the host's socket without a password"
      config.services.datapunk.settings.database
      {
        mode = "external";
        name = "datapunk";
        conninfo = "host=/run/postgresql user=datapunk_app dbname=datapunk";
      })
      (holds "no container is defined" (config.virtualisation.oci-containers.containers == { }))
      (holds "no backup unit is defined" (!config.systemd.services ? datapunk-backup))
      (is "an integration without an interval keeps the common one"
        {
          inherit (config.services.datapunk.settings) sync;
          google = config.services.datapunk.settings.providers.google;
        }
        {
          sync.interval_secs = 3600;
          google.client_id = "google-client";
        }
      )
    ];

  # Every assertion at once.
  broken = {
    services.datapunk = {
      enable = true;
      user = "bob";
      dataVolume = {
        device = "/dev/sdb2";
        unlock = "keyFile";
      };
      database.appPasswordFile = "${builtins.storeDir}/0123456789abcdfghijklmnpqrsvwxyz-app-password";
      backup.enable = true;
      integrations.google = {
        enable = true;
        clientSecretFile = "${builtins.storeDir}/0123456789abcdfghijklmnpqrsvwxyz-google";
      };
    };
    virtualisation.oci-containers.backend = "docker";
  };

  brokenChecks =
    config:
    let
      messages = failedAssertions config;
      fires = path: {
        name = "an assertion names ${path}";
        got = messages;
        ok = lib.any (lib.hasPrefix path) messages;
      };
    in
    map fires [
      "services.datapunk.user: the account `bob` is not declared"
      "services.datapunk.settings.vault.backend = \"secret-service\""
      "services.datapunk.dataVolume.unlock = \"keyFile\" needs services.datapunk.dataVolume.keyFile"
      "services.datapunk.database.backend = \"container\" runs PostgreSQL with rootless Podman"
      "services.datapunk.database.appPasswordFile is ${builtins.storeDir}/"
      "services.datapunk.database.backupPasswordFile is needed"
      "services.datapunk.integrations.google.clientSecretFile is ${builtins.storeDir}/"
      "services.datapunk.integrations.google.clientId is needed"
      "services.datapunk.backup.recipients is empty"
      "services.datapunk.backup.recipientKeyFile is needed"
    ]
    ++ [
      (holds "every failing assertion names an option path" (
        lib.all (lib.hasPrefix "services.datapunk.") messages
      ))
    ];

  # Wrongly typed definitions: evaluating any of these must fail.
  wrong = definition: {
    modules = [
      desktop
      full
      { services.datapunk = definition; }
    ];
    checks = _: [ ];
  };
in
{
  full = {
    modules = [
      desktop
      full
    ];
    checks = fullChecks;
  };
  host = {
    modules = [
      desktop
      host
    ];
    checks = hostChecks;
  };
  broken = {
    modules = [ broken ];
    checks = brokenChecks;
  };
  disabled = {
    modules = [
      desktop
      {
        services.datapunk = {
          enable = false;
          user = "alice";
        };
      }
    ];
    checks = config: [
      (is "nothing is generated" {
        inherit (config.systemd) services timers;
        user = config.systemd.user.services;
        etc = config.environment.etc;
      } { services = { }; timers = { }; user = { }; etc = { }; })
    ];
  };

  wrong-unlock = wrong { dataVolume.unlock = "fingerprint"; };
  wrong-device = wrong { dataVolume.device = 42; };
  wrong-keep-last = wrong { backup.keepLast = 0; };
  wrong-recipient = wrong { backup.recipients = [ "alice@example.org" ]; };
  wrong-dataset = wrong { integrations.spotify.datasets = [ "calendar" ]; };
  wrong-vault = wrong { settings.vault.backend = "keepass"; };
  wrong-interval = wrong { integrations.google.interval = "15min"; };
}
