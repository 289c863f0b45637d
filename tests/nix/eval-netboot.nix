# Evaluation tests for modules/provisioner/netboot.nix (services.tailjoin-provisioner.netboot):
# the `netboot` section of the provisioner's JSON (taken from a NixOS netboot system or named
# files), the firewall, the admin command, and every assertion. Imported by eval.nix with its
# helpers; returns { results; configs; } (configs `tailjoin-provisioner --check` must accept).
{
  lib,
  pkgs,
  evalModulesWith,
  test,
  firesWith,
  failing,
  ...
}: let
  eval = evalModulesWith [../../modules/provisioner];

  store = name: "${builtins.storeDir}/0123456789abcdfghijklmnpqrsvwxyz-${name}";

  # A stand-in for nixosConfigurations.generic-fleet: what the module reads of a NixOS system.
  fleetSystem = {
    config = {
      system.build = {
        kernel = store "linux-6.12";
        netbootRamdisk = store "initrd";
        toplevel = store "nixos-system-generic";
      };
      system.boot.loader.kernelFile = "bzImage";
      boot.kernelParams = ["console=ttyS0" "loglevel=4" "tailjoin.key_url=https://old.example/v1/key"];
      services.tailjoin.authKey.kernelCmdline = {caFile = "/etc/tailjoin/prov-ca.pem";};
    };
  };
  # The same system, but with its key from a credential: the boot token would go unused.
  credentialSystem = lib.recursiveUpdate fleetSystem {
    config.services.tailjoin.authKey = {
      kernelCmdline = null;
      credential = {};
    };
  };

  base = {
    enable = true;
    validateConfig = false;
    tls = {
      certFile = "/etc/tailjoin-provisioner/fullchain.pem";
      key.credential.source = "/run/agenix/prov-tls-key";
    };
    mint.headscale = {
      url = "https://headscale.example.com";
      apiKey.credential.source = "/run/agenix/headscale-api-key";
      user = "fleet";
    };
    settings = {
      tags = ["tag:netboot"];
      allow.macs = ["52:54:00:12:34:56"];
    };
    netboot = {
      enable = true;
      keyUrl = "https://10.0.0.1:8443/v1/key";
      system = fleetSystem;
    };
  };
  provWith = extra: (eval [{services.tailjoin-provisioner = lib.recursiveUpdate base extra;}]).config;
  jsonOf = c: builtins.fromJSON c.services.tailjoin-provisioner.configFile.text;
  nbOf = extra: (jsonOf (provWith extra)).netboot;

  # Files that exist, for `tailjoin-provisioner --check` (it may look at them).
  fixtureImage = {
    kernel = toString ./fixtures/fake-kernel;
    initrds = [(toString ./fixtures/fake-initrd)];
    cmdline = "console=ttyS0";
  };

  results = [
    (test "netboot: the JSON section is taken from the served NixOS system; its tailjoin.key_url= is left out"
      (let
        nb = nbOf {};
      in
        nb.listen
        == "0.0.0.0:8081"
        && nb.key_url == "https://10.0.0.1:8443/v1/key"
        && nb.kernel == "${store "linux-6.12"}/bzImage"
        && nb.initrds == ["${store "initrd"}/initrd"]
        && nb.cmdline == "init=${store "nixos-system-generic"}/init console=ttyS0 loglevel=4"
        && nb.token_ttl_secs == 300
        && nb.require_approval
        && nb.one_boot_per_mac
        && nb.retry_secs == 30)
      (nbOf {}))
    (test "netboot: named files win over the system; settings reach the JSON"
      (let
        nb = nbOf {
          netboot = {
            image = fixtureImage;
            listen = "[::]:8081";
          };
          settings.netboot = {
            token_ttl_secs = 120;
            require_approval = false;
            one_boot_per_mac = false;
            retry_secs = 5;
          };
        };
      in
        nb.kernel
        == fixtureImage.kernel
        && nb.initrds == fixtureImage.initrds
        && nb.cmdline == "console=ttyS0"
        && nb.token_ttl_secs == 120
        && !nb.require_approval
        && !nb.one_boot_per_mac
        && nb.retry_secs == 5
        && nb.listen == "[::]:8081")
      (nbOf {netboot.image = fixtureImage;}))
    (test "netboot: the TPM policy is when-enrolled by default, with no EK CAs; both reach the JSON when set"
      (let
        dflt = nbOf {};
        set = nbOf {
          netboot = {
            tpm = "required";
            tpmEkCaFiles = [./fixtures/fake-kernel];
          };
        };
      in
        dflt.tpm
        == "when-enrolled"
        && !(dflt ? tpm_ek_ca_files)
        && set.tpm == "required"
        && lib.length set.tpm_ek_ca_files == 1
        && lib.hasSuffix "fake-kernel" (lib.head set.tpm_ek_ca_files))
      (nbOf {netboot.tpm = "required";}))
    (test "netboot: EK CAs with the TPM off fail an assertion saying how to fix it"
      (firesWith (provWith {
        netboot = {
          tpm = "off";
          tpmEkCaFiles = [./fixtures/fake-kernel];
        };
      }) "netboot[.]tpm = \"when-enrolled\"")
      (failing (provWith {
        netboot = {
          tpm = "off";
          tpmEkCaFiles = [./fixtures/fake-kernel];
        };
      })))
    (test "netboot: off by default, and then no netboot section at all"
      (!((jsonOf (provWith {netboot.enable = false;})) ? netboot))
      (jsonOf (provWith {netboot.enable = false;})))
    (test "netboot: the options that retyped its settings still work (with a warning naming the setting), and only with netboot on"
      (let
        old = {
          netboot = {
            image = fixtureImage;
            tokenTtl = 120;
            requireApproval = false;
            oneBootPerMac = false;
            retrySecs = 5;
          };
        };
        c = provWith old;
        nb = (jsonOf c).netboot;
      in
        nb.token_ttl_secs
        == 120
        && !nb.require_approval
        && !nb.one_boot_per_mac
        && nb.retry_secs == 5
        && lib.any (lib.hasInfix "`services.tailjoin-provisioner.settings.netboot.retry_secs'") c.warnings
        && !((jsonOf (provWith (lib.recursiveUpdate old {netboot.enable = false;}))) ? netboot))
      (provWith {netboot.retrySecs = 5;}).warnings)
    (test "netboot: a clean configuration fails no assertion"
      (failing (provWith {}) == [])
      (failing (provWith {})))
    (test "netboot: openFirewall opens the boot listener's port next to nothing else"
      ((provWith {netboot.openFirewall = true;}).networking.firewall.allowedTCPPorts == [8081])
      (provWith {netboot.openFirewall = true;}).networking.firewall.allowedTCPPorts)
    # The package's own bin/tailjoin-provisioner has the admin command's name: where both are in
    # the system path (a user's environment.systemPackages holding the package), the command
    # must win, as hiPrio (a lower meta.priority than the package's default 5) makes it.
    (test "netboot: the admin command (pending/approve/revoke) is installed, runs the package's tailjoin-provisioner with this config, and wins over the package's binary"
      (let
        c = provWith {};
        cmd = lib.findFirst (p: (p.name or "") == "tailjoin-provisioner") null c.environment.systemPackages;
      in
        cmd
        != null
        && lib.hasInfix "exec ${pkgs.tailjoin}/bin/tailjoin-provisioner --config ${c.services.tailjoin-provisioner.configFile} \"$@\"" cmd.text
        && (cmd.meta.priority or 5) < (pkgs.tailjoin.meta.priority or 5))
      (map (p: p.name or "?") (provWith {}).environment.systemPackages))
    (test "assertion: netboot with nothing to boot says how to name a system"
      (firesWith (provWith {netboot.system = null;}) "netboot.system = inputs.tailjoin.nixosConfigurations.generic-fleet")
      (failing (provWith {netboot.system = null;})))
    (test "assertion: a plain-HTTP key URL is refused (only the boot script may travel in clear text)"
      (firesWith (provWith {netboot.keyUrl = "http://10.0.0.1:8080/v1/key";}) "would hand keys out over plain HTTP")
      (failing (provWith {netboot.keyUrl = "http://10.0.0.1:8080/v1/key";})))
    (test "assertion: a tailjoin.* parameter in a named image's command line is refused"
      (firesWith (provWith {netboot.image = fixtureImage // {cmdline = "tailjoin.boot_token=fake-token-abcdef0123";};}) "sets a tailjoin.. parameter")
      (failing (provWith {netboot.image = fixtureImage // {cmdline = "tailjoin.boot_token=x";};})))
    (test "assertion: a served system that does not read its key from the kernel command line"
      (firesWith (provWith {netboot.system = credentialSystem;}) "does not take its key from the kernel command line")
      (failing (provWith {netboot.system = credentialSystem;})))
  ];
in {
  inherit results;
  configs = {
    netboot-files = jsonOf (provWith {netboot.image = fixtureImage;});
    netboot-open-enrolment = jsonOf (provWith {
      netboot.image = fixtureImage;
      settings = {
        netboot.require_approval = false;
        allow = {
          macs = [];
          networks = ["10.0.0.0/24"];
        };
      };
    });
  };
}
