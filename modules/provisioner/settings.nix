# services.tailjoin-provisioner.settings: the provisioner's JSON config itself (RFC 42), in its
# own field names, checked at build time by `tailjoin-provisioner --check` rather than retyped
# here. The typed options (listen, tls, allowPlainHttp, mint, allow.bootTokens, netboot) render
# their part into it; the defaults below are the provisioner's, written out.
{
  config,
  lib,
  pkgs,
  ...
}: let
  inherit (lib) mkOption types;
  inherit (import ../secret-refs.nix {inherit lib;}) refJSON;

  cfg = config.services.tailjoin-provisioner;
  json = pkgs.formats.json {};

  # A Nix path value in the settings is given as its string, so rendering never copies a file
  # into the store.
  noPaths = v:
    if builtins.isPath v
    then toString v
    else if builtins.isAttrs v
    then lib.mapAttrs (_: noPaths) v
    else if builtins.isList v
    then map noPaths v
    else v;

  # Every allow list that is set must match: an empty one is left out, not sent as "match
  # nothing"; MAC addresses are compared in lower case.
  allow = let
    a = cfg.settings.allow or {};
  in
    lib.filterAttrs (_: v: v != [] && v != null) (a // lib.optionalAttrs (a ? macs) {macs = map lib.toLower a.macs;});
  rendered = noPaths (cfg.settings // lib.optionalAttrs (cfg.settings ? allow) {inherit allow;});

  rawConfigFile = pkgs.writeText "tailjoin-provisioner.json" (builtins.toJSON rendered);

  # Build-time validation: the provisioner reads the file and the build fails with its message
  # (naming the field) if it would refuse it at start.
  checkedConfigFile =
    pkgs.runCommand "tailjoin-provisioner-config.json" {
      nativeBuildInputs = [cfg.package];
      preferLocalBuild = true;
    } ''
      tailjoin-provisioner --config ${rawConfigFile} --check
      cp ${rawConfigFile} "$out"
    '';
in {
  options.services.tailjoin-provisioner = {
    settings = mkOption {
      type = types.submodule {freeformType = json.type;};
      default = {};
      example = lib.literalExpression ''
        {
          tags = [ "tag:netboot" ];
          key_expiry_secs = 600;
          allow.networks = [ "10.0.0.0/24" ];
          rate_limit = { per_minute = 120; burst = 20; };
          log_level = "debug";
        }
      '';
      description = ''
        The provisioner's config file (`tailjoin-provisioner --config`), in its own JSON field
        names (see secrets/README.md and docs/netboot-provisioner.md), checked at build time by
        `tailjoin-provisioner --check` (see {option}`services.tailjoin-provisioner.validateConfig`):
        a field it does not know or a value out of range fails the build, naming it.

        Among its fields: `tags` (the minted keys' tags; required with `mint.tailscaleOAuth`),
        `ephemeral` (default `true`), `key_expiry_secs` (default 300, 60 to 86400), `allow`
        (`macs`, `networks`: every list that is set must match; an empty one checks nothing),
        `rate_limit` (`per_minute`, `burst`, `per_client_per_minute`; defaults 60, 10, 6),
        `audit_log`, `log_level`, and `netboot` (`token_ttl_secs`, `require_approval`,
        `one_boot_per_mac`, `retry_secs`).

        The typed options fill in the rest: `listen`, `tls`, `allow_plain_http`, `mint`,
        `allow.boot_tokens`, the `netboot` files and URLs, `state_dir`. Never put a secret here:
        the file is in the world-readable store.
      '';
    };

    validateConfig = mkOption {
      type = types.bool;
      default = true;
      description = ''
        Run `tailjoin-provisioner --check` on the generated config at build time. Turn off only
        when the build machine cannot run the provisioner (cross builds without emulation).
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
      description = "The provisioner's config file, as generated from these options.";
    };
  };

  config = lib.mkIf cfg.enable {
    services.tailjoin-provisioner.settings = {
      # The provisioner's defaults, written out; any of them may be set in settings (with the
      # priority of an option's default, so that even a setting given with mkDefault wins).
      tags = lib.mkOptionDefault [];
      ephemeral = lib.mkOptionDefault true;
      key_expiry_secs = lib.mkOptionDefault 300;
      rate_limit = lib.mapAttrs (_: lib.mkOptionDefault) {
        per_minute = 60;
        burst = 10;
        per_client_per_minute = 6;
      };
      log_level = lib.mkOptionDefault "info";
      allow = lib.optionalAttrs (cfg.allow.bootTokens != null) {boot_tokens = refJSON cfg.allow.bootTokens;};
      tls = lib.mkIf (cfg.tls != null) (lib.filterAttrs (_: v: v != null) {
        cert_file = lib.mapNullable toString cfg.tls.certFile;
        key = refJSON cfg.tls.key;
      });
    };
  };
}
