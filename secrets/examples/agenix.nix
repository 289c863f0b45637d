# Recipe: one machine, its auth key an agenix secret, handed to the agent as a systemd credential.
#
# Needs agenix's NixOS module (github:ryantm/agenix) in the same configuration. The .age file is
# encrypted to the machine's SSH host key (`agenix -e tailscale-auth-key.age`), so it may sit in
# your repository and the store; agenix decrypts it at activation into /run/agenix (a ramfs,
# root-only), and systemd copies it into the agent's private credential directory at start.
# Nothing here is the key.
{config, ...}: {
  age.secrets.tailscale-auth-key.file = ./tailscale-auth-key.age;

  services.tailjoin = {
    enable = true;
    loginServer = "https://headscale.example.com";
    # "/run/agenix/tailscale-auth-key": LoadCredential=tailscale-auth-key:/run/agenix/tailscale-auth-key
    authKey.credential.source = config.age.secrets.tailscale-auth-key.path;
  };
}
