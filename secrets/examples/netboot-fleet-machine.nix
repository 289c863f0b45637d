# Recipe, machine side: every machine of the fleet boots the same image, which holds no secret.
# At boot the agent reads the kernel command line, posts the machine's identity to the
# provisioner named by tailjoin.key_url= with the one-time tailjoin.boot_token= as a bearer token,
# and joins with the key it gets back (see netboot-fleet-provisioner.nix).
#
# keyUrl below puts tailjoin.key_url= into boot.kernelParams, which nixpkgs' netboot.ipxe
# carries; the token is per machine, so the iPXE script that serves each machine adds it through
# the `cmdline` variable netboot.ipxe appends:
#
#   #!ipxe
#   set cmdline tailjoin.boot_token=fake-boot-token-01
#   chain http://10.0.0.1/netboot/netboot.ipxe
#
# A token works once: the next boot needs a new one (or allow the machine by MAC or network).
{
  services.tailjoin = {
    enable = true;
    loginServer = "https://headscale.example.com";
    # No tags here: the provisioner mints keys that carry the tags, and headscale (0.29) refuses a
    # registration with a pre-auth key that also requests tags.
    authKey.kernelCmdline = {
      keyUrl = "https://10.0.0.1:8443/v1/key";
      # The lab CA that signed the provisioner's certificate (public, so it may be in the image:
      # environment.etc."tailjoin/prov-ca.pem".source = ./lab-ca.pem;).
      caFile = "/etc/tailjoin/prov-ca.pem";
    };
  };
}
