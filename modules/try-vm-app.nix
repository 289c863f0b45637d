# `nix run .#vm -- KEYFILE` (flake.nix: apps.<system>.vm): boots the VM variant of `nixos` (the
# generic OS, shaped by try-vm.nix) in qemu and hands it the auth key at run time, as the system
# credential its tailjoin reads, over qemu's fw_cfg. qemu reads KEYFILE when it starts: the key
# is never in the Nix store, and qemu's command line (ps) names the file, never the key. The
# checks on KEYFILE and the qemu arguments are in try-vm-app.sh.
{
  lib,
  writeShellApplication,
  coreutils,
  nixos,
}: let
  inherit (nixos) config;
  cred = config.services.tailjoin.authKey.credential;
in
  assert lib.assertMsg (cred != null && cred.source == null && !cred.encrypted)
  "try-vm-app.nix: the OS must read its key from the system credential store (services.tailjoin.authKey.credential = { source = null; encrypted = false; })";
    writeShellApplication {
      name = "tailjoin-vm";
      runtimeInputs = [coreutils];
      text =
        ''
          runner=${lib.escapeShellArg "${config.system.build.vm}/bin/run-${config.system.name}-vm"}
          credential=${lib.escapeShellArg cred.name}
          store=${lib.escapeShellArg builtins.storeDir}
        ''
        + builtins.readFile ./try-vm-app.sh;
      meta.description = "Boot the tailjoin generic OS in qemu; its auth key comes from a file, as a systemd credential";
    }
