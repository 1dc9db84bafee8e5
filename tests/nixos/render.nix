# Unit files from the evaluated unit settings, written the way NixOS writes them: dependency
# lists on one line, every other list as one line per element, booleans as true/false, each
# environment variable as its own Environment= line and `path` as PATH.
{ lib }:

let
  show =
    value:
    if value == true then
      "true"
    else if value == false then
      "false"
    else
      toString value;

  section =
    name: settings:
    let
      assignments = key: value: map (item: "${key}=${show item}\n") (lib.toList value);
      lines = lib.concatLists (lib.mapAttrsToList assignments settings);
    in
    lib.optionalString (lines != [ ]) "[${name}]\n${lib.concatStrings lines}\n";

  dependencies =
    unit:
    lib.filterAttrs (_: value: value != "") {
      Description = unit.description;
      After = toString unit.after;
      Before = toString unit.before;
      Requires = toString unit.requires;
      Requisite = toString unit.requisite;
      Wants = toString unit.wants;
      PartOf = toString unit.partOf;
      BindsTo = toString unit.bindsTo;
    };

  environment =
    unit:
    let
      path = lib.optionalAttrs (unit.path != [ ]) {
        PATH = lib.concatMapStringsSep ":" (p: "${p}/bin") unit.path;
      };
    in
    lib.mapAttrsToList (name: value: ''"${name}=${value}"'') (unit.environment // path);

  install = unit: lib.filterAttrs (_: value: value != "") { WantedBy = toString unit.wantedBy; };
in
{
  service =
    unit:
    section "Unit" (dependencies unit // unit.unitConfig)
    + section "Service" (
      lib.optionalAttrs (environment unit != [ ]) { Environment = environment unit; }
      // unit.serviceConfig
    )
    + section "Install" (install unit);

  timer =
    unit:
    section "Unit" (dependencies unit // unit.unitConfig)
    + section "Timer" unit.timerConfig
    + section "Install" (install unit);
}
