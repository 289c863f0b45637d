# Recipe: the machine mints its own key through headscale's API at every join: a fresh
# single-use, pre-authorized, ephemeral key tagged tag:servers, valid for ten minutes.
#
# The machine then holds a headscale API key, which can mint keys and manage every node: only
# for machines you trust as much as headscale itself (the headscale host, an admin box). A
# netbooted fleet should ask a provisioner instead (netboot-fleet-*.nix). Create the API key with
# `headscale apikeys create --expiration 90d` and deliver it with agenix, sops-nix or
# systemd-creds; here it is an agenix secret at /run/agenix/headscale-api-key.
{
  services.tailjoin = {
    enable = true;
    loginServer = "https://headscale.example.com";
    # The agent's settings, in its own field names; ephemeral defaults to true for a minting
    # source.
    settings.advertise_tags = ["tag:servers"];
    authKey.headscale = {
      apiKey.credential.source = "/run/agenix/headscale-api-key";
      user = "servers";
      expiry = 600;
    };
  };
}
