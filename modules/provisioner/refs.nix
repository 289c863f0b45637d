# What the provisioner's options name at run time, derived from its config: every secret
# reference (the TLS key, the minting backend's secret, the boot tokens), every path-like value
# the assertions check, and the credentials the unit loads. Shared by ./secrets.nix and ./unit.nix.
{
  lib,
  cfg,
}: let
  hs = cfg.mint.headscale;
  oauth = cfg.mint.tailscaleOAuth;
  inherit (cfg) tls;
  tokens = cfg.allow.bootTokens;
in rec {
  # Every secret the provisioner names, with the option that names it and the path to suggest.
  secretRefs =
    lib.optional (tls != null) {
      opt = "tls.key";
      ref = tls.key;
      name = "tls-key";
    }
    ++ lib.optional (hs != null) {
      opt = "mint.headscale.apiKey";
      ref = hs.apiKey;
      name = "headscale-api-key";
    }
    ++ lib.optional (oauth != null) {
      opt = "mint.tailscaleOAuth.clientSecret";
      ref = oauth.clientSecret;
      name = "tailscale-oauth-secret";
    }
    ++ lib.optional (tokens != null) {
      opt = "allow.bootTokens";
      ref = tokens;
      name = "boot-tokens";
    };

  # The path-like values the options hold: secret = whether a secret given there by mistake is
  # possible (and the store is no place for the file).
  paths = lib.filter (p: p.value != null) (
    lib.concatMap (s: [
      {
        opt = "${s.opt}.file";
        value = s.ref.file;
        example = "/run/secrets/${s.name}";
        secret = true;
      }
      {
        opt = "${s.opt}.credential.source";
        value =
          if s.ref.credential == null
          then null
          else s.ref.credential.source;
        example = "/run/agenix/${s.name}";
        secret = true;
      }
    ])
    secretRefs
    ++ lib.optional (hs != null) {
      opt = "mint.headscale.caFile";
      value = hs.caFile;
      example = "/etc/tailjoin-provisioner/api-ca.pem";
      secret = false;
    }
    ++ lib.optional (oauth != null) {
      opt = "mint.tailscaleOAuth.caFile";
      value = oauth.caFile;
      example = "/etc/tailjoin-provisioner/api-ca.pem";
      secret = false;
    }
  );

  credentials = lib.filter (c: c != null) (map (s: s.ref.credential) secretRefs);
  credentialNames = map (c: c.name) credentials;
  duplicateNames = lib.unique (lib.filter (n: lib.count (m: m == n) credentialNames > 1) credentialNames);
}
