# services.tailjoin-provisioner: `tailjoin-provisioner`, a small HTTPS service that hands a freshly
# minted, single-use, short-lived tailnet key to a netbooted machine that asks for it at boot
# (the agent's `authKey.kernelCmdline` or `authKey.http` source), after checking the machine
# against an allow list (MAC addresses, networks, one-time boot tokens).
#
# Like services.tailjoin (../tailjoin), the options name where the secrets are at run time (the headscale
# API key or OAuth client secret, the boot tokens, the TLS key), never the secrets: the JSON
# config in the store holds only credential names and paths, and assertions stop a build that
# would put a secret, or a secret file, into the store. The service runs as a dynamic user and
# reads its secrets as systemd credentials.
#
# By concern: ./settings.nix (services.tailjoin-provisioner.settings, the JSON config itself,
# checked at build time by `tailjoin-provisioner --check`), ./mint.nix (the minting backend,
# its options declared once with the agent's in ../mint-options.nix), ./secrets.nix (TLS, boot
# tokens, the checks every secret passes), ./unit.nix (the hardened unit, the firewall),
# ./netboot.nix (the provisioner issues the boot), ./renamed.nix (options that retyped
# settings, forwarded to them).
{
  config,
  lib,
  options,
  pkgs,
  ...
}: let
  inherit (lib) mkOption types;
  cfg = config.services.tailjoin-provisioner;
in {
  imports = [./settings.nix ./mint.nix ./secrets.nix ./unit.nix ./netboot.nix ./renamed.nix];

  options.services.tailjoin-provisioner = {
    enable = lib.mkEnableOption "the tailjoin provisioner (`tailjoin-provisioner`), which mints a single-use tailnet key for each netbooted machine that asks at boot and passes the allow list";

    package = mkOption {
      type = types.package;
      default =
        if options ? services.tailjoin.package
        then config.services.tailjoin.package
        else pkgs.tailjoin;
      defaultText = lib.literalExpression "config.services.tailjoin.package (pkgs.tailjoin without the tailjoin module)";
      description = "The tailjoin package; the provisioner is its `tailjoin-provisioner` binary.";
    };

    listen = mkOption {
      type = types.strMatching "(\\[[0-9A-Fa-f:.]+]|[0-9.]+):[0-9]+";
      default = "0.0.0.0:8443";
      example = "[::]:443";
      description = "Address and port to listen on (`ip:port`, IPv6 in brackets).";
    };

    openFirewall = mkOption {
      type = types.bool;
      default = false;
      description = "Open the listening TCP port in the firewall.";
    };

    allowPlainHttp = mkOption {
      type = types.bool;
      default = false;
      description = ''
        Serve plain HTTP when {option}`tls` is not set. Keys and boot tokens then cross the
        network in clear text: only on a link you trust (a dedicated provisioning VLAN).
      '';
    };
  };

  config = lib.mkIf cfg.enable {
    # What the options decide: where it listens, plain HTTP, and its state directory (the unit's).
    services.tailjoin-provisioner.settings = {
      inherit (cfg) listen;
      allow_plain_http = cfg.allowPlainHttp;
      state_dir = "/var/lib/${cfg.internal.stateDir}";
    };
  };
}
