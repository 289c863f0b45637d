# Evaluation tests for templates/default, what `nix flake init -t` creates: its flake.nix's
# outputs, with this checkout as the `tailjoin` input and the real nixpkgs lib, and a stand-in
# for nixpkgs.lib.nixosSystem that evaluates the machines' modules with the NixOS stand-ins of
# eval.nix plus the NixOS options modules/netboot.nix and the template set. nixpkgs' netboot
# profile is a stand-in too (tests/nix/fixtures/modules-path), so the machine's system.build is
# made up here. Imported by eval.nix with its helpers; returns { results; configs;
# provisionerConfigs; } (JSON for the real agent to check).
{
  lib,
  pkgs,
  nixosStandIns,
  renderUnit,
  test,
  failing,
  leaks,
  leakMarker,
  ...
}: let
  inherit (lib) mkOption types;
  dir = ../../templates/default;

  tailjoin = (import ../../flake.nix).outputs {
    self = tailjoin;
    nixpkgs = {inherit lib;};
  };

  store = name: "${builtins.storeDir}/0123456789abcdfghijklmnpqrsvwxyz-${name}";
  option = type: default: mkOption {inherit type default;};

  # The NixOS options the template and modules/netboot.nix set, as far as they use them.
  standIns = {
    options = {
      nixpkgs.hostPlatform = option types.str null;
      networking = {
        hostName = option types.str "nixos";
        useDHCP = option types.bool true;
        firewall = {
          enable = option types.bool true;
          trustedInterfaces = option (types.listOf types.str) [];
          allowedUDPPorts = option (types.listOf types.port) [];
          checkReversePath = option (types.either types.bool (types.enum ["strict" "loose"])) true;
        };
      };
      services = {
        openssh = {
          enable = option types.bool false;
          settings = option (types.attrsOf types.anything) {};
        };
        getty.autologinUser = option (types.nullOr types.str) null;
        tailscale = {
          interfaceName = option types.str "tailscale0";
          port = option types.port 41641;
        };
      };
      users.users = option (types.attrsOf (types.submodule {
        options = {
          openssh.authorizedKeys.keys = option (types.listOf types.singleLineStr) [];
          initialHashedPassword = option (types.nullOr types.str) null;
        };
      })) {};
      fileSystems = option (types.attrsOf (types.attrsOf types.str)) {};
      boot.loader = option (types.attrsOf types.anything) {};
      boot.kernelModules = option (types.listOf types.str) [];
      security.tpm2.enable = option types.bool false;
      system = {
        stateVersion = option types.str null;
        # What nixpkgs' netboot profile builds, made up.
        build = option (types.attrsOf types.str) {
          kernel = store "linux-6.12";
          netbootRamdisk = store "initrd";
          toplevel = store "nixos-system-lab-machine";
        };
        boot.loader.kernelFile = option types.str "bzImage";
      };
    };
  };

  nixosSystem = {modules, ...}:
    lib.evalModules {
      modules =
        modules
        ++ [
          nixosStandIns
          standIns
          {_module.args.pkgs = pkgs // {callPackage = _: _: pkgs.tailjoin;};}
        ];
      specialArgs.modulesPath = ./fixtures/modules-path;
    };

  flake = import (dir + "/flake.nix");
  template = flake.outputs {
    self = template;
    nixpkgs.lib = lib // {inherit nixosSystem;};
    inherit tailjoin;
  };

  machine = template.nixosConfigurations.machine.config;
  box = template.nixosConfigurations.box.config;
  # A service's config file with the build-time check off, to read the raw JSON.
  rawText = name: svc:
    (template.nixosConfigurations.${name}.extendModules {
      modules = [{services.${svc}.validateConfig = false;}];
    })
    .config
    .services
    .${svc}
    .configFile
    .text;
  machineJSON = builtins.fromJSON (rawText "machine" "tailjoin");
  boxJSON = builtins.fromJSON (rawText "box" "tailjoin-provisioner");

  # What the leak checks of eval-examples.nix look at, for one machine and its service.
  leaksOf = name: svc: let
    c = template.nixosConfigurations.${name}.config;
  in
    leaks {
      texts = {
        "${svc}.json" = rawText name svc;
        "${svc}.service" = renderUnit c.systemd.services.${svc};
        kernelParams = lib.concatStringsSep " " c.boot.kernelParams;
      };
      allowed = {
        "${svc}.service" = map toString [pkgs.tailjoin c.services.${svc}.configFile];
        # The box serves the machine's image: its kernel, initrd and system, and nothing else.
        "${svc}.json" = lib.optionals (name == "box") (builtins.attrValues machine.system.build);
      };
      markers = [leakMarker "tskey-"];
    };
in {
  results = [
    (test "template: flake.nix's inputs: nixpkgs as this flake pins it, tailjoin a place to edit with nixpkgs following"
      (flake.inputs.nixpkgs
        == (import ../../flake.nix).inputs.nixpkgs
        && flake.inputs.tailjoin
        == {
          url = "git+file:///srv/tailjoin";
          inputs.nixpkgs.follows = "nixpkgs";
        })
      flake.inputs)
    (test "template: this flake's templates.default is templates/default, with a description and a welcome text"
      (tailjoin.templates.default.path
        == dir
        && tailjoin.templates.default.description != ""
        && lib.hasInfix "nixos-rebuild switch --flake .#box" tailjoin.templates.default.welcomeText)
      (builtins.attrNames tailjoin.templates))
    (test "template: box and machine evaluate with this checkout as the tailjoin input, no failing assertion, no warning"
      (builtins.attrNames template.nixosConfigurations
        == ["box" "machine"]
        && failing machine == []
        && machine.warnings == []
        && failing box == []
        && box.warnings == [])
      {
        machine = failing machine ++ machine.warnings;
        box = failing box ++ box.warnings;
      })
    (test "template: the machine takes its key from the kernel command line and holds none (no credential)"
      (machineJSON.auth_key
        ? kernel_cmdline
        && machineJSON.login_server == "https://headscale.lab.example"
        && machine.services.tailscale.enable
        && !(machine.systemd.services.tailjoin.serviceConfig ? LoadCredential)
        && machine.users.users.root.openssh.authorizedKeys.keys != []
        && machine.services.openssh.enable)
      machineJSON)
    (test "template: the netboot profile turns reboot_on_key_failure on (never stranded); a setting turns it off"
      (let
        off = builtins.fromJSON ((template.nixosConfigurations.machine.extendModules {
            modules = [
              {
                services.tailjoin = {
                  validateConfig = false;
                  settings.reboot_on_key_failure.enabled = false;
                };
              }
            ];
          })
          .config
          .services
          .tailjoin
          .configFile
          .text);
      in
        machineJSON.reboot_on_key_failure
        == {
          enabled = true;
          delay_secs = 30;
          jitter_secs = 30;
        }
        && !off.reboot_on_key_failure.enabled)
      machineJSON.reboot_on_key_failure)
    (test "template: the machine has its TPM (security.tpm2, the TPM drivers) and tailjoin may open /dev/tpmrm0"
      (machine.security.tpm2.enable
        && lib.all (m: lib.elem m machine.boot.kernelModules) ["tpm_crb" "tpm_tis"]
        && machine.systemd.services.tailjoin.serviceConfig.DeviceAllow == ["/dev/tpmrm0 rw"]
        && !machine.systemd.services.tailjoin.serviceConfig.PrivateDevices)
      {
        inherit (machine.security) tpm2;
        inherit (machine.boot) kernelModules;
        inherit (machine.systemd.services.tailjoin) serviceConfig;
      })
    (test "template: the box serves nixosConfigurations.machine (its kernel, initrd, init) with the key URL, approval required"
      (let
        nb = boxJSON.netboot;
        inherit (machine.system) build;
      in
        nb.kernel
        == "${build.kernel}/bzImage"
        && nb.initrds == ["${build.netbootRamdisk}/initrd"]
        && lib.hasPrefix "init=${build.toplevel}/init" nb.cmdline
        && nb.key_url == "https://192.168.1.2:8443/v1/key"
        && nb.require_approval
        && boxJSON.mint.headscale.api_key == {credential = "headscale-api-key";}
        && boxJSON.allow.networks == ["192.168.1.0/24"])
      boxJSON)
    (test "template: pixiecore asks the provisioner's boot listener; the key port is open, the boot port is not"
      (box.services.pixiecore.apiServer
        == "http://${boxJSON.netboot.listen}"
        && box.networking.firewall.allowedTCPPorts == [8443])
      box.networking.firewall.allowedTCPPorts)
    (test "template: store leak: nothing rendered for the box or the machine holds a secret or a secret's store path"
      (leaksOf "machine" "tailjoin" == [] && leaksOf "box" "tailjoin-provisioner" == [])
      (leaksOf "machine" "tailjoin" ++ leaksOf "box" "tailjoin-provisioner"))
  ];
  configs.template-machine = machineJSON;
  provisionerConfigs.template-box = boxJSON;
}
