# Recipe: a VM (or a machine whose BMC can set SMBIOS strings) that gets its key from the
# hypervisor as a system credential: nothing in the image, nothing on disk. On the host:
#
#   printf 'io.systemd.credential:tailscale-auth-key=%s' "$(cat /run/keys/ts-key)" > /run/keys/vm1.smbios
#   qemu-system-x86_64 … -smbios type=11,path=/run/keys/vm1.smbios
#
# (a file, so the key stays off qemu's command line; or
# `-fw_cfg name=opt/io.systemd.credentials/tailscale-auth-key,file=/run/keys/ts-key`). systemd
# imports it as a system credential, and `LoadCredential=tailscale-auth-key` (no path) hands it
# to the agent.
{
  services.tailjoin = {
    enable = true;
    loginServer = "https://headscale.example.com";
    authKey.credential = {
      name = "tailscale-auth-key";
      source = null;
    };
  };
}
