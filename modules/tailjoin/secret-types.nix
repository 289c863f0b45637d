# The types of the secrets the agent reads at run time, shared by the key source (./key.nix) and
# the push reporters (./health.nix): a systemd credential, or a secret given as exactly one of a
# credential or a root-only file. Never the secret itself.
{lib}: let
  inherit (lib) mkOption types;
  inherit (import ../secret-refs.nix {inherit lib;}) pathString refSourcesSet;
in rec {
  # An auth key given where its path belongs: Tailscale's by its prefix, headscale's as long hex.
  looksLikeKey = s: builtins.isString s && (lib.hasPrefix "tskey-" s || builtins.match "[0-9a-f]{40,}" s != null);

  # A systemd credential the agent reads: `what` names what it holds, for the descriptions.
  mkCredentialType = {
    defaultName,
    exampleSource,
    what,
  }:
    types.submodule {
      options = {
        name = mkOption {
          type = types.strMatching "[A-Za-z0-9_.@-]+";
          default = defaultName;
          description = ''
            The credential's name: the agent reads ${what} from `$CREDENTIALS_DIRECTORY/<name>`.
          '';
        };
        source = mkOption {
          type = types.nullOr pathString;
          default = null;
          example = exampleSource;
          description = ''
            Absolute path of the file systemd loads the credential from at service start
            (`LoadCredential=<name>:<source>`), given as a string so that it is never copied into
            the Nix store. `null` loads the credential of the same name from the system credential
            store instead (`LoadCredential=<name>`), which is filled from the qemu `fw_cfg`
            (`opt/io.systemd.credentials/<name>`), SMBIOS type 11 or the kernel command line: the
            way to hand ${what} to a netbooted machine without baking it into the image.
          '';
        };
        encrypted = mkOption {
          type = types.bool;
          default = false;
          description = ''
            Whether the credential is encrypted with `systemd-creds encrypt` (TPM2 or the host key);
            uses `LoadCredentialEncrypted=` instead of `LoadCredential=`.
          '';
        };
      };
    };

  credentialType = mkCredentialType {
    defaultName = "tailscale-auth-key";
    exampleSource = "/run/agenix/tailscale-auth-key";
    what = "the key";
  };

  # A secret other than the key that the agent reads at run time (a bearer token, an API key, an
  # OAuth client secret): exactly one of a systemd credential or a root-only file. Never the
  # secret itself.
  mkSecretRefType = {
    defaultName,
    exampleFile,
    what,
  }:
    types.submodule {
      options = {
        credential = mkOption {
          type = types.nullOr (mkCredentialType {
            inherit defaultName what;
            exampleSource = "/run/agenix/${defaultName}";
          });
          default = null;
          example = lib.literalExpression ''{ source = "/run/agenix/${defaultName}"; }'';
          description = "Deliver ${what} as a systemd credential (recommended).";
        };
        file = mkOption {
          type = types.nullOr pathString;
          default = null;
          example = exampleFile;
          description = ''
            Absolute path of a root-only file that holds ${what}, read by the agent at run time.
            A string, never a Nix path: a path value would be copied into the world-readable
            store.
          '';
        };
      };
    };

  bearerTokenType = mkSecretRefType {
    defaultName = "tailjoin-http-token";
    exampleFile = "/run/secrets/tailjoin-http-token";
    what = "the bearer token";
  };

  # The push reporters' secrets. Every push URL carries a token (healthchecks.io's check UUID,
  # Uptime Kuma's push token, a webhook's secret path), so each is a secret named like the others.
  webhookUrlType = mkSecretRefType {
    defaultName = "tailjoin-webhook-url";
    exampleFile = "/run/secrets/tailjoin-webhook-url";
    what = "the webhook's URL";
  };

  webhookTokenType = mkSecretRefType {
    defaultName = "tailjoin-webhook-token";
    exampleFile = "/run/secrets/tailjoin-webhook-token";
    what = "the webhook's bearer token";
  };

  healthchecksUrlType = mkSecretRefType {
    defaultName = "tailjoin-healthchecks-url";
    exampleFile = "/run/secrets/tailjoin-healthchecks-url";
    what = "the healthchecks.io ping URL";
  };

  uptimeKumaUrlType = mkSecretRefType {
    defaultName = "tailjoin-uptime-kuma-url";
    exampleFile = "/run/secrets/tailjoin-uptime-kuma-url";
    what = "the Uptime Kuma push URL";
  };

  # The two paths of a secret given as credential-or-file (`ref` is the option that holds both),
  # as entries of services.tailjoin.internal.paths (see ./checks.nix).
  refPaths = prefix: ref: name: secret: [
    {
      opt = "${prefix}.file";
      value =
        if ref == null
        then null
        else ref.file;
      example = "/run/secrets/${name}";
      ref = prefix;
      inherit name secret;
      agentReads = true;
    }
    {
      opt = "${prefix}.credential.source";
      value =
        if ref == null || ref.credential == null
        then null
        else ref.credential.source;
      example = "/run/agenix/${name}";
      ref = prefix;
      inherit name secret;
      agentReads = false;
    }
  ];

  # Exactly one of credential or file for a secret reference.
  refAssertion = opt: ref: example: extra: let
    set = refSourcesSet ref;
  in {
    assertion = ref == null || builtins.length set == 1;
    message = ''
      services.tailjoin.${opt} must set exactly one of credential or file (set: ${
        if set == []
        then "none"
        else lib.concatStringsSep ", " set
      }).
      For example: services.tailjoin.${opt}.credential.source = "${example}";${extra}
    '';
  };

  refCredential = ref:
    if ref == null
    then null
    else ref.credential;
}
