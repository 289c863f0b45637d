# services.tailjoin: joins this machine to a Tailscale or headscale tailnet at boot with the
# tailjoin agent, which drives tailscaled through its LocalAPI.
#
# The invariant part of the unit (ordering, restart policy, hardening) is read from
# ./tailjoin-unit.json, the one source of truth that the non-Nix boot test renders too; this
# module adds only the instance settings (ExecStart, the credentials, the environment file, the
# health textfile's directory, and ProcSubset=all for the kernel command line source, HTTP POSTs
# and push reports: ProcSubset=pid hides /proc/cmdline and /proc/sys).
#
# Keys never enter the Nix store: the key option names where the key is at run time (a file, a
# systemd credential, an environment variable, a provisioning server, the kernel command line)
# or how to mint one (headscale's API, a Tailscale OAuth client, whose secrets are named the same
# way), never the key itself, and assertions stop a build that would put a key, or a key file,
# into the store. The push reporters' URLs (services.tailjoin.health) carry tokens, so they are
# such secrets too: named, never written.
{
  config,
  lib,
  pkgs,
  ...
}: let
  inherit (lib) mkOption types;
  inherit (import ./secret-refs.nix {inherit lib;}) pathString isStorePath refSourcesSet refJSON loadCredentials;

  cfg = config.services.tailjoin;

  unitSpec = builtins.removeAttrs (builtins.fromJSON (builtins.readFile ./tailjoin-unit.json)) ["_comment"];

  # A string that names a file outside the store. Checked by assertions (with a fix) rather than
  # by the type, so the message can say what to do instead.

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

  headscaleApiKeyType = mkSecretRefType {
    defaultName = "headscale-api-key";
    exampleFile = "/run/secrets/headscale-api-key";
    what = "the headscale API key";
  };

  oauthSecretType = mkSecretRefType {
    defaultName = "tailscale-oauth-secret";
    exampleFile = "/run/secrets/tailscale-oauth-secret";
    what = "the OAuth client secret";
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

  # A push URL option: where the agent finds the URL. A bare string is accepted by the type only
  # so that an assertion can explain what to do instead; it never reaches a file.
  mkPushUrlOption = {
    refType,
    defaultName,
    what,
    does,
  }:
    mkOption {
      type = types.nullOr (types.either types.str refType);
      default = null;
      example = lib.literalExpression ''{ credential.source = "/run/agenix/${defaultName}"; }'';
      description = ''
        Where the agent finds ${what}: exactly one of `credential` or `file`. Never the URL
        itself: it carries a token that lets anyone who has it report for this machine, and
        anything in a Nix expression ends up in the world-readable store. ${does} `null` turns
        this reporter off.
      '';
    };

  # The push settings' defaults, which are the agent's: rendered explicitly when a reporter is
  # set, otherwise only when changed (so that the agent still checks them).
  pushDefaults = {
    heartbeatSecs = 300;
    pushTimeoutSecs = 10;
    pushAttempts = 5;
    flushTimeoutSecs = 2;
    caFile = null;
    allowPlainHttp = false;
  };

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

  caFileOption = mkOption {
    type = types.nullOr pathString;
    default = null;
    example = "/etc/tailjoin/lab-ca.pem";
    description = ''
      Absolute path of a PEM bundle of the CA(s) that sign the server's certificate; when set,
      only these CAs are trusted (a home-lab CA). Given as a string, outside the store. `null`
      trusts the usual public CAs.
    '';
  };

  timeoutOption = mkOption {
    type = types.ints.between 1 300;
    default = 10;
    description = "Seconds one request may take, connecting included.";
  };

  expiryOption = mkOption {
    type = types.ints.between 60 86400;
    default = 600;
    description = ''
      Seconds the minted key stays valid. It is single-use and spent within seconds, so keep
      this short: a key that leaks before it is used expires soon.
    '';
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
          is the key; what `tailjoin provision` answers) or `raw` (the body is the key).
        '';
      };
      jsonField = mkOption {
        type = types.nullOr (types.strMatching ".+");
        default = null;
        example = "key";
        description = "The JSON field that holds the key, with `response = \"json\"` only; `null` means `key`.";
      };
      caFile = caFileOption;
      timeoutSecs =
        timeoutOption
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
    };
  };

  headscaleType = types.submodule {
    options = {
      url = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "https://headscale.example.com";
        description = ''
          headscale's `server_url` (its API is `<url>/api/v1/…`). `null` means
          {option}`services.tailjoin.loginServer`.
        '';
      };
      apiKey = mkOption {
        type = headscaleApiKeyType;
        default = {};
        example = lib.literalExpression ''{ credential.source = "/run/agenix/headscale-api-key"; }'';
        description = ''
          Where the agent finds the headscale API key (`headscale apikeys create`): exactly one of
          `credential` or `file`. Never the key itself. Whoever holds it can mint keys and
          manage every node: prefer a credential, ideally an encrypted one.
        '';
      };
      user = mkOption {
        type = types.nullOr (types.either types.str types.ints.unsigned);
        default = null;
        example = "fleet";
        description = ''
          The headscale user (name or numeric id) that owns the minted keys. May stay `null` when
          {option}`services.tailjoin.tags` is set (tagged nodes).
        '';
      };
      expiry = expiryOption;
      caFile = caFileOption;
      allowPlainHttp = mkOption {
        type = types.bool;
        default = false;
        description = ''
          Accept an `http://` URL. The API key then crosses the network in clear text: only for
          a headscale on the same host or a link you trust.
        '';
      };
      timeoutSecs = timeoutOption;
    };
  };

  tailscaleOAuthType = types.submodule {
    options = {
      clientId = mkOption {
        # nullOr only so that an assertion can say what to set.
        type = types.nullOr types.str;
        default = null;
        example = "kFAKEclientid";
        description = "The OAuth client's id (not secret; it is written into the store).";
      };
      clientSecret = mkOption {
        type = oauthSecretType;
        default = {};
        example = lib.literalExpression ''{ credential.source = "/run/agenix/tailscale-oauth-secret"; }'';
        description = ''
          Where the agent finds the OAuth client secret (scope `auth_keys`): exactly one of
          `credential` or `file`. Never the secret itself.
        '';
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
      expiry = expiryOption;
      caFile = caFileOption;
      timeoutSecs = timeoutOption;
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
          script that boots it. See `tailjoin provision` and
          {option}`services.tailjoin-provisioner`.
        '';
      };
      headscale = mkOption {
        type = types.nullOr headscaleType;
        default = null;
        example = lib.literalExpression ''{ apiKey.credential.source = "/run/agenix/headscale-api-key"; user = "fleet"; }'';
        description = ''
          Mint a fresh single-use, pre-authorized key through headscale's API at every join
          (tagged with {option}`services.tailjoin.tags`, ephemeral unless
          {option}`services.tailjoin.ephemeral` is turned off).
        '';
      };
      tailscaleOAuth = mkOption {
        type = types.nullOr tailscaleOAuthType;
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
          {option}`services.tailjoin.tags` to tags the client owns.
        '';
      };
    };
  };

  key = cfg.authKey;
  keyIsSource = builtins.isAttrs key;
  sourceNames = ["file" "credential" "env" "http" "kernelCmdline" "headscale" "tailscaleOAuth"];
  keySourcesSet =
    if keyIsSource
    then lib.filter (n: key.${n} != null) sourceNames
    else [];
  oneSource = keyIsSource && builtins.length keySourcesSet == 1;

  sourceOf = n:
    if keyIsSource
    then key.${n}
    else null;
  http = sourceOf "http";
  cmdline = sourceOf "kernelCmdline";
  hs = sourceOf "headscale";
  oauth = sourceOf "tailscaleOAuth";

  # Sources that mint a fresh key per join: only they can honour ephemeral (and default to it).
  minting = hs != null || oauth != null;

  # The secrets other than the key that a source names (credential or file).
  token =
    if http == null
    then null
    else http.bearerToken;
  apiKey =
    if hs == null
    then null
    else hs.apiKey;
  clientSecret =
    if oauth == null
    then null
    else oauth.clientSecret;

  refCredential = ref:
    if ref == null
    then null
    else ref.credential;

  hsUrl =
    if hs == null
    then null
    else if hs.url != null
    then hs.url
    else cfg.loginServer;

  isPlainHttp = url: url != null && lib.hasPrefix "http://" (lib.toLower url);

  httpJSON = nonNull {
    inherit (http) url method response;
    bearer_token = refJSON token;
    ca_file = lib.mapNullable toString http.caFile;
    json_field = http.jsonField;
    timeout_secs = http.timeoutSecs;
    max_response_bytes = http.maxResponseBytes;
    allow_plain_http = http.allowPlainHttp;
  };

  cmdlineJSON = nonNull {
    path = lib.mapNullable toString cmdline.path;
    allow_key = cmdline.allowKey;
    inherit (cmdline) method response;
    json_field = cmdline.jsonField;
    ca_file = lib.mapNullable toString cmdline.caFile;
    timeout_secs = cmdline.timeoutSecs;
    max_response_bytes = cmdline.maxResponseBytes;
    allow_plain_http = cmdline.allowPlainHttp;
  };

  headscaleJSON = nonNull {
    url = hsUrl;
    api_key = refJSON apiKey;
    user = lib.mapNullable toString hs.user;
    expiry_secs = hs.expiry;
    ca_file = lib.mapNullable toString hs.caFile;
    allow_plain_http = hs.allowPlainHttp;
    timeout_secs = hs.timeoutSecs;
  };

  oauthJSON = nonNull {
    client_id = oauth.clientId;
    client_secret = refJSON clientSecret;
    api_url = oauth.apiUrl;
    inherit (oauth) tailnet;
    expiry_secs = oauth.expiry;
    ca_file = lib.mapNullable toString oauth.caFile;
    timeout_secs = oauth.timeoutSecs;
  };

  keyJSON =
    if !oneSource
    then null
    else if key.file != null
    then {file = toString key.file;}
    else if key.credential != null
    then {credential = key.credential.name;}
    else if key.env != null
    then {env = key.env.name;}
    else if http != null
    then {http = httpJSON;}
    else if cmdline != null
    then {kernel_cmdline = cmdlineJSON;}
    else if hs != null
    then {headscale = headscaleJSON;}
    else {tailscale_oauth = oauthJSON;};

  # The systemd credentials the unit loads: the key's, or the one secret the source names (the
  # HTTP source's bearer token, headscale's API key, the OAuth client secret), and the push
  # reporters' URLs and token. The same credential named twice is loaded once.
  credentials = lib.unique (lib.filter (c: c != null) (
    lib.optionals oneSource (
      [key.credential] ++ map refCredential [token apiKey clientSecret]
    )
    ++ map (r: refCredential r.ref) healthRefs
  ));
  # Names loaded from two different places: systemd would refuse the unit.
  clashingCredentials = let
    names = map (c: c.name) credentials;
  in
    lib.unique (lib.filter (n: lib.count (x: x == n) names > 1) names);
  credentialKeys = loadCredentials credentials;

  # ---- health: the pull side (listener, textfile) and the push reporters
  h = cfg.health;

  # A push URL option's value as a secret reference: null when unset or given inline (a string,
  # which an assertion refuses and which is never rendered).
  refOf = v:
    if builtins.isAttrs v
    then v
    else null;

  # Every secret the health settings name: the option, its value, the credential name to
  # suggest, what it holds, whether it is a push URL, and how to do without it.
  healthRefs = [
    {
      opt = "health.webhook.url";
      value = h.webhook.url;
      ref = refOf h.webhook.url;
      name = "tailjoin-webhook-url";
      secret = "a webhook URL";
      isUrl = true;
      off = "to send no webhook";
    }
    {
      opt = "health.webhook.bearerToken";
      value = h.webhook.bearerToken;
      ref = h.webhook.bearerToken;
      name = "tailjoin-webhook-token";
      secret = "a bearer token";
      isUrl = false;
      off = "to send no token";
    }
    {
      opt = "health.healthchecks.url";
      value = h.healthchecks.url;
      ref = refOf h.healthchecks.url;
      name = "tailjoin-healthchecks-url";
      secret = "a healthchecks.io ping URL";
      isUrl = true;
      off = "to send no pings";
    }
    {
      opt = "health.uptimeKuma.url";
      value = h.uptimeKuma.url;
      ref = refOf h.uptimeKuma.url;
      name = "tailjoin-uptime-kuma-url";
      secret = "an Uptime Kuma push URL";
      isUrl = true;
      off = "to send no pushes";
    }
  ];
  pushUrls = lib.filter (r: r.isUrl) healthRefs;

  # A push reporter is on when its URL is set.
  pushing = lib.any (r: r.value != null) pushUrls;

  # The push settings that differ from their defaults.
  changedPushSettings = lib.filter (n: h.${n} != pushDefaults.${n}) (builtins.attrNames pushDefaults);

  pushSetting = n:
    if pushing || h.${n} != pushDefaults.${n}
    then h.${n}
    else null;

  orNull = attrs:
    if attrs == {}
    then null
    else attrs;

  healthJSON = nonNull {
    inherit (h) listen;
    textfile = lib.mapNullable toString h.textfile;
    heartbeat_secs = pushSetting "heartbeatSecs";
    push_timeout_secs = pushSetting "pushTimeoutSecs";
    push_attempts = pushSetting "pushAttempts";
    flush_timeout_secs = pushSetting "flushTimeoutSecs";
    ca_file = lib.mapNullable toString h.caFile;
    allow_plain_http = pushSetting "allowPlainHttp";
    webhook = orNull (nonNull {
      url = refJSON (refOf h.webhook.url);
      bearer_token = refJSON h.webhook.bearerToken;
    });
    healthchecks = orNull (nonNull {url = refJSON (refOf h.healthchecks.url);});
    uptime_kuma = orNull (nonNull {url = refJSON (refOf h.uptimeKuma.url);});
  };

  keyExample = "/run/agenix/tailscale-auth-key";
  tokenExample = "/run/agenix/tailjoin-http-token";

  # Every path-like value the key options hold, with the option that holds it, a path to suggest
  # instead, what a secret given there by mistake would be (null: the value is no secret), and
  # whether the agent itself opens it (so the hardened unit must be able to see it).
  keyPaths = lib.filter (p: p.value != null) (
    if keyIsSource
    then
      [
        {
          opt = "authKey.file";
          value = key.file;
          example = "/run/secrets/tailscale-auth-key";
          secret = "an auth key";
          agentReads = true;
        }
        {
          opt = "authKey.credential.source";
          value =
            if key.credential == null
            then null
            else key.credential.source;
          example = keyExample;
          secret = "an auth key";
          agentReads = false;
        }
        {
          opt = "authKey.env.environmentFile";
          value =
            if key.env == null
            then null
            else key.env.environmentFile;
          example = "/run/secrets/tailjoin.env";
          secret = "an auth key";
          agentReads = false;
        }
        {
          opt = "authKey.http.caFile";
          value =
            if http == null
            then null
            else http.caFile;
          example = "/etc/tailjoin/prov-ca.pem";
          secret = null;
          agentReads = true;
        }
        {
          opt = "authKey.http.bearerToken.file";
          value =
            if token == null
            then null
            else token.file;
          example = "/run/secrets/tailjoin-http-token";
          secret = "a bearer token";
          agentReads = true;
        }
        {
          opt = "authKey.http.bearerToken.credential.source";
          value =
            if token == null || token.credential == null
            then null
            else token.credential.source;
          example = tokenExample;
          secret = "a bearer token";
          agentReads = false;
        }
        (caPath "authKey.kernelCmdline" cmdline)
        {
          opt = "authKey.kernelCmdline.path";
          value =
            if cmdline == null
            then null
            else cmdline.path;
          example = "/proc/cmdline";
          secret = null;
          agentReads = true;
        }
        (caPath "authKey.headscale" hs)
        (caPath "authKey.tailscaleOAuth" oauth)
      ]
      ++ refPaths "authKey.headscale.apiKey" apiKey "headscale-api-key" "an API key"
      ++ refPaths "authKey.tailscaleOAuth.clientSecret" clientSecret "tailscale-oauth-secret" "an OAuth client secret"
    else []
  );

  # The same for the health settings (independent of the key source).
  healthPaths = lib.filter (p: p.value != null) (
    [
      {
        opt = "health.textfile";
        value = h.textfile;
        example = "/var/lib/prometheus-node-exporter-text-files/tailjoin.prom";
        secret = null;
        agentReads = true;
        # The agent writes this file: the store is read-only, not secret.
        storeProblem = "which is read-only: the agent could never write it";
        storeFix = "in the directory node_exporter's textfile collector reads (--collector.textfile.directory).";
      }
      {
        opt = "health.caFile";
        value = h.caFile;
        example = "/etc/tailjoin/lab-ca.pem";
        secret = null;
        agentReads = true;
      }
    ]
    ++ lib.concatMap (r: map (p: p // {inherit (r) isUrl;}) (refPaths r.opt r.ref r.name r.secret)) healthRefs
  );

  # Every path-like value: the key's and the health settings'.
  paths = keyPaths ++ healthPaths;

  caPath = prefix: src: {
    opt = "${prefix}.caFile";
    value =
      if src == null
      then null
      else src.caFile;
    example = "/etc/tailjoin/lab-ca.pem";
    secret = null;
    agentReads = true;
  };

  # The two paths of a secret given as credential-or-file (`ref` is the option that holds both).
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

  nonNull = lib.filterAttrs (_: v: v != null);

  settings = lib.recursiveUpdate (nonNull {
      inherit (cfg) socket;
      login_server = cfg.loginServer;
      inherit (cfg) hostname;
      advertise_tags = cfg.tags;
      inherit (cfg) ephemeral;
      prefs = nonNull {
        accept_routes = cfg.prefs.acceptRoutes;
        accept_dns = cfg.prefs.acceptDns;
        shields_up = cfg.prefs.shieldsUp;
        advertise_routes = cfg.prefs.advertiseRoutes;
        advertise_exit_node = cfg.prefs.advertiseExitNode;
        inherit (cfg.prefs) ssh operator;
      };
      auth_key = keyJSON;
      on_stopped = cfg.onStopped;
      join_timeout_secs = cfg.joinTimeout;
      retry =
        {
          initial_delay_ms = cfg.retry.initialDelayMs;
          max_delay_ms = cfg.retry.maxDelayMs;
          max_attempts = cfg.retry.maxAttempts;
          key_attempts = cfg.retry.keyAttempts;
        }
        // lib.optionalAttrs (cfg.retry.keyFetchDeadline != null) {
          key_fetch_deadline_secs = cfg.retry.keyFetchDeadline;
        };
      state_dir = "/run/${unitSpec.service.RuntimeDirectory}";
      log_level = cfg.logLevel;
      # The agent waits for these over D-Bus (signals, not polling) before it talks to tailscaled.
      tailscaled_unit = "tailscaled.service";
      wait_for_units = ["network-online.target"] ++ cfg.waitFor;
    }
    // lib.optionalAttrs (healthJSON != {}) {health = healthJSON;})
  cfg.extraSettings;

  rawConfigFile = pkgs.writeText "tailjoin.json" (builtins.toJSON settings);

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

  # Exactly one of credential or file for a secret a source names.
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
in {
  options.services.tailjoin = {
    enable = lib.mkEnableOption "tailjoin, which joins this machine to a tailnet at boot and keeps it joined";

    package = lib.mkPackageOption pkgs "tailjoin" {};

    authKey = mkOption {
      # A bare string is accepted by the type only so that an assertion can explain what to do
      # instead; it never reaches a file.
      type = types.either types.str keySourceType;
      default = {};
      example = lib.literalExpression ''{ credential.source = "/run/agenix/tailscale-auth-key"; }'';
      description = ''
        Where the agent finds the auth key at run time: exactly one of `file`, `credential`,
        `env`, `http`, `kernelCmdline`, or a source that mints a fresh key per join
        (`headscale`, `tailscaleOAuth`). Never the key itself: anything in a Nix expression ends
        up in the world-readable store.
      '';
    };

    loginServer = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "https://headscale.example.com";
      description = "Control server URL (headscale); `null` means Tailscale's own.";
    };

    hostname = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "lab-node-1";
      description = "Hostname to register on the tailnet (one DNS label); `null` uses the OS hostname.";
    };

    tags = mkOption {
      type = types.listOf (types.strMatching "tag:[A-Za-z0-9-]+");
      default = [];
      example = ["tag:lab"];
      description = "ACL tags to advertise. The key must be allowed to apply them.";
    };

    ephemeral = mkOption {
      type = types.bool;
      default = minting;
      defaultText = lib.literalMD "`true` when the key is minted (`authKey.headscale` or `authKey.tailscaleOAuth`), else `false`";
      description = ''
        Ask for an ephemeral node, which the control server drops soon after it goes offline (a
        netbooted machine registers anew at every boot). Whether a node is ephemeral is decided
        when its key is made, so only the sources that mint keys (`authKey.headscale`,
        `authKey.tailscaleOAuth`) can honour it; with a pre-made key this must stay `false`:
        create the key as ephemeral instead.
      '';
    };

    prefs = {
      acceptRoutes = mkOption {
        type = types.bool;
        default = false;
        description = "Accept subnet routes advertised by other nodes (`--accept-routes`).";
      };
      acceptDns = mkOption {
        type = types.bool;
        default = true;
        description = "Use the tailnet's DNS settings (`--accept-dns`).";
      };
      shieldsUp = mkOption {
        type = types.bool;
        default = false;
        description = "Block incoming connections from the tailnet (`--shields-up`).";
      };
      advertiseRoutes = mkOption {
        type = types.listOf types.str;
        default = [];
        example = ["192.168.1.0/24"];
        description = "Subnet routes to advertise, as CIDR prefixes (`--advertise-routes`).";
      };
      advertiseExitNode = mkOption {
        type = types.bool;
        default = false;
        description = "Offer this node as an exit node (`--advertise-exit-node`).";
      };
      ssh = mkOption {
        type = types.bool;
        default = false;
        description = "Run Tailscale SSH (`--ssh`).";
      };
      operator = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "alice";
        description = "Local user allowed to operate tailscaled without root (`--operator`).";
      };
    };

    waitFor = mkOption {
      type = types.listOf types.str;
      default = [];
      example = ["agenix.service" "sops-install-secrets.service"];
      description = ''
        Units to start before the agent and wait for (added to its `After=` and `Wants=`, and
        awaited by the agent over D-Bus while they are queued to start), for example the unit
        that decrypts the key.
      '';
    };

    health = {
      listen = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "127.0.0.1:9901";
        description = ''
          `IP:PORT` of the agent's HTTP listener for `/healthz` and `/metrics` (plain HTTP, no
          authentication: bind it to loopback or an interface you trust). `null` serves nothing.
        '';
      };
      textfile = mkOption {
        type = types.nullOr pathString;
        default = null;
        example = "/var/lib/prometheus-node-exporter-text-files/tailjoin.prom";
        description = ''
          Absolute path of a node_exporter textfile-collector file (`*.prom`) that the agent
          rewrites on every transition; its directory is made writable for the hardened unit
          (`ReadWritePaths=`). Given as a string, outside the store. `null` writes none.
        '';
      };
      heartbeatSecs = mkOption {
        type = types.ints.between 0 86400;
        default = pushDefaults.heartbeatSecs;
        description = ''
          Seconds between heartbeats, which send the current state to the push reporters again
          (the webhook with `"event": "heartbeat"`; the healthchecks.io success or fail ping;
          Uptime Kuma's up or down), so that a monitor notices a machine that went silent: give
          the monitor a period somewhat longer than this. `0` sends none.
        '';
      };
      pushTimeoutSecs = mkOption {
        type = types.ints.between 1 300;
        default = pushDefaults.pushTimeoutSecs;
        description = "Seconds one push report may take, connecting included.";
      };
      pushAttempts = mkOption {
        type = types.ints.between 1 20;
        default = pushDefaults.pushAttempts;
        description = ''
          Tries per push report, the first included. Connection errors, timeouts and HTTP 5xx,
          408 and 429 are retried with exponential backoff (from 1 s, doubling, at most 30 s);
          any other error status is not.
        '';
      };
      flushTimeoutSecs = mkOption {
        type = types.ints.between 0 60;
        default = pushDefaults.flushTimeoutSecs;
        description = ''
          Seconds the agent, when it stops, waits for push reports not yet delivered (the last
          one says why it stopped); the journal names the reports it exits without. Kept short:
          a netbooted machine pays it at every shutdown when an endpoint hangs. `0` waits not at all.
        '';
      };
      caFile = mkOption {
        type = types.nullOr pathString;
        default = pushDefaults.caFile;
        example = "/etc/tailjoin/lab-ca.pem";
        description = ''
          Absolute path of a PEM bundle of the CA(s) that sign the push targets' certificates;
          when set, only these CAs are trusted for the push URLs (a home-lab CA). Given as a
          string, outside the store. `null` trusts the usual public CAs.
        '';
      };
      allowPlainHttp = mkOption {
        type = types.bool;
        default = pushDefaults.allowPlainHttp;
        description = ''
          Accept `http://` push URLs. The URL, and the token in it, then cross the network in
          clear text: only for a monitor on this host or a link you trust. Without it the agent
          turns off a reporter whose URL is `http://` and logs why (the URL is a secret, so the
          build cannot see it).
        '';
      };
      webhook = {
        url = mkPushUrlOption {
          refType = webhookUrlType;
          defaultName = "tailjoin-webhook-url";
          what = "the webhook's URL";
          does = ''
            The agent POSTs a JSON report (`docs/schema/report-v1.json`) to it on every
            transition and heartbeat.
          '';
        };
        bearerToken = mkOption {
          type = types.nullOr webhookTokenType;
          default = null;
          example = lib.literalExpression ''{ credential.source = "/run/agenix/tailjoin-webhook-token"; }'';
          description = ''
            Where the agent finds the token it sends to the webhook as
            `Authorization: Bearer <token>`: exactly one of `credential` or `file`. Never the
            token itself. `null` sends no token.
          '';
        };
      };
      healthchecks.url = mkPushUrlOption {
        refType = healthchecksUrlType;
        defaultName = "tailjoin-healthchecks-url";
        what = "a healthchecks.io-compatible ping URL (`https://hc-ping.com/<uuid>`, or a self-hosted instance's)";
        does = ''
          The agent pings `<url>/start` when it starts or joins anew, `<url>` once joined and
          `<url>/fail` when it fails, and repeats the last ping at every heartbeat.
        '';
      };
      uptimeKuma.url = mkPushUrlOption {
        refType = uptimeKumaUrlType;
        defaultName = "tailjoin-uptime-kuma-url";
        what = "an Uptime Kuma push monitor's URL (`https://kuma.example/api/push/<token>?status=up&msg=OK&ping=`)";
        does = ''
          The agent reports `status=up` once joined and `status=down` with the reason when it
          fails, and again at every heartbeat.
        '';
      };
    };

    logLevel = mkOption {
      type = types.enum ["error" "warn" "info" "debug" "trace"];
      default = "info";
      description = "The agent's log level.";
    };

    onStopped = mkOption {
      type = types.enum ["resume" "respect"];
      default = "resume";
      description = ''
        What to do when tailscaled is stopped (someone ran `tailscale down`): `resume` brings it
        back up, `respect` leaves it down.
      '';
    };

    joinTimeout = mkOption {
      type = types.ints.between 1 3600;
      default = 60;
      description = "Seconds one join attempt may take, from submitting the key to `Running`.";
    };

    retry = {
      initialDelayMs = mkOption {
        type = types.ints.between 1 600000;
        default = 500;
        description = "First delay after a transient failure, in milliseconds.";
      };
      maxDelayMs = mkOption {
        type = types.ints.between 1 3600000;
        default = 30000;
        description = "Upper bound of one retry delay, in milliseconds.";
      };
      maxAttempts = mkOption {
        type = types.ints.between 1 1000;
        default = 10;
        description = "Transient failures in a row before the agent gives up.";
      };
      keyAttempts = mkOption {
        type = types.ints.between 1 10;
        default = 2;
        description = "Join attempts with a rejected key before the agent gives up (exit status 3).";
      };
      keyFetchDeadline = mkOption {
        type = types.nullOr (types.ints.between 1 86400);
        default = null;
        example = 600;
        description = "Overall seconds allowed to fetch or mint the auth key, every retry included; null keeps the agent's default (300).";
      };
    };

    socket = mkOption {
      type = types.str;
      default = "/var/run/tailscale/tailscaled.sock";
      description = "Path of tailscaled's LocalAPI socket.";
    };

    extraSettings = mkOption {
      type = types.attrsOf types.anything;
      default = {};
      example = {retry.max_attempts = 20;};
      description = ''
        Raw settings merged over the generated agent config (its JSON field names). Validated
        with the rest at build time. Never put a key here.
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
      description = "The agent's config file, as generated from these options.";
    };
  };

  config = lib.mkIf cfg.enable {
    assertions =
      [
        {
          assertion = !(builtins.isString key);
          message = ''
            services.tailjoin.authKey is set to a string${lib.optionalString (looksLikeKey key) " that looks like an auth key itself"}.
            A key written in Nix lands in the world-readable /nix/store. Name where the key is at run time instead:
              services.tailjoin.authKey.credential.source = "/run/agenix/tailscale-auth-key";  # or sops-nix, or a file you copy
              services.tailjoin.authKey.file = "/run/secrets/tailscale-auth-key";
            and revoke the key if it was ever committed or built.
          '';
        }
        {
          assertion = !keyIsSource || builtins.length keySourcesSet == 1;
          message = ''
            services.tailjoin.authKey must set exactly one of file, credential, env, http, kernelCmdline, headscale or tailscaleOAuth (set: ${
              if keySourcesSet == []
              then "none"
              else lib.concatStringsSep ", " keySourcesSet
            }).
            For example: services.tailjoin.authKey.credential.source = "/run/agenix/tailscale-auth-key";
          '';
        }
        {
          assertion = http == null || http.url != null;
          message = ''
            services.tailjoin.authKey.http.url is not set: name the provisioning server's URL, e.g.
              services.tailjoin.authKey.http.url = "https://prov.lan:8443/key";
          '';
        }
        {
          assertion = http == null || !(isPlainHttp http.url) || http.allowPlainHttp;
          message = ''
            services.tailjoin.authKey.http.url is an http:// URL (${toString (http.url or "")}): the key would cross the network in clear text.
            Use https:// (with services.tailjoin.authKey.http.caFile for a home-lab CA), or, only on a link you trust, set
              services.tailjoin.authKey.http.allowPlainHttp = true;
          '';
        }
        {
          assertion = http == null || http.jsonField == null || http.response == "json";
          message = ''
            services.tailjoin.authKey.http.jsonField is set but response is "raw", so the field would never be read.
            Set services.tailjoin.authKey.http.response = "json"; or remove jsonField.
          '';
        }
        (refAssertion "authKey.http.bearerToken" token tokenExample "\nor bearerToken = null; to send no token.")
        {
          assertion = cmdline == null || !(isPlainHttp cmdline.keyUrl) || cmdline.allowPlainHttp;
          message = ''
            services.tailjoin.authKey.kernelCmdline.keyUrl is an http:// URL (${toString (cmdline.keyUrl or "")}): the boot token and the key
            would cross the network in clear text. Use https:// (with services.tailjoin.authKey.kernelCmdline.caFile for a home-lab CA),
            or, only on a link you trust, set
              services.tailjoin.authKey.kernelCmdline.allowPlainHttp = true;
          '';
        }
        {
          assertion = cmdline == null || cmdline.jsonField == null || cmdline.response == "json";
          message = ''
            services.tailjoin.authKey.kernelCmdline.jsonField is set but response is "raw", so the field would never be read.
            Set services.tailjoin.authKey.kernelCmdline.response = "json"; or remove jsonField.
          '';
        }
        {
          assertion = hs == null || hsUrl != null;
          message = ''
            services.tailjoin.authKey.headscale needs headscale's URL, and neither authKey.headscale.url nor services.tailjoin.loginServer
            is set. Set the login server (the agent mints keys through <url>/api/v1), e.g.
              services.tailjoin.loginServer = "https://headscale.example.com";
          '';
        }
        {
          assertion = hs == null || !(isPlainHttp hsUrl) || hs.allowPlainHttp;
          message = ''
            services.tailjoin.authKey.headscale would reach headscale over http:// (${toString hsUrl}): the API key, which can
            manage every node, would cross the network in clear text. Use https:// (with authKey.headscale.caFile for a home-lab CA),
            or, only for a headscale on this host or a link you trust, set
              services.tailjoin.authKey.headscale.allowPlainHttp = true;
          '';
        }
        {
          assertion = hs == null || hs.user != null || cfg.tags != [];
          message = ''
            services.tailjoin.authKey.headscale sets neither a user nor tags, and headscale needs one of them to own the node. Set
              services.tailjoin.authKey.headscale.user = "fleet";   # a headscale user
            or services.tailjoin.tags = [ "tag:netboot" ]; for a tagged node.
          '';
        }
        (refAssertion "authKey.headscale.apiKey" apiKey "/run/agenix/headscale-api-key" "")
        {
          assertion = oauth == null || oauth.clientId != null;
          message = ''
            services.tailjoin.authKey.tailscaleOAuth.clientId is not set: give the OAuth client's id (it is not secret), e.g.
              services.tailjoin.authKey.tailscaleOAuth.clientId = "k123456CNTRL";
          '';
        }
        {
          assertion = oauth == null || oauth.clientId == null || !(lib.hasPrefix "tskey-" oauth.clientId);
          message = ''
            services.tailjoin.authKey.tailscaleOAuth.clientId looks like the client secret (tskey-client-…), not the client id.
            Put the secret into a root-only file outside the store (agenix, sops-nix) and name it:
              services.tailjoin.authKey.tailscaleOAuth.clientSecret.credential.source = "/run/agenix/tailscale-oauth-secret";
            and revoke it: it is now in your configuration.
          '';
        }
        {
          assertion = oauth == null || cfg.tags != [];
          message = ''
            services.tailjoin.authKey.tailscaleOAuth needs tags: Tailscale only lets an OAuth client create keys for tagged nodes. Set
              services.tailjoin.tags = [ "tag:netboot" ];   # tags the OAuth client owns
          '';
        }
        {
          assertion = oauth == null || lib.hasPrefix "https://" (lib.toLower oauth.apiUrl);
          message = ''
            services.tailjoin.authKey.tailscaleOAuth.apiUrl must be an https:// URL (got ${toString (oauth.apiUrl or "")}): the client secret
            is sent to it. Remove it to use https://api.tailscale.com.
          '';
        }
        {
          assertion = oauth == null || cfg.loginServer == null || lib.hasInfix "tailscale.com" cfg.loginServer;
          message = ''
            services.tailjoin.authKey.tailscaleOAuth mints keys for Tailscale's own control server, but services.tailjoin.loginServer is
            ${toString cfg.loginServer}. For headscale use services.tailjoin.authKey.headscale instead; for Tailscale remove loginServer.
          '';
        }
        (refAssertion "authKey.tailscaleOAuth.clientSecret" clientSecret "/run/agenix/tailscale-oauth-secret" "")
        {
          assertion = config.services.tailscale.authKeyFile == null;
          message = ''
            services.tailscale.authKeyFile is set, so nixpkgs' own autoconnect would run `tailscale up` next to tailjoin
            (and pass the key on the command line). Remove services.tailscale.authKeyFile and give the same file to tailjoin:
              services.tailjoin.authKey.credential.source = "<that path>";
          '';
        }
        {
          assertion = !cfg.ephemeral || minting;
          message = ''
            services.tailjoin.ephemeral = true cannot be honoured with a pre-made key: whether a node is ephemeral is decided when
            its key is made. Create the key as ephemeral (`headscale preauthkeys create --ephemeral`, or tick Ephemeral in
            Tailscale's admin console) and remove services.tailjoin.ephemeral, or let the agent mint keys
            (services.tailjoin.authKey.headscale or authKey.tailscaleOAuth).
          '';
        }
        {
          assertion = h.webhook.bearerToken == null || h.webhook.url != null;
          message = ''
            services.tailjoin.health.webhook.bearerToken is set but health.webhook.url is not, so there is no webhook to send it to.
            Name where the webhook's URL is at run time, e.g.
              services.tailjoin.health.webhook.url.credential.source = "/run/agenix/tailjoin-webhook-url";
            or remove services.tailjoin.health.webhook.bearerToken.
          '';
        }
        {
          assertion = clashingCredentials == [];
          message = ''
            services.tailjoin loads two different secrets as the same systemd credential (${lib.concatStringsSep ", " clashingCredentials}),
            which systemd refuses. Give one of them another name, e.g.
              services.tailjoin.health.webhook.url.credential.name = "tailjoin-webhook-url";
          '';
        }
      ]
      # A push URL given inline: the URL itself, with its token, would be written into the store.
      ++ map (r: {
        assertion = !(builtins.isString r.value);
        message =
          if lib.hasInfix "://" r.value
          then ''
            services.tailjoin.${r.opt} is set to a string, the URL itself. A push URL carries a token that lets anyone who has it
            report for this machine, and a value written in Nix lands in the world-readable /nix/store.
            Put the URL into a root-only file or a credential outside the store (agenix, sops-nix, systemd-creds) and name it:
              services.tailjoin.${r.opt}.credential.source = "/run/agenix/${r.name}";   # or
              services.tailjoin.${r.opt}.file = "/run/secrets/${r.name}";
            and regenerate the URL's token (a new check or push monitor): it is now in your configuration.
          ''
          else ''
            services.tailjoin.${r.opt} is set to a string. It names where the URL is at run time, as a root-only file or a credential:
              services.tailjoin.${r.opt}.file = "/run/secrets/${r.name}";   # or
              services.tailjoin.${r.opt}.credential.source = "/run/agenix/${r.name}";
          '';
      })
      pushUrls
      ++ map (r: refAssertion r.opt r.ref "/run/agenix/${r.name}" "\nor services.tailjoin.${r.opt} = null; ${r.off}.") healthRefs
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

    warnings =
      map (p: ''
        services.tailjoin.${p.opt} is under /home or /tmp, which the hardened tailjoin unit cannot see (ProtectHome=, PrivateTmp=).
        Use a credential (a credential.source may be anywhere) or a path under /run, /etc or /var/lib.
      '') (lib.filter hiddenFromUnit paths)
      ++ lib.optional (!pushing && changedPushSettings != []) ''
        services.tailjoin.health sets ${lib.concatStringsSep ", " changedPushSettings} but no push reporter (health.webhook.url,
        health.healthchecks.url, health.uptimeKuma.url), so nothing uses them. Set a reporter's URL or remove them.
      ''
      ++ lib.optional (cmdline != null && cmdline.allowKey) ''
        services.tailjoin.authKey.kernelCmdline.allowKey = true accepts the key itself on the kernel command line, where every local
        user can read it (/proc/cmdline) and so can anyone who can read the boot script. Prefer tailjoin.key_url= with a one-time
        tailjoin.boot_token= (services.tailjoin-provisioner).
      '';

    services.tailscale.enable = true;

    systemd.services.tailjoin = {
      unitConfig =
        unitSpec.unit
        // {
          After = unitSpec.unit.After ++ cfg.waitFor;
          Wants = unitSpec.unit.Wants ++ cfg.waitFor;
        };
      serviceConfig =
        unitSpec.service
        // {
          ExecStart = "${lib.getExe' cfg.package "tailjoin"} run --config ${cfg.configFile}";
        }
        // credentialKeys
        // lib.optionalAttrs (oneSource && key.env != null && key.env.environmentFile != null) {
          EnvironmentFile = toString key.env.environmentFile;
        }
        // lib.optionalAttrs (h.textfile != null) {
          ReadWritePaths = [(dirOf (toString h.textfile))];
        }
        # ProcSubset=pid hides /proc/cmdline, which the kernel command line source reads, and
        # /proc/sys (hostname, boot id), which a POST sends as the machine's identity and a push
        # report names the machine by.
        // lib.optionalAttrs ((oneSource && (cmdline != null || (http != null && http.method == "post"))) || pushing) {
          ProcSubset = "all";
        };
      wantedBy = unitSpec.install.WantedBy;
    };

    boot.kernelParams = lib.mkIf (oneSource && cmdline != null && cmdline.keyUrl != null) [
      "tailjoin.key_url=${cmdline.keyUrl}"
    ];
  };
}
