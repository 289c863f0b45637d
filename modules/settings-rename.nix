# Keeps an option that used to retype one of the agent's (or the provisioner's) settings working
# after it became part of `settings`: its definitions are forwarded to
# services.<service>.settings.<to> with their priority, and a warning names the new place.
# Unlike lib.mkRenamedOptionModule, which can forward into a freeform path too: an old `null`,
# which meant "the default", is dropped rather than written into the JSON; reading the old
# option gives the setting, or null when it is unset (mkRenamedOptionModule aborts there); and a
# setting can apply only in some configurations (`onlyIf`).
{lib}: {
  mkSettingsRename = {
    service,
    from,
    to,
    # Whether the setting applies in this config (a function of it): when not, the old option
    # is ignored, as it was.
    onlyIf ? (_: true),
  }: {
    config,
    options,
    ...
  }: let
    fromPath = ["services" service] ++ from;
    toPath = ["services" service "settings"] ++ to;
    opt = lib.getAttrFromPath fromPath options;
    defs = lib.filter (v: v != null) opt.definitions;
    newName = lib.showOption toPath;
  in {
    options = lib.setAttrByPath fromPath (lib.mkOption {
      type = lib.types.anything;
      visible = false;
      description = "Moved to `${newName}`, the agent's own field name.";
      # Reading the old option gives the setting's value.
      apply = _: lib.attrByPath toPath null config;
    });
    config = lib.mkIf opt.isDefined {
      warnings = [
        ''
          The option `${lib.showOption fromPath}' defined in ${lib.showFiles opt.files} has moved into the settings:
          use `${newName}' instead (checked at build time like the rest of the config).
        ''
      ];
      services.${service}.settings = lib.mkIf (defs != [] && onlyIf config) (
        lib.setAttrByPath to (lib.mkMerge (map (lib.mkOverride opt.highestPrio) defs))
      );
    };
  };
}
