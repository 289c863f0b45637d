# Evaluation tests for the try-it VM: modules/try-vm.nix (the generic OS's
# virtualisation.vmVariant), modules/try-vm-app.nix (`nix run .#vm`) and their wiring in flake.nix.
# No nixpkgs here, so lib.nixosSystem is a stand-in that evaluates the flake's generic modules
# with the NixOS stand-ins, leaving out modules/netboot.nix (it imports nixpkgs' netboot
# profile), and the VM's run script is a stand-in store path named as nixpkgs names it
# (run-<system.name>-vm). What nixpkgs' qemu-vm.nix does with the VM options is not evaluated
# here. Imported by eval.nix with its helpers; returns { results; artifacts; } (artifacts: the
# app's script text, which tests/nix/check.sh runs against a fake VM runner).
{
  lib,
  pkgs,
  nixosStandIns,
  test,
  failing,
  throws,
  ...
}: let
  inherit (lib) mkOption types;

  fakeStorePath = name: seed: "${builtins.storeDir}/${builtins.substring 0 32 (builtins.hashString "sha256" seed)}-${name}";

  # Stand-in for pkgs.writeShellApplication: records what the app is made of.
  writeShellApplication = args:
    args
    // {
      type = "derivation";
      outPath = fakeStorePath args.name args.text;
      meta = (args.meta or {}) // {mainProgram = args.name;};
    };
  coreutils = {
    type = "derivation";
    name = "coreutils";
    outPath = fakeStorePath "coreutils" "coreutils";
  };
  ours = pkgs.tailjoin // {name = "tailjoin-from-flake";};
  appPkgs = {
    stdenv.hostPlatform.system = "x86_64-linux";
    callPackage = f: args:
      if f == ../../modules/try-vm-app.nix
      then import f ({inherit lib writeShellApplication coreutils;} // args)
      else ours;
  };

  # What the stand-in nixosSystem needs beyond eval.nix's stand-ins: the options the generic
  # modules set, and the VM as nixpkgs' build-vm.nix/qemu-vm.nix name it.
  systemStandIns = {config, ...}: {
    options = {
      networking.hostName = mkOption {type = types.str;};
      system = {
        stateVersion = mkOption {type = types.str;};
        name = mkOption {
          type = types.str;
          default = config.networking.hostName;
        };
        build.vm = mkOption {
          type = types.unspecified;
          default = {
            type = "derivation";
            name = "nixos-vm";
            outPath = fakeStorePath "nixos-vm" config.system.name;
          };
        };
      };
      nixpkgs.hostPlatform = mkOption {type = types.str;};
      virtualisation.vmVariant = mkOption {
        type = types.deferredModule;
        default = {};
      };
    };
  };

  nixosSystem = {modules}: let
    kept = lib.filter (m: m != ../../modules/netboot.nix) modules;
  in {
    inherit modules;
    inherit
      (lib.evalModules {
        modules =
          kept
          ++ [
            nixosStandIns
            systemStandIns
            {_module.args.pkgs = pkgs // {callPackage = _: _: ours;};}
          ];
      })
      config
      ;
  };

  flake = (import ../../flake.nix).outputs {
    self = flake;
    nixpkgs = {
      lib = lib // {inherit nixosSystem;};
      legacyPackages = lib.genAttrs ["x86_64-linux" "aarch64-linux"] (system: appPkgs // {stdenv.hostPlatform.system = system;});
    };
  };

  inherit (flake.nixosConfigurations) generic;
  app = flake.apps.x86_64-linux.vm;
  appDrv = appPkgs.callPackage ../../modules/try-vm-app.nix {nixos = generic;};

  # The VM variant as nixpkgs evaluates it: the system's modules plus the vmVariant definitions,
  # here against stand-ins for the options they set.
  vmOptions = {
    options = {
      virtualisation.graphics = mkOption {
        type = types.bool;
        default = true;
      };
      virtualisation.diskImage = mkOption {
        type = types.nullOr types.str;
        default = "./tailjoin-generic.qcow2";
      };
      boot.initrd.kernelModules = mkOption {
        type = types.listOf types.str;
        default = [];
      };
      tailjoin.netboot.autologin = mkOption {
        type = types.bool;
        default = false;
      };
    };
  };
  vmOf = userModules: let
    outer = lib.evalModules {
      modules =
        [
          ../../modules/try-vm.nix
          {options.virtualisation.vmVariant = mkOption {type = types.deferredModule;};}
        ]
        ++ map (m: {virtualisation.vmVariant = m;}) userModules;
    };
  in
    (lib.evalModules {modules = [vmOptions outer.config.virtualisation.vmVariant];}).config;
  vm = vmOf [];

  header = lib.concatMapStrings (l: l + "\n") [
    "runner=${lib.escapeShellArg "${generic.config.system.build.vm}/bin/run-tailjoin-generic-vm"}"
    "credential=tailscale-auth-key"
    "store=${lib.escapeShellArg builtins.storeDir}"
  ];

  results = [
    (test "try-vm: the VM variant has the console in the terminal, root on tmpfs, fw_cfg in the initrd, autologin"
      (!vm.virtualisation.graphics
        && vm.virtualisation.diskImage == null
        && builtins.elem "qemu_fw_cfg" vm.boot.initrd.kernelModules
        && vm.tailjoin.netboot.autologin)
      vm)
    (test "try-vm: a configuration that sets tailjoin.netboot.autologin = false keeps it in the VM"
      (!(vmOf [{tailjoin.netboot.autologin = false;}]).tailjoin.netboot.autologin)
      null)
    (test "try-vm: the module sets nothing outside virtualisation.vmVariant (the netboot image is unchanged)"
      (let
        m = import ../../modules/try-vm.nix {inherit lib;};
      in
        builtins.attrNames m == ["virtualisation"] && builtins.attrNames m.virtualisation == ["vmVariant"])
      null)
    (test "flake: nixosConfigurations.generic and generic-fleet include modules/try-vm.nix (build-vm gets it)"
      (builtins.elem ../../modules/try-vm.nix generic.modules
        && builtins.elem ../../modules/try-vm.nix flake.nixosConfigurations.generic-fleet.modules)
      null)
    (test "flake: generic takes its key from the system credential store: LoadCredential=tailscale-auth-key, no path"
      (let
        sc = generic.config.systemd.services.tailjoin.serviceConfig;
      in
        lib.toList sc.LoadCredential == ["tailscale-auth-key"] && !(sc ? LoadCredentialEncrypted) && failing generic.config == [])
      generic.config.systemd.services.tailjoin.serviceConfig)
    (test "flake: checks.<system>.try-vm builds the app (with it the generic OS's VM)"
      (flake.checks.x86_64-linux.try-vm.outPath == appDrv.outPath)
      null)
    (test "flake: apps.<system>.vm is an app running tailjoin-vm, for both systems"
      (app.type
        == "app"
        && app.program == "${appDrv}/bin/tailjoin-vm"
        && flake.apps.aarch64-linux.vm.type == "app"
        && builtins.attrNames flake.apps == ["aarch64-linux" "x86_64-linux"])
      app)
    (test "app: the script names the generic OS's VM runner and credential, then modules/try-vm-app.sh verbatim"
      (appDrv.text == header + builtins.readFile ../../modules/try-vm-app.sh && appDrv.runtimeInputs == [coreutils])
      appDrv.text)
    (test "app: refuses an OS whose key is not in the system credential store (a file source, generic-fleet)"
      (throws
        (appPkgs.callPackage ../../modules/try-vm-app.nix {
          nixos.config = lib.recursiveUpdate generic.config {services.tailjoin.authKey.credential.source = "/run/agenix/k";};
        })
        .text
        && throws (appPkgs.callPackage ../../modules/try-vm-app.nix {nixos = flake.nixosConfigurations.generic-fleet;}).text)
      null)
  ];
in {
  inherit results;
  artifacts.tryVmAppText = appDrv.text;
}
