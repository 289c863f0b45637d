# Every option the project's NixOS modules declare, as the list nixpkgs' manual is made from
# (lib.optionAttrSetToDocList), for tests/nix/gen-options.sh to write docs/options.md.
#
#   NIXPKGS_LIB=/path/to/nixpkgs.lib nix-instantiate --eval --strict --json tests/nix/options.nix
#
# The modules are the flake's nixosModules, all of them, evaluated with the real nixpkgs lib.
# Nothing of NixOS itself is there, so definitions for NixOS's own options are not checked
# (_module.check = false): only the declarations are read. Options declared outside modules/
# are left out; declaration paths are relative to the checkout, so the output is the same
# wherever it is.
let
  lib = import ./nixpkgs-lib.nix;

  flake = (import ../../flake.nix).outputs {
    self = flake;
    nixpkgs = {inherit lib;};
  };

  root = toString ../..;
  ours = toString ../../modules + "/";
  relative = file: lib.removePrefix "${root}/" (toString file);

  evaluated = lib.evalModules {
    modules =
      builtins.attrValues flake.nixosModules
      ++ [
        {
          _module.check = false;
          # Only pkgs.formats.json (the type of `settings`); any other use of pkgs in an
          # option's documentation fails here: give that option a defaultText.
          _module.args.pkgs.formats = import ./formats-json.nix {inherit lib;};
        }
      ];
    # modules/netboot.nix imports nixpkgs' netboot profile from here.
    specialArgs.modulesPath = ./fixtures/modules-path;
  };

  # The options below a type. nixpkgs' manual stops at an `either` (authKey is "string or
  # submodule": the string only so that an assertion can explain what to do instead); here the
  # submodules inside it are documented too.
  subOptionsOf = loc: type: let
    direct = (type.getSubOptions or (_: {})) loc;
  in
    if direct != {}
    then direct
    else if (type.name or "") == "either"
    then subOptionsOf loc type.nestedTypes.left // subOptionsOf loc type.nestedTypes.right
    else {};

  # One entry per option, as lib.optionAttrSetToDocList makes it (its first entry for the option
  # alone), then the options below it. Options inside a submodule declared inline have no file
  # of their own: they are declared where their parent is.
  walk = parentDeclarations: options:
    lib.concatMap (opt: let
      doc = builtins.head (lib.optionAttrSetToDocList {inherit opt;});
      declarations =
        if doc.declarations == []
        then parentDeclarations
        else doc.declarations;
    in
      [(doc // {inherit declarations;})] ++ walk declarations (subOptionsOf opt.loc opt.type))
    (lib.collect lib.isOption options);

  isOurs = opt: opt.declarations != [] && lib.all (d: lib.hasPrefix ours (toString d)) opt.declarations;
in
  map (opt:
    {
      inherit (opt) name loc description type readOnly;
      declarations = map relative opt.declarations;
    }
    // lib.optionalAttrs (opt ? default) {inherit (opt) default;}
    // lib.optionalAttrs (opt ? example) {inherit (opt) example;})
  (lib.filter (opt: isOurs opt && opt.visible && !opt.internal) (walk [] evaluated.options))
