{
  description = "tailjoin: join NixOS machines to a Tailscale or headscale tailnet at boot, unattended";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-26.05";

  outputs = {
    self,
    nixpkgs,
  }: let
    inherit (nixpkgs) lib;
    systems = ["x86_64-linux" "aarch64-linux"];
    forAllSystems = f: lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});

    # The example netboot OS for one platform; nixosConfigurations.generic is the x86_64 one.
    generic = system: extra:
      lib.nixosSystem {
        modules =
          [
            self.nixosModules.tailjoin
            self.nixosModules.netboot
            ./modules/generic.nix
            # Its VM variant, for `nixos-rebuild build-vm --flake .#generic` and `nix run .#vm`.
            ./modules/try-vm.nix
            {nixpkgs.hostPlatform = system;}
          ]
          ++ extra;
      };

    # The same OS for a fleet served by a provisioner: no key arrives with the machine; the agent
    # asks the provisioner named on the kernel command line, which iPXE fills per machine:
    #   set cmdline tailjoin.key_url=https://prov.lan:8443/v1/key tailjoin.boot_token=fake-boot-token-01
    #   chain netboot.ipxe
    fleet = {lib, ...}: {
      services.tailjoin.authKey = lib.mkForce {kernelCmdline = {};};
    };

    # An always-on box running the provisioner (secrets/examples/netboot-fleet-provisioner.nix)
    # with placeholders for its own disk; every secret path is a placeholder too.
    provisioner = system:
      lib.nixosSystem {
        modules = [
          self.nixosModules.default
          ./secrets/examples/netboot-fleet-provisioner.nix
          {
            # Zero-touch: the provisioner also issues the boot of generic-fleet, with a fresh
            # one-time token per boot for each approved MAC (`tailjoin-provisioner approve MAC`).
            services.tailjoin-provisioner.netboot = {
              enable = true;
              openFirewall = true;
              keyUrl = "https://10.0.0.1:8443/v1/key";
              system = self.nixosConfigurations.generic-fleet;
            };
            nixpkgs.hostPlatform = system;
            networking.hostName = "prov";
            fileSystems."/" = {
              device = "/dev/disk/by-label/nixos";
              fsType = "ext4";
            };
            boot.loader.grub.device = "nodev";
            system.stateVersion = "26.05";
          }
        ];
      };

    # Our build as the services' default package. The key makes importing it twice (the default
    # module imports both modules) one import.
    packageDefault = {
      key = "tailjoin#packageDefault";
      imports = [
        ({
          lib,
          pkgs,
          ...
        }: {
          services.tailjoin.package = lib.mkDefault (pkgs.callPackage ./modules/package.nix {});
        })
      ];
    };

    # Classic NixOS netboot bundle: kernel, initrd with the squashed store, iPXE script.
    netbootBundle = pkgs: system: let
      inherit ((generic system []).config.system) build;
    in
      pkgs.symlinkJoin {
        name = "tailjoin-netboot";
        paths = [build.kernel build.netbootRamdisk build.netbootIpxeScript];
        preferLocalBuild = true;
      };

    # `nix run .#vm -- KEYFILE`: the generic OS in qemu, its key from KEYFILE at run time as a
    # systemd credential over fw_cfg (modules/try-vm-app.nix).
    tryVm = pkgs: pkgs.callPackage ./modules/try-vm-app.nix {nixos = generic pkgs.stdenv.hostPlatform.system [];};

    # The Cargo workspace's members as its manifest lists them (tailjoin-common, tailjoin,
    # tailjoin-provisioner, tailjoin-testkit).
    agentMembers = (lib.importTOML ./agent/Cargo.toml).workspace.members;

    # A cargo command over the whole workspace, in the package's build environment (its vendored
    # dependencies, offline).
    cargoCheck = pkgs: name: nativeBuildInputs: command:
      self.packages.${pkgs.stdenv.hostPlatform.system}.tailjoin.overrideAttrs (old: {
        pname = "tailjoin-${name}";
        nativeBuildInputs = old.nativeBuildInputs ++ nativeBuildInputs;
        buildPhase = ''
          runHook preBuild
          ${command}
          runHook postBuild
        '';
        doCheck = false;
        installPhase = "touch $out";
      });
  in {
    overlays.default = final: _prev: {
      tailjoin = final.callPackage ./modules/package.nix {};
    };

    packages = forAllSystems (pkgs: rec {
      tailjoin = pkgs.callPackage ./modules/package.nix {};
      default = tailjoin;
      netboot = netbootBundle pkgs pkgs.stdenv.hostPlatform.system;
    });

    apps = forAllSystems (pkgs: {
      vm = {
        type = "app";
        program = lib.getExe (tryVm pkgs);
        meta.description = "Boot the tailjoin generic OS in qemu with the auth key from a file";
      };
    });

    nixosModules = {
      tailjoin.imports = [./modules/tailjoin packageDefault];
      # The provisioner's package follows services.tailjoin.package.
      provisioner.imports = [./modules/provisioner ./modules/tailjoin packageDefault];
      default.imports = [self.nixosModules.tailjoin self.nixosModules.provisioner];
      netboot = ./modules/netboot.nix;
    };

    # `nix flake init -t <this flake>`: a home lab with a provisioner box and a netboot machine.
    templates.default = {
      path = ./templates/default;
      description = "Home lab: a tailjoin provisioner box and the netboot machines it boots";
      welcomeText = ''
        # A tailjoin home lab

        - `flake.nix`: point the `tailjoin` input at your clone of tailjoin (or a git URL).
        - `box.nix`: the always-on box; its secrets are files under /var/lib/tailjoin-secrets.
        - `machine.nix`: the image every netbooted machine runs; put your SSH key in it.

        Then, on the box: `nixos-rebuild switch --flake .#box`.
      '';
    };

    nixosConfigurations = {
      generic = generic "x86_64-linux" [];
      generic-fleet = generic "x86_64-linux" [fleet];
      provisioner = provisioner "x86_64-linux";
    };

    checks = forAllSystems (pkgs: let
      vmTest = file: import file {inherit pkgs self;};
    in {
      inherit (self.packages.${pkgs.stdenv.hostPlatform.system}) tailjoin;
      cargo-clippy = cargoCheck pkgs "clippy" [pkgs.clippy] "cargo clippy --offline --frozen --workspace --all-targets -- -D warnings";
      # rustfmt over every workspace member's src/ (agent/fuzz, its own workspace, is not one).
      cargo-fmt = pkgs.runCommand "tailjoin-fmt" {nativeBuildInputs = [pkgs.rustfmt];} ''
        cd ${lib.fileset.toSource {
          root = ./agent;
          fileset = lib.fileset.unions (map (member: ./agent + "/${member}/src") agentMembers);
        }}
        find ${lib.escapeShellArgs (map (member: "${member}/src") agentMembers)} -name '*.rs' \
          -exec rustfmt --check --edition 2024 {} +
        touch $out
      '';
      # The TPM tests run against swtpm and tpm2-tools, over TCP (network-tcti).
      cargo-test = cargoCheck pkgs "test" [pkgs.swtpm pkgs.tpm2-tools] "cargo test --offline --frozen --workspace --features tailjoin/network-tcti";
      vm-join = vmTest ./tests/nix/join.nix;
      vm-bad-key = vmTest ./tests/nix/bad-key.nix;
      vm-netboot = vmTest ./tests/nix/netboot.nix;
      generic-toplevel = (generic pkgs.stdenv.hostPlatform.system []).config.system.build.toplevel;
      generic-fleet-toplevel = (generic pkgs.stdenv.hostPlatform.system [fleet]).config.system.build.toplevel;
      provisioner-toplevel = (provisioner pkgs.stdenv.hostPlatform.system).config.system.build.toplevel;
      # `nix run .#vm`: its script (shellchecked by writeShellApplication) and the generic OS's VM.
      try-vm = tryVm pkgs;
    });

    devShells = forAllSystems (pkgs: {
      default = pkgs.mkShell {
        inputsFrom = [self.packages.${pkgs.stdenv.hostPlatform.system}.tailjoin];
        packages = [pkgs.clippy pkgs.rustfmt pkgs.rust-analyzer pkgs.alejandra pkgs.statix pkgs.deadnix pkgs.headscale pkgs.tailscale];
      };
    });

    formatter = forAllSystems (pkgs: pkgs.alejandra);
  };
}
