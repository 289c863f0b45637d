# Recipe, zero-touch netboot with a DHCP server that already chains iPXE (dnsmasq here; ISC
# dhcpd and Kea work the same way): plain PXE firmware gets iPXE by TFTP, and iPXE is told to
# fetch http://10.0.0.1:8081/v1/boot.ipxe from the provisioner. That first script asks again
# with the machine's MAC (`?mac=${net0/mac}`); for an approved MAC the answer loads the kernel
# and initrd from the provisioner and puts tailjoin.key_url= and a fresh one-time boot token on
# the kernel command line. A refused machine prints why on its console and asks again later:
#
#   tailjoin: 52:54:00:12:34:57 is waiting for approval; on the provisioner run: tailjoin-provisioner approve 52:54:00:12:34:57
#
# The boot script travels over plain HTTP (most iPXE builds have no TLS): a token seen on the
# wire is worth one key, for that MAC, for settings.netboot.token_ttl_secs seconds. The key
# itself is fetched over HTTPS.
# Serve this flake's nixosConfigurations.generic-fleet (a placeholder image stands in for it):
#   services.tailjoin-provisioner.netboot.system = inputs.tailjoin.nixosConfigurations.generic-fleet;
{pkgs, ...}: {
  services.tailjoin-provisioner = {
    enable = true;
    listen = "0.0.0.0:8443";
    openFirewall = true;
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
      allow.networks = ["10.0.0.0/24"];
      netboot.token_ttl_secs = 180;
    };
    netboot = {
      enable = true;
      listen = "0.0.0.0:8081";
      openFirewall = true;
      keyUrl = "https://10.0.0.1:8443/v1/key";
      image = {
        kernel = "/nix/var/nix/profiles/netboot/bzImage";
        initrds = ["/nix/var/nix/profiles/netboot/initrd"];
        cmdline = "init=/nix/var/nix/profiles/netboot/init loglevel=4";
      };
    };
  };

  services.dnsmasq = {
    enable = true;
    settings = {
      interface = "lan0";
      dhcp-range = ["10.0.0.100,10.0.0.200,12h"];
      # iPXE identifies itself with DHCP option 175.
      dhcp-match = "set:ipxe,175";
      dhcp-boot = [
        "tag:!ipxe,undionly.kpxe"
        "tag:ipxe,http://10.0.0.1:8081/v1/boot.ipxe"
      ];
      enable-tftp = true;
      tftp-root = "${pkgs.ipxe}";
    };
  };
}
