# The netboot profile as options: a minimal NixOS that boots over the network (kernel + initrd
# with the squashed store + iPXE script), gets its address by DHCP, lets in SSH with the keys
# given here, trusts the tailnet interface and joins the tailnet with tailjoin.
#
# Importing this module is opting in: it imports nixpkgs' netboot-minimal profile.
{
  config,
  lib,
  modulesPath,
  options,
  ...
}: let
  inherit (lib) mkOption types;
  cfg = config.tailjoin.netboot;
in {
  imports = [(modulesPath + "/installer/netboot/netboot-minimal.nix")];

  options.tailjoin.netboot = {
    sshAuthorizedKeys = mkOption {
      type = types.listOf types.singleLineStr;
      default = [];
      example = ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI... admin@lab"];
      description = ''
        Public keys allowed to log in as root over SSH. Password logins are off, so with no key
        the machine is reachable only on its console (or with Tailscale SSH).
      '';
    };
    ssh = mkOption {
      type = types.bool;
      default = true;
      description = "Run sshd (key logins only).";
    };
    dhcp = mkOption {
      type = types.bool;
      default = true;
      description = "Configure every wired interface by DHCP.";
    };
    autologin = mkOption {
      type = types.bool;
      default = false;
      description = ''
        Log in root on the console automatically, as the NixOS installer does. Handy in a home
        lab, wrong wherever someone else can reach the console.
      '';
    };
    tpm = mkOption {
      type = types.bool;
      default = true;
      description = ''
        Let tailjoin prove the machine's TPM 2.0 (a discrete TPM, or the firmware TPM of
        Intel PTT / AMD fTPM) with its key request, so the provisioner can release the key to
        that TPM alone (`services.tailjoin-provisioner.netboot.tpm`): the TPM kernel drivers and
        the resource manager `/dev/tpmrm0` (`security.tpm2`). A machine without a TPM boots as
        before (tailjoin's `tpm = "auto"` sends the plain request).
      '';
    };
    trustTailnet = mkOption {
      type = types.bool;
      default = true;
      description = ''
        Trust the tailnet interface in the firewall and allow tailscaled's UDP port in, with
        loose reverse-path filtering (needed for exit nodes and subnet routes).
      '';
    };
  };

  config = lib.mkMerge [
    {
      networking.useDHCP = lib.mkDefault cfg.dhcp;

      services.openssh = {
        enable = cfg.ssh;
        settings = {
          PasswordAuthentication = false;
          KbdInteractiveAuthentication = false;
          PermitRootLogin = lib.mkForce "prohibit-password";
        };
      };
      # The installer profile keeps sshd from starting on its own; this OS wants it at boot.
      systemd.services.sshd.wantedBy = lib.mkIf cfg.ssh (lib.mkOverride 40 ["multi-user.target"]);
      users.users.root.openssh.authorizedKeys.keys = cfg.sshAuthorizedKeys;

      services.getty.autologinUser = lib.mkOverride 40 (
        if cfg.autologin
        then "root"
        else null
      );

      networking.firewall.enable = true;
    }
    # The installer profile gives root and nixos empty passwords; without autologin, lock them
    # so the console is not an open door.
    (lib.mkIf (!cfg.autologin) {
      users.users = {
        root.initialHashedPassword = lib.mkOverride 40 "!";
        nixos.initialHashedPassword = lib.mkOverride 40 "!";
      };
    })
    # Never stranded: a machine whose boot token expired or was spent before it asked (the
    # provisioner down mid-boot, say) reboots by itself, after a jittered delay, and asks again
    # with a fresh token, rather than waiting for a person to power-cycle it. On by default
    # here (priority of mkDefault); `services.tailjoin.settings.reboot_on_key_failure.enabled
    # = false` turns it off. Only where the agent's module is imported.
    (lib.optionalAttrs (options ? services && options.services ? tailjoin) {
      services.tailjoin.settings.reboot_on_key_failure.enabled = lib.mkDefault true;
    })
    (lib.mkIf cfg.tpm {
      security.tpm2.enable = true;
      # Loaded by udev from the firmware's ACPI tables anyway; listed so a trimmed kernel
      # configuration fails the build rather than the join.
      boot.kernelModules = ["tpm_crb" "tpm_tis"];
    })
    (lib.mkIf cfg.trustTailnet {
      networking.firewall = {
        trustedInterfaces = [config.services.tailscale.interfaceName];
        allowedUDPPorts = [config.services.tailscale.port];
        checkReversePath = "loose";
      };
    })
  ];
}
