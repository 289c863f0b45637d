# The options of the two minting backends, headscale's API and a Tailscale OAuth client, declared
# once for both that mint keys: the agent (services.tailjoin.authKey.headscale and
# .tailscaleOAuth, ./tailjoin/key-types.nix) and the provisioner
# (services.tailjoin-provisioner.mint.headscale and .tailscaleOAuth, ./provisioner/mint.nix).
# Also how they render into the JSON both read: the same `headscale` and `tailscale_oauth`
# objects, under the agent's `auth_key` and the provisioner's `mint`.
#
#   mint = import ../mint-options.nix {inherit lib;} {
#     who = "agent"; # or "provisioner": who mints, and reads the secrets
#     # The caller's type of a secret named by a credential or a file ({defaultName, what}:
#     # type), whose descriptions say who reads it.
#     inherit mkSecretRefType;
#   };
#
# gives mint.headscaleType and mint.tailscaleOAuthType (the backends' submodules), mint.caFile,
# mint.timeoutSecs and mint.expiry (their options, for other sources too), and
# mint.headscaleJSON hs url and mint.tailscaleOAuthJSON oauth (their JSON objects).
#
# What differs with `who`: the descriptions' wording (who reads the API key, which CA it
# trusts), and the key's expiry, an option of the agent's sources only (the provisioner's is
# settings.key_expiry_secs, for both backends).
{lib}: {
  who,
  mkSecretRefType,
}:
assert lib.assertOneOf "who" who ["agent" "provisioner"]; let
  inherit (lib) mkOption types;
  inherit (import ./secret-refs.nix {inherit lib;}) pathString refJSON;

  agent = who == "agent";
  # The text of a description, by who mints: {agent = …; provisioner = …;}.
  byWho = texts: texts.${who};
  nonNull = lib.filterAttrs (_: v: v != null);

  apiKeyType = mkSecretRefType {
    defaultName = "headscale-api-key";
    what = "the headscale API key";
  };
  clientSecretType = mkSecretRefType {
    defaultName = "tailscale-oauth-secret";
    what = "the OAuth client secret";
  };
