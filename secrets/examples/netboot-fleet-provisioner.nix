# Recipe, provisioner side: one always-on box runs `tailjoin-provisioner`, which mints a fresh
# single-use, ephemeral, tag:netboot key through headscale for each netbooted machine that asks
# (netboot-fleet-machine.nix), if it boots from the lab network and brings a one-time boot token.
#
# Secrets, all outside the store and delivered by agenix here (any file works as a credential
# source; systemd reads it as root and hands it to the service's dynamic user):
#   /run/agenix/headscale-api-key   `headscale apikeys create --expiration 90d`
#   /run/agenix/boot-tokens         one token per line, an optional label, '#' comments; each
#                                   works once, e.g.
#                                     fake-boot-token-01 rack1-node1
#                                     fake-boot-token-02 rack1-node2
#   /run/agenix/prov-tls-key        the private key of the certificate below
# The certificate chain is public; the machines trust the lab CA that signed it.
{
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
    allow.bootTokens.credential.source = "/run/agenix/boot-tokens";
    # The provisioner's own settings, in its config file's field names.
    settings = {
      tags = ["tag:netboot"];
      key_expiry_secs = 300;
      allow.networks = ["10.0.0.0/24"];
    };
  };
}
