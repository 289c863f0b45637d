# The types of services.tailjoin.authKey: where the agent finds the key at run time (a file, a
# systemd credential, an environment variable, a provisioning server, the kernel command line)
# or how it mints one (headscale's API, a Tailscale OAuth client). Used by ./key.nix.
{lib}: let
  inherit (lib) mkOption types;
  inherit (import ../secret-refs.nix {inherit lib;}) pathString;
  st = import ./secret-types.nix {inherit lib;};
  inherit (st) credentialType bearerTokenType;
  # The minting sources' options, declared once with the provisioner's (../mint-options.nix).
  mint = import ../mint-options.nix {inherit lib;} {
    who = "agent";
    mkSecretRefType = {
      defaultName,
      what,
    }:
      st.mkSecretRefType {
        inherit defaultName what;
        exampleFile = "/run/secrets/${defaultName}";
      };
  };
  # `tpm` of the sources that POST to a provisioner (http, kernelCmdline).
  tpmOption = mkOption {
    type = types.nullOr (types.enum ["auto" "required" "off"]);
    default = null;
    example = "required";
    description = ''
      Whether a `post` proves the machine's TPM 2.0 to the provisioner (its endorsement key and
      an attestation key; the provisioner's challenge is unwrapped by TPM2_ActivateCredential
      and the key comes back sealed to it). `auto`: when the machine has a TPM
      (`TAILJOIN_TPM_TCTI` is set or /dev/tpmrm0 exists); if it cannot be used, a warning says
      why and the request goes without. `required`: no usable TPM is an error. `off`: never.
      `null` leaves it to the agent: `auto`. A provisioner that does not use TPMs answers as
      before. The unit then may open /dev/tpmrm0 (`DeviceAllow=`, `PrivateDevices=false`),
      except for an http source with `tpm = "off"`.
    '';
  };
