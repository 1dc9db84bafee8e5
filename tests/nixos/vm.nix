# Datapunk on NixOS, whole, in a VM: a LUKS volume opened with a key file, PostgreSQL on it
# (the host backend, with peer authentication), the daemon in a logged-in user's session with
# her keyring unlocked, the provider sandbox standing in for Google and Spotify. It connects
# both accounts, syncs, backs up through the timer's unit, restores the backup into a scratch
# database, and checks who may read what.
#
#   nix build .#checks.x86_64-linux.vm -L
#
# The OpenPGP key in fixtures/ exists for this test only; its secret part is there so that the
# restore can decrypt.
{ self }:

let
  sandbox = "http://127.0.0.1:8321";
  password = "correct horse battery staple";
  fingerprint = "8BAEA7E1059A95D3FE56305C487C7799CDE4A1B7";
in
{
  name = "datapunk";

  nodes.machine =
    { pkgs, ... }:
    let
      package = self.packages.${pkgs.stdenv.hostPlatform.system}.default.override {
        withSandbox = true;
      };
    in
    {
      imports = [ self.nixosModules.default ];

      virtualisation.emptyDiskImages = [ 512 ];
      virtualisation.memorySize = 2048;

      users.users.alice = {
        isNormalUser = true;
        inherit password;
      };
      services.gnome.gnome-keyring.enable = true;
      # The whole server on the volume.
      services.postgresql.dataDir = "/var/lib/datapunk/postgresql";

      services.datapunk = {
        enable = true;
        inherit package;
        user = "alice";
        dataVolume = {
          device = "/dev/vdb";
          unlock = "keyFile";
          keyFile = "/root/datapunk-volume.key";
        };
        database.backend = "host";
        backup = {
          enable = true;
          recipients = [ fingerprint ];
          recipientKeyFile = ./fixtures/backup-key.asc;
        };
        integrations.google = {
          enable = true;
          clientId = "sandbox-google-client";
          clientSecretFile = "/var/lib/datapunk-test/google-client-secret";
        };
        integrations.spotify = {
          enable = true;
          clientId = "sandbox-spotify-client";
        };
        # Every endpoint is the sandbox's.
        settings.providers = {
          google = {
            authorize_url = "${sandbox}/google/authorize";
            token_url = "${sandbox}/google/token";
            revoke_url = "${sandbox}/google/revoke";
            api_base = "${sandbox}/google/api";
            people_api_base = "${sandbox}/google/people";
            account_url = "${sandbox}/google/userinfo";
          };
          spotify = {
            authorize_url = "${sandbox}/spotify/authorize";
            token_url = "${sandbox}/spotify/token";
            api_base = "${sandbox}/spotify/api";
            account_url = "${sandbox}/spotify/api/me";
          };
        };
      };

      systemd.services.datapunk-sandbox = {
        description = "Stand-in for Google's, Microsoft's and Spotify's APIs";
        wantedBy = [ "multi-user.target" ];
        serviceConfig = {
          ExecStart = "${package}/bin/datapunk-sandbox --listen 127.0.0.1:8321";
          DynamicUser = true;
        };
      };

      environment.systemPackages = with pkgs; [
        cryptsetup
        curl
        e2fsprogs
        gnome-keyring
        gnupg
      ];
    };

  testScript = ''
    # Commands as alice in her session; sudo drops what her login shell would have set.
    alice = (
        "sudo -u alice env XDG_RUNTIME_DIR=/run/user/1000"
        + " DBUS_SESSION_BUS_ADDRESS=unix:path=/run/user/1000/bus"
        + " DATAPUNK_CONFIG=/etc/datapunk/config.toml "
    )


    def mode(path):
        return machine.succeed(f"stat -c '%a %U' {path}").strip()


    def connect(provider):
        out = f"/tmp/connect-{provider}.out"
        machine.succeed(
            alice + f"sh -c 'datapunk-connect {provider} --no-browser >{out} 2>&1 </dev/null &'"
        )
        url = machine.wait_until_succeeds(f"grep -m 1 '^http://' {out}").strip()
        # The script is the browser: the sandbox redirects it to the listener on 127.0.0.1.
        redirect = machine.succeed(
            f"curl -sSf -o /dev/null -w '%{{redirect_url}}' '{url}'"
        ).strip()
        machine.succeed(f"curl -sSf -o /dev/null '{redirect}'")
        machine.wait_until_succeeds(f"grep -q '^connected {provider} ' {out}")


    machine.start()
    machine.wait_for_unit("multi-user.target")

    with subtest("the volume: LUKS opened in stage 2 with a key file, data only"):
        machine.succeed(
            "head -c 64 /dev/urandom >/root/datapunk-volume.key",
            "chmod 0400 /root/datapunk-volume.key",
            "cryptsetup luksFormat --batch-mode --type luks2 --pbkdf pbkdf2 /dev/vdb /root/datapunk-volume.key",
            "systemctl restart systemd-cryptsetup@datapunk.service",
            "mkfs.ext4 -q /dev/mapper/datapunk",
            "systemctl start var-lib-datapunk.mount",
        )
        options = machine.succeed("findmnt --noheadings --output OPTIONS /var/lib/datapunk")
        for option in ("nodev", "nosuid", "noexec"):
            assert option in options, options

    with subtest("PostgreSQL on the volume, the roles, and no parameters in its log"):
        machine.succeed("systemctl restart postgresql.service")
        machine.succeed("systemctl start datapunk-db-setup.service")
        machine.succeed("test -f /var/lib/datapunk/postgresql/PG_VERSION")
        assert mode("/var/lib/datapunk/postgresql") == "700 postgres"
        roles = machine.succeed(
            "sudo -u postgres psql -Atc \"SELECT rolname FROM pg_roles WHERE rolname LIKE 'datapunk%' ORDER BY 1\""
        ).split()
        assert roles == ["datapunk_app", "datapunk_backup", "datapunk_owner", "datapunk_reader"], roles
        for setting in ("log_parameter_max_length", "log_parameter_max_length_on_error"):
            shown = machine.succeed(f"sudo -u postgres psql -Atc 'SHOW {setting}'").strip()
            assert shown == "0", f"{setting} = {shown}"

    with subtest("alice logs in, her keyring is unlocked, and datapunkd runs in her session"):
        machine.succeed(
            "install -d -m 0755 /var/lib/datapunk-test",
            "printf sandbox-google-secret >/var/lib/datapunk-test/google-client-secret",
            "chown alice /var/lib/datapunk-test/google-client-secret",
            "chmod 0400 /var/lib/datapunk-test/google-client-secret",
            "printf '${password}' >/tmp/keyring-password",
            "chown alice /tmp/keyring-password",
        )
        machine.wait_until_tty_matches("1", "login: ")
        machine.send_chars("alice\n")
        machine.wait_until_tty_matches("1", "Password: ")
        machine.send_chars("${password}\n")
        machine.wait_for_unit("user@1000.service")
        machine.wait_for_file("/run/user/1000/bus")
        machine.succeed(
            alice
            + "sh -c 'gnome-keyring-daemon --replace --unlock --components=secrets --daemonize </tmp/keyring-password'"
        )
        machine.succeed(alice + "systemctl --user start datapunk.service")
        machine.wait_until_succeeds(
            alice + "systemctl --user show --property=StatusText datapunk.service | grep -q 'keyring ready'"
        )
        assert mode("/run/user/1000/datapunk") == "700 alice"
        assert mode("/home/alice/.local/state/datapunk") == "700 alice"

    with subtest("both accounts connected through OAuth, with the datasets configured"):
        connect("google")
        connect("spotify")
        integrations = machine.succeed(alice + "datapunk integrations")
        assert "google" in integrations and "spotify" in integrations, integrations

    with subtest("a sync of every dataset"):
        synced = machine.succeed(alice + "datapunk sync")
        assert synced.count(": success") == 5 and "failure" not in synced, synced

    with subtest("a backup by the timer's unit, readable by alice alone"):
        machine.succeed("systemctl list-timers --all | grep -q datapunk-backup.timer")
        machine.succeed("systemctl start datapunk-backup.service")
        files = machine.succeed("ls /var/backup/datapunk").split()
        dumps = [name for name in files if name.endswith(".dump.gpg")]
        assert len(dumps) == 1, files
        assert mode("/var/backup/datapunk") == "700 alice"
        for name in files:
            assert mode(f"/var/backup/datapunk/{name}") == "600 alice", name

    with subtest("the backup restores into a scratch database, every row counted"):
        manifest = dumps[0].replace(".dump.gpg", ".manifest.json")
        machine.succeed(
            "install -d -m 0700 -o postgres /tmp/drill /tmp/drill/gnupg",
            f"install -m 0600 -o postgres /var/backup/datapunk/{dumps[0]} /var/backup/datapunk/{manifest} /tmp/drill/",
            "sudo -u postgres env GNUPGHOME=/tmp/drill/gnupg gpg --batch --import ${./fixtures/backup-secret-key.asc}",
        )
        restored = machine.succeed(
            "sudo -u postgres env DATAPUNK_CONFIG=/etc/datapunk/config.toml GNUPGHOME=/tmp/drill/gnupg"
            + " XDG_STATE_HOME=/tmp/drill XDG_RUNTIME_DIR=/tmp/drill "
            + f"datapunk backup restore /tmp/drill/{dumps[0]} --yes "
            + "--into 'host=/run/postgresql user=postgres dbname=datapunk_drill'"
        )
        assert "differs" not in restored, restored
        events = machine.succeed(
            "sudo -u postgres psql -d datapunk_drill -Atc 'SELECT count(*) FROM datapunk.calendar_events'"
        )
        assert int(events) > 0, events

    with subtest("no secret in the store, none readable by others"):
        machine.fail("grep -rl sandbox-google-secret /etc/datapunk/ /nix/var/nix/profiles/system/etc/datapunk/")
        assert mode("/var/lib/datapunk-test/google-client-secret") == "400 alice"
        assert mode("/var/lib/datapunk-backup") == "700 alice"
  '';
}
