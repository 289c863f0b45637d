# The options that retyped the provisioner's settings one by one, now part of
# services.tailjoin-provisioner.settings: each still works, forwarded to its setting with a
# warning naming it (../settings-rename.nix).
{lib, ...}: let
  inherit (import ../settings-rename.nix {inherit lib;}) mkSettingsRename;
  rename = from: to: extra:
    mkSettingsRename ({
        service = "tailjoin-provisioner";
        from = lib.splitString "." from;
        to = lib.splitString "." to;
      }
      // extra);
  onlyWithNetboot.onlyIf = config: config.services.tailjoin-provisioner.netboot.enable;
in {
  imports = [
    (rename "tags" "tags" {})
    (rename "ephemeral" "ephemeral" {})
    (rename "keyExpiry" "key_expiry_secs" {})
    (rename "allow.macs" "allow.macs" {})
    (rename "allow.networks" "allow.networks" {})
    (rename "rateLimit.perMinute" "rate_limit.per_minute" {})
    (rename "rateLimit.burst" "rate_limit.burst" {})
    (rename "rateLimit.perClientPerMinute" "rate_limit.per_client_per_minute" {})
    (rename "logLevel" "log_level" {})
    # The netboot section exists only with netboot.enable: set these only then.
    (rename "netboot.tokenTtl" "netboot.token_ttl_secs" onlyWithNetboot)
    (rename "netboot.requireApproval" "netboot.require_approval" onlyWithNetboot)
    (rename "netboot.oneBootPerMac" "netboot.one_boot_per_mac" onlyWithNetboot)
    (rename "netboot.retrySecs" "netboot.retry_secs" onlyWithNetboot)
    # extraSettings meant "merged over the generated config": that is what settings is now.
    (lib.mkRenamedOptionModule ["services" "tailjoin-provisioner" "extraSettings"] ["services" "tailjoin-provisioner" "settings"])
  ];
}
