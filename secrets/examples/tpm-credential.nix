# Recipe: the auth key as a TPM2-sealed systemd credential, which only this machine's TPM can
# open (a copied disk image is useless). On the machine, as root, once:
#
#   systemd-creds encrypt --with-key=tpm2 --name=tailscale-auth-key \
#     /run/keys/new-key /etc/credstore.encrypted/tailscale-auth-key
#   shred -u /run/keys/new-key
#
# The unit then uses LoadCredentialEncrypted=, and systemd decrypts the key into the agent's
# private credential directory at start.
{
  services.tailjoin = {
    enable = true;
    loginServer = "https://headscale.example.com";
    authKey.credential = {
      name = "tailscale-auth-key";
      source = "/etc/credstore.encrypted/tailscale-auth-key";
      encrypted = true;
    };
  };
}
