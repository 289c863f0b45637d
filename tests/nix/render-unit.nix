# Renders a systemd.services.<name> definition (unitConfig, serviceConfig, wantedBy) to unit
# file text by the rules NixOS's systemd library uses: keys in sorted order, a list becomes one
# line per element, a boolean true/false, anything else its string form (so "" gives `Key=`).
# wantedBy, which NixOS implements with .wants symlinks, is written as an [Install] section so
# the text can be compared with tests/lib/render-unit.py's rendering of tailjoin-unit.json.
lib: svc: let
  value = v:
    if builtins.isBool v
    then lib.boolToString v
    else toString v;
  section = title: attrs:
    "[${title}]\n"
    + lib.concatStrings (lib.concatMap (
      name: let
        v = attrs.${name};
      in
        map (x: "${name}=${value x}\n") (
          if builtins.isList v
          then v
          else [v]
        )
    ) (builtins.attrNames attrs));
in
  section "Unit" (svc.unitConfig or {})
  + "\n"
  + section "Service" (svc.serviceConfig or {})
  + "\n"
  + section "Install" {WantedBy = svc.wantedBy or [];}