in rec {
  # The minting sources' JSON (headscaleJSON, tailscaleOAuthJSON), for ./key.nix.
  inherit mint;

  httpType = types.submodule {
    options = {
      url = mkOption {
        # nullOr only so that an assertion can say what to set; the agent needs a URL.
        type = types.nullOr types.str;
        default = null;
        example = "https://prov.lan:8443/key";
        description = ''
          URL the agent fetches the key from at boot. Must be `https://` unless
          {option}`allowPlainHttp` is set. It is written into the world-readable store: put no
          secret in it (no one-time token in the query string); use {option}`bearerToken`.
        '';
      };
      method = mkOption {
        type = types.enum ["get" "post"];
        default = "get";
        description = ''
          `get`, or `post`, which sends the machine's identity (hostname, machine id, addresses)
          as a JSON body so the server can decide which key to hand out.
        '';
      };
      bearerToken = mkOption {
        type = types.nullOr bearerTokenType;
        default = null;
        example = lib.literalExpression ''{ credential.source = "/run/agenix/tailjoin-http-token"; }'';
        description = ''
          Where the agent finds the token it sends as `Authorization: Bearer <token>`: exactly one
          of `credential` or `file`. Never the token itself. `null` sends no token.
        '';
      };
      caFile = mkOption {
        type = types.nullOr pathString;
        default = null;
        example = "/etc/tailjoin/prov-ca.pem";
        description = ''
          Absolute path of a PEM bundle of the CA(s) that sign the server's certificate; when
          set, only these CAs are trusted (a home-lab CA). Given as a string, outside the store.
          `null` trusts the usual public CAs.
        '';
      };
      response = mkOption {
        type = types.enum ["raw" "json"];
        default = "raw";
        description = ''
          How the response holds the key: `raw` (the body is the key) or `json` (a JSON object
          whose field {option}`jsonField` is the key).
        '';
      };
      jsonField = mkOption {
        type = types.nullOr (types.strMatching ".+");
        default = null;
        example = "key";
        description = ''
          The JSON field that holds the key, with `response = "json"` only; `null` means `key`.
        '';
      };
      timeoutSecs = mkOption {
        type = types.ints.between 1 300;
        default = 10;
        description = "Seconds one request may take, connecting included.";
      };
      maxResponseBytes = mkOption {
        type = types.ints.between 64 1048576;
        default = 16384;
        description = "Largest response the agent accepts, in bytes.";
      };
      allowPlainHttp = mkOption {
        type = types.bool;
        default = false;
        description = ''
          Accept an `http://` URL. The key then crosses the network in clear text: only on a
          link you trust, never on a shared network.
        '';
      };
      tpm = tpmOption;
    };
  };

  envType = types.submodule {
    options = {
      name = mkOption {
        type = types.strMatching "[A-Za-z_][A-Za-z0-9_]*";
        default = "TS_AUTHKEY";
        description = "Name of the environment variable that holds the key.";
      };
      environmentFile = mkOption {
        type = types.nullOr pathString;
        default = null;
        example = "/run/secrets/tailjoin.env";
        description = ''
          Absolute path of a file with `<name>=<key>`, passed to the unit as `EnvironmentFile=`.
          Given as a string so it is never copied into the store. `null` if something else sets
          the variable (a drop-in, for example).
        '';
      };
    };
  };

  kernelCmdlineType = types.submodule {
    options = {
      keyUrl = mkOption {
        # One kernel parameter: no blanks or quotes.
        type = types.nullOr (types.strMatching "[^[:space:]\"]+");
        default = null;
        example = "https://prov.lan:8443/v1/key";
        description = ''
          The provisioner's URL, added to the kernel command line as `tailjoin.key_url=<url>`
          ({option}`boot.kernelParams`, which a netboot image's iPXE script carries). It is
          public: put no token in it. `null` leaves it to whoever boots the machine (an iPXE
          script that adds `tailjoin.key_url=` next to the per-machine `tailjoin.boot_token=`).
        '';
      };
      allowKey = mkOption {
        type = types.bool;
        default = false;
        description = ''
          Also accept `tailjoin.auth_key=<key>`, the key itself, on the kernel command line. Every
          local user can read it in /proc/cmdline, and anyone who can read the boot script can
          too: only for throw-away lab machines. Without it such a parameter is an error.
        '';
      };
      path = mkOption {
        type = types.nullOr pathString;
        default = null;
        example = "/run/tailjoin-test/cmdline";
        description = "The file holding the kernel command line; `null` means /proc/cmdline.";
      };
      method = mkOption {
        type = types.enum ["get" "post"];
        default = "post";
        description = ''
          `post` (sends the machine's identity: hostname, machine id, boot id, MAC addresses, which
          the provisioner checks) or `get`.
        '';
      };
      response = mkOption {
        type = types.enum ["raw" "json"];
        default = "json";
        description = ''
          How the response holds the key: `json` (a JSON object whose field {option}`jsonField`
          is the key; what `tailjoin-provisioner` answers) or `raw` (the body is the key).
        '';
      };
      jsonField = mkOption {
        type = types.nullOr (types.strMatching ".+");
        default = null;
        example = "key";
        description = "The JSON field that holds the key, with `response = \"json\"` only; `null` means `key`.";
      };
      # The CA file and timeout of the agent's minting sources (../mint-options.nix).
      inherit (mint) caFile;
      timeoutSecs =
        mint.timeoutSecs
        // {
          # Longer than the provisioner's own mint timeout (10 s), so that it answers first.
          default = 30;
        };
      maxResponseBytes = mkOption {
        type = types.ints.between 64 1048576;
        default = 16384;
        description = "Largest response the agent accepts, in bytes.";
      };
      allowPlainHttp = mkOption {
        type = types.bool;
        default = false;
        description = ''
          Accept an `http://` `tailjoin.key_url`. The key and the boot token then cross the
          network in clear text: only on a link you trust.
        '';
      };
      tpm =
        tpmOption
        // {
          description =
            tpmOption.description
            + ''

              The kernel parameter `tailjoin.tpm=auto|required|off` overrides it.
            '';
        };
    };
  };

  keySourceType = types.submodule {
    options = {
      file = mkOption {
        type = types.nullOr pathString;
        default = null;
        example = "/run/secrets/tailscale-auth-key";
        description = ''
          Absolute path of a root-only file that holds the key, read by the agent at run time.
          A string, never a Nix path: a path value would be copied into the world-readable
          store. Files under /home or /tmp are hidden from the hardened unit.
        '';
      };
      credential = mkOption {
        type = types.nullOr credentialType;
        default = null;
        example = lib.literalExpression ''{ source = "/run/agenix/tailscale-auth-key"; }'';
        description = "Deliver the key as a systemd credential (recommended).";
      };
      env = mkOption {
        type = types.nullOr envType;
        default = null;
        example = lib.literalExpression ''{ name = "TS_AUTHKEY"; environmentFile = "/run/secrets/tailjoin.env"; }'';
        description = "Read the key from an environment variable of the unit.";
      };
      http = mkOption {
        type = types.nullOr httpType;
        default = null;
        example = lib.literalExpression ''
          {
            url = "https://prov.lan:8443/key";
            caFile = "/etc/tailjoin/prov-ca.pem";
            bearerToken.credential.source = "/run/agenix/tailjoin-http-token";
          }
        '';
        description = "Fetch the key from a provisioning server over HTTP(S) at boot.";
      };
      kernelCmdline = mkOption {
        type = types.nullOr kernelCmdlineType;
        default = null;
        example = lib.literalExpression ''{ keyUrl = "https://prov.lan:8443/v1/key"; caFile = "/etc/tailjoin/prov-ca.pem"; }'';
        description = ''
          Fetch the key at boot from the provisioner named on the kernel command line
          (`tailjoin.key_url=URL`), sending `tailjoin.boot_token=TOKEN` as a bearer token: one
          netboot image for the whole fleet, with a per-machine one-time token added by the iPXE
          script that boots it. See `tailjoin-provisioner` and
          {option}`services.tailjoin-provisioner`.
        '';
      };
      headscale = mkOption {
        type = types.nullOr mint.headscaleType;
        default = null;
        example = lib.literalExpression ''{ apiKey.credential.source = "/run/agenix/headscale-api-key"; user = "fleet"; }'';
        description = ''
          Mint a fresh single-use, pre-authorized key through headscale's API at every join
          (tagged with `services.tailjoin.settings.advertise_tags`, ephemeral unless
          `settings.ephemeral` is `false`).
        '';
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
        description = ''
          Mint a fresh single-use, pre-authorized key through Tailscale's API with an OAuth
          client at every join. Tailscale demands tags on such keys: set
          `services.tailjoin.settings.advertise_tags` to tags the client owns.
        '';
      };
    };
  };
}
