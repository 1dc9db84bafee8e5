# The NixOS options the module sets or reads, declared as NixOS declares them where it matters
# to the module: list options are lists, so definitions from several modules merge for real,
# and unit settings merge as systemd unit options do (lists concatenate, anything else must
# agree). No behaviour of NixOS is imitated beyond the declarations.
{ lib, pkgs, ... }:

let
  inherit (lib) mkOption types;

  # A value of a [Unit], [Service] or [Timer] setting.
  unitOption = types.mkOptionType {
    name = "systemd option";
    check =
      value:
      builtins.isBool value
      || builtins.isInt value
      || builtins.isString value
      || builtins.isPath value
      || builtins.isList value;
    merge =
      loc: defs:
      if lib.any (def: builtins.isList def.value) defs then
        lib.concatMap (def: lib.toList def.value) defs
      else
        lib.mergeEqualOption loc defs;
  };

  unitSettings = mkOption {
    type = types.attrsOf unitOption;
    default = { };
  };
  unitList = mkOption {
    type = types.listOf types.str;
    default = [ ];
  };

  unit = {
    options = {
      enable = mkOption {
        type = types.bool;
        default = true;
      };
      description = mkOption {
        type = types.str;
        default = "";
      };
      wantedBy = unitList;
      requiredBy = unitList;
      requires = unitList;
      requisite = unitList;
      wants = unitList;
      after = unitList;
      before = unitList;
      partOf = unitList;
      bindsTo = unitList;
      unitConfig = unitSettings;
    };
  };

  service = {
    imports = [ unit ];
    options = {
      serviceConfig = unitSettings;
      environment = mkOption {
        type = types.attrsOf types.str;
        default = { };
      };
      path = mkOption {
        type = types.listOf (types.either types.package types.str);
        default = [ ];
      };
    };
  };

  timer = {
    imports = [ unit ];
    options.timerConfig = unitSettings;
  };

  container = {
    options = {
      image = mkOption { type = types.str; };
      imageStream = mkOption {
        type = types.nullOr types.package;
        default = null;
      };
      pull = mkOption {
        type = types.enum [
          "always"
          "missing"
          "never"
          "newer"
        ];
        default = "missing";
      };
      autoStart = mkOption {
        type = types.bool;
        default = true;
      };
      volumes = mkOption {
        type = types.listOf types.str;
        default = [ ];
      };
      cmd = mkOption {
        type = types.listOf types.str;
        default = [ ];
      };
      environment = mkOption {
        type = types.attrsOf types.str;
        default = { };
      };
      extraOptions = mkOption {
        type = types.listOf types.str;
        default = [ ];
      };
      podman = mkOption {
        type = types.nullOr (
          types.submodule {
            options.user = mkOption {
              type = types.str;
              default = "root";
            };
            options.sdnotify = mkOption {
              type = types.enum [
                "conmon"
                "healthy"
                "container"
              ];
              default = "conmon";
            };
          }
        );
        default = null;
      };
    };
  };

  user = {
    options = {
      isSystemUser = mkOption {
        type = types.bool;
        default = false;
      };
      isNormalUser = mkOption {
        type = types.bool;
        default = false;
      };
      group = mkOption {
        type = types.str;
        default = "";
      };
      extraGroups = mkOption {
        type = types.listOf types.str;
        default = [ ];
      };
      home = mkOption {
        type = types.str;
        default = "/var/empty";
      };
      createHome = mkOption {
        type = types.bool;
        default = false;
      };
      autoSubUidGidRange = mkOption {
        type = types.bool;
        default = false;
      };
      linger = mkOption {
        type = types.bool;
        default = false;
      };
    };
  };

  fileSystem = {
    options = {
      device = mkOption { type = types.str; };
      fsType = mkOption {
        type = types.str;
        default = "auto";
      };
      options = mkOption {
        type = types.listOf types.nonEmptyStr;
        default = [ "defaults" ];
      };
    };
  };

  etcFile = {
    options = {
      text = mkOption {
        type = types.nullOr types.lines;
        default = null;
      };
      source = mkOption {
        type = types.nullOr (types.either types.path types.package);
        default = null;
      };
    };
  };
in
{
  options = {
    assertions = mkOption {
      type = types.listOf (
        types.submodule {
          options.assertion = mkOption { type = types.bool; };
          options.message = mkOption { type = types.str; };
        }
      );
      default = [ ];
    };
    warnings = mkOption {
      type = types.listOf types.str;
      default = [ ];
    };

    users.users = mkOption {
      type = types.attrsOf (types.submodule user);
      default = { };
    };
    users.groups = mkOption {
      type = types.attrsOf (
        types.submodule {
          options.members = mkOption {
            type = types.listOf types.str;
            default = [ ];
          };
        }
      );
      default = { };
    };

    environment.etc = mkOption {
      type = types.attrsOf (types.submodule etcFile);
      default = { };
    };
    environment.systemPackages = mkOption {
      type = types.listOf types.package;
      default = [ ];
    };
    environment.sessionVariables = mkOption {
      type = types.attrsOf types.str;
      default = { };
    };

    fileSystems = mkOption {
      type = types.attrsOf (types.submodule fileSystem);
      default = { };
    };

    systemd.services = mkOption {
      type = types.attrsOf (types.submodule service);
      default = { };
    };
    systemd.user.services = mkOption {
      type = types.attrsOf (types.submodule service);
      default = { };
    };
    systemd.timers = mkOption {
      type = types.attrsOf (types.submodule timer);
      default = { };
    };
    systemd.tmpfiles.rules = mkOption {
      type = types.listOf types.str;
      default = [ ];
    };

    virtualisation.oci-containers.backend = mkOption {
      type = types.enum [
        "podman"
        "docker"
      ];
      default = "podman";
    };
    virtualisation.oci-containers.containers = mkOption {
      type = types.attrsOf (types.submodule container);
      default = { };
    };

    services.gnome.gnome-keyring.enable = mkOption {
      type = types.bool;
      default = false;
    };
    services.postgresql = {
      enable = mkOption {
        type = types.bool;
        default = false;
      };
      package = mkOption {
        type = types.package;
        default = pkgs.postgresql_17;
      };
      dataDir = mkOption {
        type = types.str;
        default = "/var/lib/postgresql/17";
      };
      settings = mkOption {
        type = types.attrsOf (
          types.oneOf [
            types.bool
            types.int
            types.str
          ]
        );
        default = { };
      };
      authentication = mkOption {
        type = types.lines;
        default = "";
      };
      identMap = mkOption {
        type = types.lines;
        default = "";
      };
    };
  };
}
