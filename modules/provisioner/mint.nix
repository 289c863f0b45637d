# services.tailjoin-provisioner.mint: the backend that mints the keys (headscale's API or a
# Tailscale OAuth client), whose secret is named, never written. Renders settings.mint.
{
  config,
  lib,
  ...
}: let
  inherit (lib) mkOption types;
  # The backends' options, declared once with the agent's minting sources.
  mint = import ../mint-options.nix {inherit lib;} {
    who = "provisioner";
    inherit (import ./types.nix {inherit lib;}) mkSecretRefType;
  };

  cfg = config.services.tailjoin-provisioner;
  hs = cfg.mint.headscale;
  oauth = cfg.mint.tailscaleOAuth;
  mintSet = lib.filter (n: cfg.mint.${n} != null) ["headscale" "tailscaleOAuth"];
  # The tags of the minted keys (settings).
  tags = cfg.settings.tags or [];

  isPlainHttp = url: url != null && lib.hasPrefix "http://" (lib.toLower url);

  mintJSON =
    if hs != null
    then {headscale = mint.headscaleJSON hs hs.url;}
    else if oauth != null
    then {tailscale_oauth = mint.tailscaleOAuthJSON oauth;}
    else null;

  mintExample = ''
    services.tailjoin-provisioner.mint.headscale = {
      url = "https://headscale.example.com";
      apiKey.credential.source = "/run/agenix/headscale-api-key";
      user = "fleet";
    };'';
in {
  options.services.tailjoin-provisioner.mint = {
    headscale = mkOption {
      type = types.nullOr mint.headscaleType;
      default = null;
      example = lib.literalExpression ''
        {
          url = "https://headscale.example.com";
          apiKey.credential.source = "/run/agenix/headscale-api-key";
          user = "fleet";
        }
      '';
      description = "Mint keys through headscale's API.";
    };

    tailscaleOAuth = mkOption {
      type = types.nullOr mint.tailscaleOAuthType;
      default = null;
      example = lib.literalExpression ''
        {
          clientId = "kFAKEclientid";
          clientSecret.credential.source = "/run/agenix/tailscale-oauth-secret";
        }
      '';
      description = "Mint keys through Tailscale's API with an OAuth client (needs `settings.tags`).";
    };
  };

  config = lib.mkIf cfg.enable {
    assertions = [
      {
        assertion = builtins.length mintSet == 1;
        message = ''
          services.tailjoin-provisioner.mint must set exactly one of headscale or tailscaleOAuth (set: ${
            if mintSet == []
            then "none"
            else lib.concatStringsSep ", " mintSet
          }). For example:
          ${mintExample}
        '';
      }
      {
        assertion = oauth == null || tags != [];
        message = ''
          services.tailjoin-provisioner.mint.tailscaleOAuth needs tags: Tailscale only lets an OAuth client create keys for tagged nodes. Set
            services.tailjoin-provisioner.settings.tags = [ "tag:netboot" ];   # tags the OAuth client owns
        '';
      }
      {
        assertion = oauth == null || oauth.clientId != null;
        message = ''
          services.tailjoin-provisioner.mint.tailscaleOAuth.clientId is not set: give the OAuth client's id (not secret), e.g.
            services.tailjoin-provisioner.mint.tailscaleOAuth.clientId = "k123456CNTRL";
        '';
      }
      {
        assertion = oauth == null || oauth.clientId == null || !(lib.hasPrefix "tskey-" oauth.clientId);
        message = ''
          services.tailjoin-provisioner.mint.tailscaleOAuth.clientId looks like the client secret (tskey-client-…), not the client id.
          Put the secret into a root-only file outside the store and name it:
            services.tailjoin-provisioner.mint.tailscaleOAuth.clientSecret.credential.source = "/run/agenix/tailscale-oauth-secret";
          and revoke it: it is now in your configuration.
        '';
      }
      {
        assertion = oauth == null || lib.hasPrefix "https://" (lib.toLower oauth.apiUrl);
        message = ''
          services.tailjoin-provisioner.mint.tailscaleOAuth.apiUrl must be an https:// URL (got ${toString (oauth.apiUrl or "")}): the client
          secret is sent to it. Remove it to use https://api.tailscale.com.
        '';
      }
      {
        assertion = hs == null || hs.url != null;
        message = ''
          services.tailjoin-provisioner.mint.headscale.url is not set: name headscale's server_url, e.g.
            services.tailjoin-provisioner.mint.headscale.url = "https://headscale.example.com";
        '';
      }
      {
        assertion = hs == null || !(isPlainHttp hs.url) || hs.allowPlainHttp;
        message = ''
          services.tailjoin-provisioner.mint.headscale.url is an http:// URL (${toString (hs.url or "")}): the API key, which can manage every
          node, would cross the network in clear text. Use https://, or, only for a headscale on this host, set
            services.tailjoin-provisioner.mint.headscale.allowPlainHttp = true;
        '';
      }
      {
        assertion = hs == null || hs.user != null || tags != [];
        message = ''
          services.tailjoin-provisioner.mint.headscale sets neither a user nor tags, and headscale needs one of them to own the nodes. Set
            services.tailjoin-provisioner.mint.headscale.user = "fleet";
          or services.tailjoin-provisioner.settings.tags = [ "tag:netboot" ];
        '';
      }
    ];

    services.tailjoin-provisioner.settings = lib.optionalAttrs (mintJSON != null) {mint = mintJSON;};
  };
}
