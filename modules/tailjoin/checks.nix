# The checks every secret and path the other files name share: each file lists its path-like
# values in services.tailjoin.internal.paths and its systemd credentials in
# internal.credentials; this file asserts that no path holds the secret itself, lies in the
# store or is relative, warns about files the hardened unit cannot see, and refuses two secrets
# loaded under one credential name.
{
  config,
  lib,
  ...
}: let
  inherit (lib) mkOption types;
  inherit (import ../secret-refs.nix {inherit lib;}) isStorePath;
  inherit (import ./secret-types.nix {inherit lib;}) looksLikeKey;

  cfg = config.services.tailjoin;
  inherit (cfg.internal) paths;

  # A file the agent opens where the hardened unit cannot see it (ProtectHome=, PrivateTmp=).
  hiddenFromUnit = p: p.agentReads && builtins.isString p.value && (lib.hasPrefix "/home/" p.value || lib.hasPrefix "/tmp/" p.value);

  # A value given where a path belongs that is the secret itself: an auth key by its form; any
  # other secret (a token, an API key) also as any long string that has no slash, which no path
  # has; a push URL by its scheme (`://`, which no path has either).
  looksLikeSecret = p:
    p.secret
    != null
    && (looksLikeKey p.value
      || looksLikeUrl p
      || (p.secret != "an auth key" && builtins.isString p.value && !(lib.hasInfix "/" p.value) && builtins.stringLength p.value >= 16));

  looksLikeUrl = p: (p.isUrl or false) && builtins.isString p.value && lib.hasInfix "://" p.value;

  # The credentials the unit loads; the same credential named twice is loaded once.
  credentials = lib.unique cfg.internal.credentials;
  # Names loaded from two different places: systemd would refuse the unit.
  clashingCredentials = let
    names = map (c: c.name) credentials;
  in
    lib.unique (lib.filter (n: lib.count (x: x == n) names > 1) names);
in {
  options.services.tailjoin.internal = {
    credentials = mkOption {
      type = types.listOf types.attrs;
      default = [];
      internal = true;
      description = "The systemd credentials ({name, source, encrypted}) the unit loads, from the key source and the push reporters.";
    };
    paths = mkOption {
      type = types.listOf types.attrs;
      default = [];
      internal = true;
      description = ''
        Every path-like value the options and settings hold: {opt, value, example, secret,
        agentReads} (and the optional storeProblem, storeFix, isUrl, ref, name), checked here.
      '';
    };
    procSubsetAll = mkOption {
      type = types.bool;
      default = false;
      internal = true;
      description = "Whether the agent needs /proc/cmdline or /proc/sys, which ProcSubset=pid hides.";
    };
    tpmDevice = mkOption {
      type = types.bool;
      default = false;
      internal = true;
      description = "Whether the agent may use the TPM (/dev/tpmrm0) for a TPM-proven key request, which PrivateDevices= hides.";
    };
  };

  config = lib.mkIf cfg.enable {
    assertions =
      [
        {
          assertion = clashingCredentials == [];
          message = ''
            services.tailjoin loads two different secrets as the same systemd credential (${lib.concatStringsSep ", " clashingCredentials}),
            which systemd refuses. Give one of them another name, e.g.
              services.tailjoin.health.webhook.url.credential.name = "tailjoin-webhook-url";
          '';
        }
      ]
      ++ map (p: {
        assertion = !(looksLikeSecret p);
        message =
          if looksLikeUrl p
          then ''
            services.tailjoin.${p.opt} is a URL (it contains "://"), not a path: ${p.secret} itself, with its token.
            Put the URL into a root-only file or a credential outside the store (agenix, sops-nix, systemd-creds) and name it:
              services.tailjoin.${p.ref}.credential.source = "/run/agenix/${p.name}";   # or
              services.tailjoin.${p.ref}.file = "/run/secrets/${p.name}";
            and regenerate the URL's token (a new check or push monitor): it is now in your configuration.
          ''
          else ''
            services.tailjoin.${p.opt} looks like ${p.secret} itself, not a path.
            Write it into a root-only file outside the store (or use agenix/sops-nix) and give its path:
              services.tailjoin.${p.opt} = "${p.example}";
            and revoke it: it is now in your configuration.
          '';
      })
      paths
      ++ map (p: {
        assertion = looksLikeSecret p || !(isStorePath p.value);
        message = ''
          services.tailjoin.${p.opt} is ${
            if builtins.isPath p.value
            then "a Nix path value, which is copied into"
            else "inside"
          } the Nix store (${toString p.value}), ${p.storeProblem or "where every local user can read it"}.
          Give the path as a string that points outside the store, e.g.
            services.tailjoin.${p.opt} = "${p.example}";
          ${p.storeFix or "with the file provided at run time by agenix, sops-nix or systemd-creds."}
        '';
      })
      paths
      ++ map (p: {
        assertion = looksLikeSecret p || isStorePath p.value || lib.hasPrefix "/" (toString p.value);
        message = "services.tailjoin.${p.opt} must be an absolute path (got ${toString p.value}).";
      })
      paths;

    warnings = map (p: ''
      services.tailjoin.${p.opt} is under /home or /tmp, which the hardened tailjoin unit cannot see (ProtectHome=, PrivateTmp=).
      Use a credential (a credential.source may be anywhere) or a path under /run, /etc or /var/lib.
    '') (lib.filter hiddenFromUnit paths);
  };
}