in rec {
  # The CA bundle and the timeout of one request: every HTTPS client of the agent's key sources
  # but `http` has them (./tailjoin/key-types.nix uses them for kernelCmdline too).
  caFile = mkOption {
    type = types.nullOr pathString;
    default = null;
    example = byWho {
      agent = "/etc/tailjoin/lab-ca.pem";
      provisioner = "/etc/tailjoin-provisioner/api-ca.pem";
    };
    description = byWho {
      agent = ''
        Absolute path of a PEM bundle of the CA(s) that sign the server's certificate; when set,
        only these CAs are trusted (a home-lab CA). Given as a string, outside the store. `null`
        trusts the usual public CAs.
      '';
      provisioner = ''
        Absolute path of a PEM bundle of the CA(s) that sign the API server's certificate; when
        set, only these are trusted. `null` trusts the usual public CAs.
      '';
    };
  };

  timeoutSecs = mkOption {
    type = types.ints.between 1 300;
    default = 10;
    description = byWho {
      agent = "Seconds one request may take, connecting included.";
      provisioner = "Seconds one API request may take, connecting included.";
    };
  };

  # The agent's only.
  expiry = mkOption {
    type = types.ints.between 60 86400;
    default = 600;
    description = ''
      Seconds the minted key stays valid. It is single-use and spent within seconds, so keep
      this short: a key that leaks before it is used expires soon.
    '';
  };

  headscaleType = types.submodule {
    options =
      {
        url = mkOption {
          # nullOr only so that an assertion can say what to set (the agent's falls back to
          # services.tailjoin.loginServer).
          type = types.nullOr types.str;
          default = null;
          example = "https://headscale.example.com";
          description = byWho {
            agent = ''
              headscale's `server_url` (its API is `<url>/api/v1/…`). `null` means
              {option}`services.tailjoin.loginServer`.
            '';
            provisioner = "headscale's `server_url` (its API is `<url>/api/v1/…`).";
          };
        };
        apiKey = mkOption {
          type = apiKeyType;
          default = {};
          example = lib.literalExpression ''{ credential.source = "/run/agenix/headscale-api-key"; }'';
          description = byWho {
            agent = ''
              Where the agent finds the headscale API key (`headscale apikeys create`): exactly one of
              `credential` or `file`. Never the key itself. Whoever holds it can mint keys and
              manage every node: prefer a credential, ideally an encrypted one.
            '';
            provisioner = ''
              Where the provisioner finds the headscale API key (`headscale apikeys create`):
              exactly one of `credential` or `file`. Never the key itself.
            '';
          };
        };
        user = mkOption {
          type = types.nullOr (types.either types.str types.ints.unsigned);
          default = null;
          example = "fleet";
          description = byWho {
            agent = ''
              The headscale user (name or numeric id) that owns the minted keys. May stay `null` when
              `services.tailjoin.settings.advertise_tags` is set (tagged nodes).
            '';
            provisioner = "The headscale user (name or numeric id) that owns the minted keys; may stay `null` with `settings.tags`.";
          };
        };
        inherit caFile timeoutSecs;
        allowPlainHttp = mkOption {
          type = types.bool;
          default = false;
          description = byWho {
            agent = ''
              Accept an `http://` URL. The API key then crosses the network in clear text: only for
              a headscale on the same host or a link you trust.
            '';
            provisioner = "Accept an `http://` URL (a headscale on this host only: the API key crosses the network in clear text).";
          };
        };
      }
      // lib.optionalAttrs agent {inherit expiry;};
  };

  tailscaleOAuthType = types.submodule {
    options =
      {
        clientId = mkOption {
          # nullOr only so that an assertion can say what to set.
          type = types.nullOr types.str;
          default = null;
          example = "kFAKEclientid";
          description = byWho {
            agent = "The OAuth client's id (not secret; it is written into the store).";
            provisioner = "The OAuth client's id (not secret).";
          };
        };
        clientSecret = mkOption {
          type = clientSecretType;
          default = {};
          example = lib.literalExpression ''{ credential.source = "/run/agenix/tailscale-oauth-secret"; }'';
          description = byWho {
            agent = ''
              Where the agent finds the OAuth client secret (scope `auth_keys`): exactly one of
              `credential` or `file`. Never the secret itself.
            '';
            provisioner = "Where the provisioner finds the OAuth client secret (scope `auth_keys`): exactly one of `credential` or `file`.";
          };
        };
        apiUrl = mkOption {
          type = types.str;
          default = "https://api.tailscale.com";
          description = "Tailscale's API (https only).";
        };
        tailnet = mkOption {
          type = types.str;
          default = "-";
          description = "The tailnet; `-` is the OAuth client's own.";
        };
        inherit caFile timeoutSecs;
      }
      // lib.optionalAttrs agent {inherit expiry;};
  };

  # The JSON objects, in the field names both read; `url` is headscale's URL as resolved by the
  # caller (the agent's falls back to its login server).
  headscaleJSON = hs: url:
    nonNull ({
        inherit url;
        api_key = refJSON hs.apiKey;
        user = lib.mapNullable toString hs.user;
        ca_file = lib.mapNullable toString hs.caFile;
        allow_plain_http = hs.allowPlainHttp;
        timeout_secs = hs.timeoutSecs;
      }
      // lib.optionalAttrs agent {expiry_secs = hs.expiry;});

  tailscaleOAuthJSON = oauth:
    nonNull ({
        client_id = oauth.clientId;
        client_secret = refJSON oauth.clientSecret;
        api_url = oauth.apiUrl;
        inherit (oauth) tailnet;
        ca_file = lib.mapNullable toString oauth.caFile;
        timeout_secs = oauth.timeoutSecs;
      }
      // lib.optionalAttrs agent {expiry_secs = oauth.expiry;});
}
