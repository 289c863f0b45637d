# services.tailjoin: joins this machine to a Tailscale or headscale tailnet at boot with the
# tailjoin agent, which drives tailscaled through its LocalAPI.
#
# By concern:
#   ./settings.nix   services.tailjoin.settings, the agent's JSON config itself (RFC 42), checked
#                    at build time by `tailjoin check-config`
#   ./key.nix        authKey, the key source (./key-types.nix: its types; ../mint-options.nix:
#                    the minting sources' options, declared once with the provisioner's)
#   ./health.nix     the push reporters' URLs, which are secrets
#   ./checks.nix     what every secret and path must satisfy (never a literal secret, never in
#                    the store), for the files above
#   ./unit.nix       the systemd unit, from ../tailjoin-unit.json plus the instance settings
#   ./renamed.nix    the options that retyped agent settings, forwarded to settings
#
# Keys never enter the Nix store: the key option names where the key is at run time (a file, a
# systemd credential, an environment variable, a provisioning server, the kernel command line)
# or how to mint one (headscale's API, a Tailscale OAuth client, whose secrets are named the same
# way), never the key itself, and assertions stop a build that would put a key, or a key file,
# into the store. The push reporters' URLs (services.tailjoin.health) carry tokens, so they are
# such secrets too: named, never written.
{
  lib,
  pkgs,
  ...
}: let
  inherit (lib) mkOption types;
in {
  imports = [./settings.nix ./key.nix ./health.nix ./checks.nix ./unit.nix ./renamed.nix];

  options.services.tailjoin = {
    enable = lib.mkEnableOption "tailjoin, which joins this machine to a tailnet at boot and keeps it joined";

    package = lib.mkPackageOption pkgs "tailjoin" {};

    loginServer = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "https://headscale.example.com";
      description = "Control server URL (headscale); `null` means Tailscale's own.";
    };
    waitFor = mkOption {
      type = types.listOf types.str;
      default = [];
      example = ["agenix.service" "sops-install-secrets.service"];
      description = ''
        Units to start before the agent and wait for (added to its `After=` and `Wants=`, and
        awaited by the agent over D-Bus while they are queued to start), for example the unit
        that decrypts the key.
      '';
    };
  };
}
