# The netboot machine: a minimal NixOS that boots over the network, runs from RAM and joins the
# tailnet. It takes its key from the provisioner on the box, which names itself and a one-time
# boot token on the kernel command line; the machine's node is ephemeral, gone after it powers
# off. Options: docs/options.md in the tailjoin flake.
{
  nixpkgs.hostPlatform = "x86_64-linux";
  networking.hostName = "lab-machine";

  # Your public SSH key, for root logins (passwords are off).
  tailjoin.netboot.sshAuthorizedKeys = ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPLACEHOLDERPLACEHOLDERPLACEHOLDERPLAC you@laptop"];

  services.tailjoin = {
    enable = true;
    # Your headscale; leave it out for Tailscale's own control server.
    loginServer = "https://headscale.lab.example";
    # The key URL and the boot token come from the kernel command line. If the box's certificate
    # is signed by your own CA, name it here (it is public, it may be in the image):
    #   caFile = "/etc/tailjoin/lab-ca.pem";  with environment.etc."tailjoin/lab-ca.pem".source = ./lab-ca.pem;
    authKey.kernelCmdline = {};
  };

  system.stateVersion = "26.05";
}
