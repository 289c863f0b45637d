# services.tailjoin.authKey: where the agent finds the auth key at run time, or how it mints one.
# Renders settings.auth_key (and settings.login_server, settings.ephemeral's default), names the
# credentials the unit loads and the paths ./checks.nix checks, and asserts what would put a key
# into the store or cannot work (a literal key, no source or two, plain http, minting without a
# user or tags).
{
  config,
  lib,
  ...
}: let
  inherit (lib) mkOption types;
  inherit (import ../secret-refs.nix {inherit lib;}) refJSON;
  inherit (import ./secret-types.nix {inherit lib;}) looksLikeKey refPaths refAssertion refCredential;
  inherit (import ./key-types.nix {inherit lib;}) keySourceType mint;

  cfg = config.services.tailjoin;
  # The tags and ephemeral flag the agent is given (settings, with ./settings.nix's defaults).
  tags = cfg.settings.advertise_tags or [];
  ephemeral = cfg.settings.ephemeral or false;

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
    inherit (http) tpm;
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
    inherit (cmdline) tpm;
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
    then {headscale = mint.headscaleJSON hs hsUrl;}
    else {tailscale_oauth = mint.tailscaleOAuthJSON oauth;};

  keyExample = "/run/agenix/tailscale-auth-key";
  tokenExample = "/run/agenix/tailjoin-http-token";

  # Every path-like value the key options hold, with the option that holds it, a path to suggest
  # instead, what a secret given there by mistake would be (null: the value is no secret), and
  # whether the agent itself opens it (so the hardened unit must be able to see it).
  pathOf = opt: value: example: secret: agentReads: {inherit opt value example secret agentReads;};
  attrOr = src: n:
    if src == null
    then null
    else src.${n};
  keyPaths = lib.filter (p: p.value != null) (lib.optionals keyIsSource (
    [
      (pathOf "authKey.file" key.file "/run/secrets/tailscale-auth-key" "an auth key" true)
      (pathOf "authKey.credential.source" (attrOr key.credential "source") keyExample "an auth key" false)
      (pathOf "authKey.env.environmentFile" (attrOr key.env "environmentFile") "/run/secrets/tailjoin.env" "an auth key" false)
      (pathOf "authKey.http.caFile" (attrOr http "caFile") "/etc/tailjoin/prov-ca.pem" null true)
      (pathOf "authKey.kernelCmdline.caFile" (attrOr cmdline "caFile") "/etc/tailjoin/lab-ca.pem" null true)
      (pathOf "authKey.kernelCmdline.path" (attrOr cmdline "path") "/proc/cmdline" null true)
      (pathOf "authKey.headscale.caFile" (attrOr hs "caFile") "/etc/tailjoin/lab-ca.pem" null true)
      (pathOf "authKey.tailscaleOAuth.caFile" (attrOr oauth "caFile") "/etc/tailjoin/lab-ca.pem" null true)
    ]
    ++ refPaths "authKey.http.bearerToken" token "tailjoin-http-token" "a bearer token"
    ++ refPaths "authKey.headscale.apiKey" apiKey "headscale-api-key" "an API key"
    ++ refPaths "authKey.tailscaleOAuth.clientSecret" clientSecret "tailscale-oauth-secret" "an OAuth client secret"
  ));

  nonNull = lib.filterAttrs (_: v: v != null);
in {
  options.services.tailjoin = {
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
  };

  config = lib.mkIf cfg.enable {
    assertions = [
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
        assertion = hs == null || hs.user != null || tags != [];
        message = ''
          services.tailjoin.authKey.headscale sets neither a user nor tags, and headscale needs one of them to own the node. Set
            services.tailjoin.authKey.headscale.user = "fleet";   # a headscale user
          or services.tailjoin.settings.advertise_tags = [ "tag:netboot" ]; for a tagged node.
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
        assertion = oauth == null || tags != [];
        message = ''
          services.tailjoin.authKey.tailscaleOAuth needs tags: Tailscale only lets an OAuth client create keys for tagged nodes. Set
            services.tailjoin.settings.advertise_tags = [ "tag:netboot" ];   # tags the OAuth client owns
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
        assertion = !ephemeral || minting;
        message = ''
          services.tailjoin.settings.ephemeral = true cannot be honoured with a pre-made key: whether a node is ephemeral is decided when
          its key is made. Create the key as ephemeral (`headscale preauthkeys create --ephemeral`, or tick Ephemeral in
          Tailscale's admin console) and remove services.tailjoin.settings.ephemeral, or let the agent mint keys
          (services.tailjoin.authKey.headscale or authKey.tailscaleOAuth).
        '';
      }
    ];

    warnings = lib.optional (cmdline != null && cmdline.allowKey) ''
      services.tailjoin.authKey.kernelCmdline.allowKey = true accepts the key itself on the kernel command line, where every local
      user can read it (/proc/cmdline) and so can anyone who can read the boot script. Prefer tailjoin.key_url= with a one-time
      tailjoin.boot_token= (services.tailjoin-provisioner).
    '';

    services.tailjoin = {
      settings =
        {
          # Sources that mint keys default to an ephemeral node; a pre-made key cannot be one.
          ephemeral = lib.mkOptionDefault minting;
        }
        // lib.optionalAttrs (keyJSON != null) {auth_key = keyJSON;}
        // lib.optionalAttrs (cfg.loginServer != null) {login_server = cfg.loginServer;};
      # The key's credential, or the one secret the source names (the HTTP source's bearer token,
      # headscale's API key, the OAuth client secret), loaded before the push reporters'.
      internal = {
        credentials = lib.mkBefore (lib.filter (c: c != null) (
          lib.optionals oneSource ([key.credential] ++ map refCredential [token apiKey clientSecret])
        ));
        paths = keyPaths;
        # ProcSubset=pid hides /proc/cmdline, which the kernel command line source reads, and
        # /proc/sys (hostname, boot id), which a POST sends as the machine's identity.
        procSubsetAll = lib.mkIf (oneSource && (cmdline != null || (http != null && http.method == "post"))) true;
        # A POST proves the machine's TPM unless tpm = "off"; the kernel command line source
        # always may, since tailjoin.tpm= overrides its setting at boot.
        tpmDevice = lib.mkIf (oneSource && (cmdline != null || (http != null && http.method == "post" && http.tpm != "off"))) true;
      };
    };

    boot.kernelParams = lib.mkIf (oneSource && cmdline != null && cmdline.keyUrl != null) [
      "tailjoin.key_url=${cmdline.keyUrl}"
    ];
  };
}
