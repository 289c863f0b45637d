# services.tailjoin.settings: the agent's JSON config itself (RFC 42), in its own field names,
# checked at build time by the agent (`tailjoin check-config`) rather than retyped here. The
# typed options (authKey, loginServer, health's push URLs, waitFor) render their part into it;
# the defaults below are the agent's, given explicitly so the file says what the agent does.
{
  config,
  lib,
  pkgs,
  ...
}: let
  inherit (lib) mkOption types;

  cfg = config.services.tailjoin;
  json = pkgs.formats.json {};
  unitSpec = builtins.removeAttrs (builtins.fromJSON (builtins.readFile ../tailjoin-unit.json)) ["_comment"];

  # A Nix path value in the settings is given as its string (an assertion in ./checks.nix
  # refuses the store paths among them), so that rendering never copies a file into the store.
  noPaths = v:
    if builtins.isPath v
    then toString v
    else if builtins.isAttrs v
    then lib.mapAttrs (_: noPaths) v
    else if builtins.isList v
    then map noPaths v
    else v;

  rawConfigFile = pkgs.writeText "tailjoin.json" (builtins.toJSON (noPaths cfg.settings));

  # Build-time validation, the way sops-nix checks its files: the agent itself reads the file
  # and the build fails with its message (naming the field) if it would refuse it at boot.
  checkedConfigFile =
    pkgs.runCommand "tailjoin-config.json" {
      nativeBuildInputs = [cfg.package];
      preferLocalBuild = true;
    } ''
      tailjoin check-config ${rawConfigFile}
      cp ${rawConfigFile} "$out"
    '';
in {
  options.services.tailjoin = {
    settings = mkOption {
      type = types.submodule {freeformType = json.type;};
      default = {};
      example = lib.literalExpression ''
        {
          hostname = "lab-node-1";
          advertise_tags = [ "tag:lab" ];
          prefs = { accept_routes = true; ssh = true; };
          join_timeout_secs = 120;
          retry = { max_attempts = 20; key_fetch_deadline_secs = 600; };
          health = { listen = "127.0.0.1:9901"; heartbeat_secs = 60; };
          log_level = "debug";
        }
      '';
      description = ''
        The agent's config file (`tailjoin run --config`), in its own JSON field names: see the
        README's configuration table and `tailjoin check-config`, which checks it at build time
        (see {option}`services.tailjoin.validateConfig`), so a field the agent does not know or a
        value out of range fails the build with the agent's message naming it.

        Among its fields: `hostname`, `advertise_tags`, `ephemeral`, `prefs` (`accept_routes`,
        `accept_dns`, `shields_up`, `advertise_routes`, `advertise_exit_node`, `ssh`,
        `operator`), `on_stopped`, `join_timeout_secs`, `retry` (`initial_delay_ms`,
        `max_delay_ms`, `max_attempts`, `key_attempts`, `key_fetch_deadline_secs`), `socket`,
        `log_level`, `health` (`listen`, `textfile`, `heartbeat_secs`, `push_timeout_secs`,
        `push_attempts`, `flush_timeout_secs`, `ca_file`, `allow_plain_http`), and
        `reboot_on_key_failure` (`enabled`, `delay_secs`, `jitter_secs`: reboot, after the delay
        plus up to the jitter, when the key cannot be had for a reason a new boot cures, such as
        an expired or spent boot token; off by default, on in the netboot profile). A path here
        (`health.textfile`, `health.ca_file`) is a string outside the store, which assertions check.

        The typed options fill in the rest: `auth_key` from {option}`services.tailjoin.authKey`,
        `login_server` from {option}`services.tailjoin.loginServer`, the push reporters from
        `services.tailjoin.health`, `wait_for_units` from {option}`services.tailjoin.waitFor`.
        Never put a secret here: the file is in the world-readable store.
      '';
    };

    validateConfig = mkOption {
      type = types.bool;
      default = true;
      description = ''
        Run `tailjoin check-config` on the generated config at build time. Turn off only when
        the build machine cannot run the agent (cross builds without emulation).
      '';
    };

    configFile = mkOption {
      type = types.path;
      readOnly = true;
      default =
        if cfg.validateConfig
        then checkedConfigFile
        else rawConfigFile;
      defaultText = lib.literalMD "the generated, validated config";
      description = "The agent's config file, as generated from {option}`services.tailjoin.settings`.";
    };
  };

  config = lib.mkIf cfg.enable {
    services.tailjoin.settings = {
      # The agent's defaults, written out; any of them may be set in settings (with the priority
      # of an option's default, so that even a setting given with mkDefault wins).
      socket = lib.mkOptionDefault "/var/run/tailscale/tailscaled.sock";
      advertise_tags = lib.mkOptionDefault [];
      prefs = lib.mapAttrs (_: lib.mkOptionDefault) {
        accept_routes = false;
        accept_dns = true;
        shields_up = false;
        advertise_routes = [];
        advertise_exit_node = false;
        ssh = false;
      };
      on_stopped = lib.mkOptionDefault "resume";
      join_timeout_secs = lib.mkOptionDefault 60;
      retry = lib.mapAttrs (_: lib.mkOptionDefault) {
        initial_delay_ms = 500;
        max_delay_ms = 30000;
        max_attempts = 10;
        key_attempts = 2;
      };
      log_level = lib.mkOptionDefault "info";
      # Never stranded: off here; the netboot profile (modules/netboot.nix) turns it on.
      reboot_on_key_failure = lib.mapAttrs (_: lib.mkOptionDefault) {
        enabled = false;
        delay_secs = 30;
        jitter_secs = 30;
      };
      # What the unit decides: its runtime directory, and the units the agent waits for over
      # D-Bus (signals, not polling) before it talks to tailscaled.
      state_dir = "/run/${unitSpec.service.RuntimeDirectory}";
      tailscaled_unit = "tailscaled.service";
      wait_for_units = ["network-online.target"] ++ cfg.waitFor;
    };
  };
}
