# Recipe, zero-touch netboot with pixiecore: nixpkgs' services.pixiecore answers the PXE/DHCP
# side next to your existing DHCP server (proxy DHCP, no change to the router) and serves the
# firmware over TFTP/HTTP; in API mode it asks the provisioner, for every booting machine,
# `GET <apiServer>/v1/boot/<mac>`. The provisioner answers only for an approved MAC, with the
# kernel, the initrd and a command line that carries tailjoin.key_url= and a fresh one-time boot
# token; pixiecore fetches the files from the provisioner and hands them to the machine. An
# unknown MAC waits on the pending list:
#
#   tailjoin-provisioner pending               # what asked, when, from where
#   tailjoin-provisioner approve 52:54:00:12:34:56
#
# From then on that machine boots and joins unattended, with a new token and a new ephemeral
# key at every boot. The served system is this flake's nixosConfigurations.generic-fleet (its
# tailjoin reads the key URL and the token from the kernel command line); here a placeholder
# image stands in for it, since a recipe cannot name the flake:
#   services.tailjoin-provisioner.netboot.system = inputs.tailjoin.nixosConfigurations.generic-fleet;
#
# Secrets as in netboot-fleet-provisioner.nix: the headscale API key and the TLS key by agenix.
{
  services.tailjoin-provisioner = {
    enable = true;
    # The key endpoint: HTTPS, for the booted OS.
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
      allow = {
        networks = ["10.0.0.0/24"];
        # Known machines boot at once; others go to the pending list.
        macs = ["52:54:00:12:34:56"];
      };
    };
    netboot = {
      enable = true;
      # Only pixiecore on this host asks: keep the boot listener on loopback.
      listen = "127.0.0.1:8081";
      keyUrl = "https://10.0.0.1:8443/v1/key";
      image = {
        kernel = "/nix/var/nix/profiles/netboot/bzImage";
        initrds = ["/nix/var/nix/profiles/netboot/initrd"];
        cmdline = "init=/nix/var/nix/profiles/netboot/init loglevel=4";
      };
    };
  };

  services.pixiecore = {
    enable = true;
    mode = "api";
    apiServer = "http://127.0.0.1:8081";
    # Proxy DHCP beside the LAN's own DHCP server.
    dhcpNoBind = true;
    openFirewall = true;
  };
}
