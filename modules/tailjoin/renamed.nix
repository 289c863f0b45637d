# The options that retyped the agent's settings one by one, now part of services.tailjoin.settings:
# each still works, forwarded to its setting with a warning naming it (../settings-rename.nix).
{lib, ...}: let
  inherit (import ../settings-rename.nix {inherit lib;}) mkSettingsRename;
  rename = from: to:
    mkSettingsRename {
      service = "tailjoin";
      inherit from to;
    };
  # Old option (a path under services.tailjoin) = new setting (a path under settings).
  renames = {
    "hostname" = "hostname";
    "tags" = "advertise_tags";
    "ephemeral" = "ephemeral";
    "prefs.acceptRoutes" = "prefs.accept_routes";
    "prefs.acceptDns" = "prefs.accept_dns";
    "prefs.shieldsUp" = "prefs.shields_up";
    "prefs.advertiseRoutes" = "prefs.advertise_routes";
    "prefs.advertiseExitNode" = "prefs.advertise_exit_node";
    "prefs.ssh" = "prefs.ssh";
    "prefs.operator" = "prefs.operator";
    "logLevel" = "log_level";
    "onStopped" = "on_stopped";
    "joinTimeout" = "join_timeout_secs";
    "retry.initialDelayMs" = "retry.initial_delay_ms";
    "retry.maxDelayMs" = "retry.max_delay_ms";
    "retry.maxAttempts" = "retry.max_attempts";
    "retry.keyAttempts" = "retry.key_attempts";
    "retry.keyFetchDeadline" = "retry.key_fetch_deadline_secs";
    "socket" = "socket";
    "health.listen" = "health.listen";
    "health.textfile" = "health.textfile";
    "health.heartbeatSecs" = "health.heartbeat_secs";
    "health.pushTimeoutSecs" = "health.push_timeout_secs";
    "health.pushAttempts" = "health.push_attempts";
    "health.flushTimeoutSecs" = "health.flush_timeout_secs";
    "health.caFile" = "health.ca_file";
    "health.allowPlainHttp" = "health.allow_plain_http";
  };
in {
  imports =
    lib.mapAttrsToList (from: to: rename (lib.splitString "." from) (lib.splitString "." to)) renames
    # extraSettings meant "merged over the generated config": that is what settings is now.
    ++ [(lib.mkRenamedOptionModule ["services" "tailjoin" "extraSettings"] ["services" "tailjoin" "settings"])];
}
