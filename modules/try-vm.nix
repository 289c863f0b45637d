# The generic OS as a VM to try on your own machine: `nixos-rebuild build-vm --flake .#generic`
# and `nix run .#vm -- KEYFILE` (modules/try-vm-app.nix) both build its
# `virtualisation.vmVariant`, which this module shapes. The netboot image itself is unchanged.
#
# The key reaches the VM as the system credential the generic OS reads
# (`services.tailjoin.authKey.credential`, `source = null`: `LoadCredential=<name>` without a
# path, which systemd fills from its system credential store), over qemu's fw_cfg:
#   -fw_cfg name=opt/io.systemd.credentials/tailscale-auth-key,file=/path/to/key
# PID 1 imports `opt/io.systemd.credentials/*` (and SMBIOS type 11 strings) at start
# (systemd >= 252).
{lib, ...}: {
  virtualisation.vmVariant = {
    virtualisation = {
      # The VM's serial console is the terminal qemu runs in (quit with Ctrl-a x).
      graphics = false;
      # Root on tmpfs, as on a netbooted machine: each boot is a fresh machine, and no disk
      # image is left in the directory the VM was started from.
      diskImage = null;
    };
    # PID 1 reads fw_cfg credentials from /sys/firmware/qemu_fw_cfg as it starts, before udev
    # would load the driver; load it in the initrd so that it is there, whatever systemd's own
    # early module loading does with the accelerator in use.
    boot.initrd.kernelModules = ["qemu_fw_cfg"];
    # Your own VM in your own terminal: root is logged in on its console (`journalctl -u tailjoin`,
    # `tailjoin status`). A configuration that sets tailjoin.netboot.autologin keeps its value.
    tailjoin.netboot.autologin = lib.mkDefault true;
  };
}
