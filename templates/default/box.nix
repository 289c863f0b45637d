# The always-on box: `tailjoin-provisioner` serves the netboot image (flake.nix hands it
# nixosConfigurations.machine) to the machines you approve and mints each a fresh single-use,
# ephemeral, tagged key through headscale at every boot; pixiecore answers their network boot
# beside your router's DHCP. A machine nobody approved waits, and on the box
#   tailjoin-provisioner pending
#   tailjoin-provisioner approve 52:54:00:12:34:56
# lets it in for good. Options: docs/options.md in the tailjoin flake.
#
# Secrets are files on the box's disk, readable by root only, never in the Nix store (systemd
# hands them to the provisioner as credentials):
#   /var/lib/tailjoin-secrets/headscale-api-key   `headscale apikeys create --expiration 90d`
#   /var/lib/tailjoin-secrets/tls-key.pem         the key of the certificate below
{
  nixpkgs.hostPlatform = "x86_64-linux";
  networking.hostName = "box";

  services.tailjoin-provisioner = {
    enable = true;
    # The key endpoint the booted machines call, over HTTPS.
    listen = "0.0.0.0:8443";
    openFirewall = true;
    tls = {
      certFile = "/var/lib/tailjoin-secrets/fullchain.pem";
      key.credential.source = "/var/lib/tailjoin-secrets/tls-key.pem";
    };
    mint.headscale = {
      url = "https://headscale.lab.example";
      apiKey.credential.source = "/var/lib/tailjoin-secrets/headscale-api-key";
      user = "lab";
    };
    # The provisioner's JSON config (docs/netboot-provisioner.md); checked at build time.
    settings = {
      tags = ["tag:netboot"];
      # Machines may ask from the lab network only; unknown MACs wait for `approve`.
      allow.networks = ["192.168.1.0/24"];
    };
    netboot = {
      enable = true;
      # Only pixiecore on this box asks for boots: keep the boot listener on loopback.
      listen = "127.0.0.1:8081";
      # This box as the machines reach it; written on their kernel command line.
      keyUrl = "https://192.168.1.2:8443/v1/key";
    };
  };

  # Proxy DHCP and TFTP for the machines' firmware; it asks the provisioner what to boot.
  services.pixiecore = {
    enable = true;
    mode = "api";
    apiServer = "http://127.0.0.1:8081";
    dhcpNoBind = true;
    openFirewall = true;
  };

  # The box's own disk and boot loader: yours.
  fileSystems."/" = {
    device = "/dev/disk/by-label/nixos";
    fsType = "ext4";
  };
  boot.loader.systemd-boot.enable = true;

  system.stateVersion = "26.05";
}
