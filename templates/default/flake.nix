# A home lab on tailjoin: one always-on box runs the provisioner; every other machine boots from
# the network, holds nothing on disk and joins the tailnet with a fresh single-use key at each
# boot. Made by `nix flake init -t <the tailjoin flake>`; edit machine.nix and box.nix, then
#   nixos-rebuild switch --flake .#box     (on the box)
{
  description = "Home lab: a tailjoin provisioner box and the netboot machines it boots";

  inputs = {
    nixpkgs.url = "github:NixOS/nixpkgs/nixos-26.05";
    # Where the tailjoin flake is: your clone of it, or a git URL of your choice, e.g.
    #   url = "git+https://git.lab.example/infra/tailjoin?ref=main";
    tailjoin = {
      url = "git+file:///srv/tailjoin";
      inputs.nixpkgs.follows = "nixpkgs";
    };
  };

  outputs = {
    self,
    nixpkgs,
    tailjoin,
  }: {
    nixosConfigurations = {
      # The image every netbooted machine runs. It holds no secret: the box puts its key URL and
      # a one-time boot token on the kernel command line at each boot.
      machine = nixpkgs.lib.nixosSystem {
        modules = [
          tailjoin.nixosModules.tailjoin
          tailjoin.nixosModules.netboot
          ./machine.nix
        ];
      };

      # The always-on box: it serves `machine` to every approved machine that boots from the
      # network and mints each one a key.
      box = nixpkgs.lib.nixosSystem {
        modules = [
          tailjoin.nixosModules.default
          ./box.nix
          {services.tailjoin-provisioner.netboot.system = self.nixosConfigurations.machine;}
        ];
      };
    };
  };
}
