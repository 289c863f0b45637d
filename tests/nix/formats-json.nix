# nixpkgs' pkgs.formats.json, as far as the modules use it: its type (a JSON value, the freeform
# type of `settings`), declared the way pkgs-lib/formats.nix declares it. Shared by eval.nix and
# options.nix, which evaluate the modules without nixpkgs.
{lib}: {
  json = {}: {
    type = let
      valueType =
        lib.types.nullOr (lib.types.oneOf [lib.types.bool lib.types.int lib.types.float lib.types.str lib.types.path (lib.types.attrsOf valueType) (lib.types.listOf valueType)])
        // {description = "JSON value";};
    in
      valueType;
  };
}
