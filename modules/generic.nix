# nixosConfigurations.generic: a generic minimal netboot OS for a home lab. It joins the tailnet
# with tailjoin and contains no key: the key arrives at boot as the system credential
# `tailscale-auth-key`, e.g. from qemu
#   -fw_cfg name=opt/io.systemd.credentials/tailscale-auth-key,file=/path/to/key
# or SMBIOS type 11, and reaches the agent through LoadCredential=.
# Extend it with your own keys and control server:
#   generic.extendModules { modules = [ { tailjoin.netboot.sshAuthorizedKeys = [ "ssh-ed25519 …" ];
#                                         services.tailjoin.loginServer = "https://hs.example"; } ]; }
{lib, ...}: {
  networking.hostName = lib.mkDefault "tailjoin-generic";

  services.tailjoin = {
    enable = true;
    authKey.credential = {
      name = "tailscale-auth-key";
      source = null;
    };
  };

  system.stateVersion = "26.05";
}
