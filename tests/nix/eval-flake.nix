# Evaluation tests for flake.nix's NixOS modules: its outputs evaluated with the real nixpkgs lib
# and no nixpkgs packages (nothing here touches them), so that the wiring is checked where there
# is no nixpkgs: the default module brings both services, the package defaults to our build once
# however the modules are combined, and the provisioner's package follows the agent's. Imported
# by eval.nix with its helpers; returns { results; }.
{
  lib,
  pkgs,
  nixosStandIns,
  test,
  failing,
  ...
}: let
  flake = (import ../../flake.nix).outputs {
    self = flake;
    nixpkgs = {inherit lib;};
  };

  # Our build, as the flake's callPackage ./modules/package.nix makes it here.
  ours = pkgs.tailjoin // {name = "tailjoin-from-flake";};
  eval = modules:
    (lib.evalModules {
      modules =
        [
          nixosStandIns
          {_module.args.pkgs = pkgs // {callPackage = _: _: ours;};}
        ]
        ++ modules;
    })
    .config;

  provisioner = {
    services.tailjoin-provisioner = {
      enable = true;
      allowPlainHttp = true;
      mint.headscale = {
        url = "https://headscale.example.com";
        apiKey.credential = {};
        user = "fleet";
      };
      settings.allow.networks = ["10.0.0.0/24"];
    };
  };
in {
  results = [
    (test "flake: nixosModules.default has both services, our build as their package"
      (let
        c = eval [flake.nixosModules.default provisioner];
      in
        c.services.tailjoin.package == ours && c.services.tailjoin-provisioner.package == ours && failing c == [])
      null)
    (test "flake: importing default, tailjoin and provisioner together defines the package once"
      (let
        c = eval [flake.nixosModules.default flake.nixosModules.tailjoin flake.nixosModules.provisioner provisioner];
      in
        c.services.tailjoin-provisioner.package == ours)
      null)
    (test "flake: the provisioner's package follows services.tailjoin.package"
      (let
        other = pkgs.tailjoin // {name = "tailjoin-other";};
        c = eval [flake.nixosModules.provisioner provisioner {services.tailjoin.package = other;}];
      in
        c.services.tailjoin-provisioner.package == other && !c.services.tailjoin.enable)
      null)
    (test "flake: nixosModules.tailjoin alone has no provisioner"
      (let
        c = eval [flake.nixosModules.tailjoin];
      in
        c.services.tailjoin.package == ours && !(c.services ? tailjoin-provisioner))
      null)
    (test "flake: the configurations the flake exports"
      (builtins.attrNames flake.nixosConfigurations
        == ["generic" "generic-fleet" "provisioner"]
        && builtins.attrNames flake.nixosModules == ["default" "netboot" "provisioner" "tailjoin"])
      (builtins.attrNames flake.nixosConfigurations))
  ];
}
