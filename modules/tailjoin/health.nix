# services.tailjoin.health's push reporters: where the agent finds each push URL (and the
# webhook's bearer token) at run time, as a credential or a root-only file, never the URL: a push
# URL carries a token. Renders them into settings.health, where the agent's other health settings
# (listen, textfile, heartbeat_secs, ...) are set directly; gives the push settings explicitly
# (the agent's defaults) once a reporter is on, and warns when they are set without one.
{
  config,
  lib,
  ...
}: let
  inherit (lib) mkOption types;
  inherit (import ../secret-refs.nix {inherit lib;}) refJSON;
  st = import ./secret-types.nix {inherit lib;};
  inherit (st) refPaths refAssertion refCredential;

  cfg = config.services.tailjoin;
  h = cfg.health;
  # The agent's health settings as given in settings.health.
  sh = cfg.settings.health or {};

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

  # The push settings, with the agent's defaults: rendered explicitly once a reporter is on.
  pushDefaults = {
    heartbeat_secs = 300;
    push_timeout_secs = 10;
    push_attempts = 5;
    flush_timeout_secs = 2;
    allow_plain_http = false;
  };
  pushSettings = builtins.attrNames (pushDefaults // {ca_file = null;});

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

  # The push settings given without a reporter.
  strayPushSettings = lib.filter (n: sh ? ${n}) pushSettings;

  nonNull = lib.filterAttrs (_: v: v != null);
  orNull = attrs:
    if attrs == {}
    then null
    else attrs;

  reporters = nonNull {
    webhook = orNull (nonNull {
      url = refJSON (refOf h.webhook.url);
      bearer_token = refJSON h.webhook.bearerToken;
    });
    healthchecks = orNull (nonNull {url = refJSON (refOf h.healthchecks.url);});
    uptime_kuma = orNull (nonNull {url = refJSON (refOf h.uptimeKuma.url);});
  };

  # The path-like health settings, and the push secrets' paths (see ./checks.nix).
  settingPath = n: example: extra:
    {
      opt = "settings.health.${n}";
      value = sh.${n} or null;
      inherit example;
      secret = null;
      agentReads = true;
    }
    // extra;
  healthPaths = lib.filter (p: p.value != null) (
    [
      (settingPath "textfile" "/var/lib/prometheus-node-exporter-text-files/tailjoin.prom" {
        # The agent writes this file: the store is read-only, not secret.
        storeProblem = "which is read-only: the agent could never write it";
        storeFix = "in the directory node_exporter's textfile collector reads (--collector.textfile.directory).";
      })
      (settingPath "ca_file" "/etc/tailjoin/lab-ca.pem" {})
    ]
    ++ lib.concatMap (r: map (p: p // {inherit (r) isUrl;}) (refPaths r.opt r.ref r.name r.secret)) healthRefs
  );
in {
  options.services.tailjoin.health = {
    webhook = {
      url = mkPushUrlOption {
        refType = st.webhookUrlType;
        defaultName = "tailjoin-webhook-url";
        what = "the webhook's URL";
        does = ''
          The agent POSTs a JSON report (`docs/schema/report-v1.json`) to it on every
          transition and heartbeat.
        '';
      };
      bearerToken = mkOption {
        type = types.nullOr st.webhookTokenType;
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
      refType = st.healthchecksUrlType;
      defaultName = "tailjoin-healthchecks-url";
      what = "a healthchecks.io-compatible ping URL (`https://hc-ping.com/<uuid>`, or a self-hosted instance's)";
      does = ''
        The agent pings `<url>/start` when it starts or joins anew, `<url>` once joined and
        `<url>/fail` when it fails, and repeats the last ping at every heartbeat.
      '';
    };
    uptimeKuma.url = mkPushUrlOption {
      refType = st.uptimeKumaUrlType;
      defaultName = "tailjoin-uptime-kuma-url";
      what = "an Uptime Kuma push monitor's URL (`https://kuma.example/api/push/<token>?status=up&msg=OK&ping=`)";
      does = ''
        The agent reports `status=up` once joined and `status=down` with the reason when it
        fails, and again at every heartbeat.
      '';
    };
  };

  config = lib.mkIf cfg.enable {
    assertions =
      [
        {
          assertion = h.webhook.bearerToken == null || h.webhook.url != null;
          message = ''
            services.tailjoin.health.webhook.bearerToken is set but health.webhook.url is not, so there is no webhook to send it to.
            Name where the webhook's URL is at run time, e.g.
              services.tailjoin.health.webhook.url.credential.source = "/run/agenix/tailjoin-webhook-url";
            or remove services.tailjoin.health.webhook.bearerToken.
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
      ++ map (r: refAssertion r.opt r.ref "/run/agenix/${r.name}" "\nor services.tailjoin.${r.opt} = null; ${r.off}.") healthRefs;

    warnings = lib.optional (!pushing && strayPushSettings != []) ''
      services.tailjoin.settings.health sets ${lib.concatStringsSep ", " strayPushSettings} but no push reporter (health.webhook.url,
      health.healthchecks.url, health.uptimeKuma.url), so nothing uses them. Set a reporter's URL or remove them.
    '';

    services.tailjoin = {
      settings.health = lib.mkIf (pushing || reporters != {}) (
        lib.mapAttrs (_: lib.mkOptionDefault) (lib.optionalAttrs pushing pushDefaults) // reporters
      );
      internal = {
        credentials = lib.filter (c: c != null) (map (r: refCredential r.ref) healthRefs);
        paths = healthPaths;
        # ProcSubset=pid hides /proc/sys (hostname, boot id), which a push report names the
        # machine by.
        procSubsetAll = lib.mkIf pushing true;
      };
    };
  };
}
