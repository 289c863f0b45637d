# Recipe: one machine, its auth key a sops-nix secret, handed to the agent as a systemd credential.
#
# Needs sops-nix's NixOS module (github:Mic92/sops-nix) and a sops file with a
# `tailscale-auth-key` entry (`sops.defaultSopsFile`). sops-nix decrypts it at activation to
# /run/secrets/tailscale-auth-key (root-only, outside the store); systemd copies it into the
# agent's private credential directory at start. Nothing here is the key.
{config, ...}: {
  sops.secrets.tailscale-auth-key = {
    # A rotated key reaches a machine that has to log in again.
    restartUnits = ["tailjoin.service"];
  };

  services.tailjoin = {
    enable = true;
    loginServer = "https://headscale.example.com";
    authKey.credential.source = config.sops.secrets.tailscale-auth-key.path;
  };
}
