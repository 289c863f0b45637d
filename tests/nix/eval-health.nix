# Evaluation tests for services.tailjoin.health: the pull side (listen, textfile) and the push
# reporters (webhook, healthchecks.io, Uptime Kuma), whose URLs are secrets named like the key's
# (a credential or a root-only file, never the URL). The store-leak check of the push secrets is
# in eval-sources.nix with the key sources'. Imported by eval.nix with its helpers; returns
# { results; configs; } (JSON for the real agent's `tailjoin check-config`).
{
  lib,
  pkgs,
  evalModulesWith,
  renderUnit,
  unitSpec,
  test,
  firesWith,
  failing,
  throws,
  leaks,
  ...
}: let
  eval = evalModulesWith [../../modules/tailjoin];

  keyCredential = "/run/keys/tailscale-auth-key";

  # The module enabled with a key credential and these health settings: the push reporters'
  # secrets (typed options) and the agent's other health settings (settings.health).
  reporterNames = ["webhook" "healthchecks" "uptimeKuma"];
  withHealth = health: extra: let
    settingsHealth = builtins.removeAttrs health reporterNames;
  in
    (eval [
      {
        services.tailjoin =
          {
            enable = true;
            authKey.credential.source = keyCredential;
            health = lib.filterAttrs (n: _: builtins.elem n reporterNames) health;
          }
          // lib.optionalAttrs (settingsHealth != {}) {settings.health = settingsHealth;}
          // extra;
      }
    ])
    .config;
  tj = health: withHealth health {};
  unvalidated = health: withHealth health {validateConfig = false;};
  jsonOf = health: builtins.fromJSON (unvalidated health).services.tailjoin.configFile.text;
  healthOf = health: (jsonOf health).health or null;
  svcOf = health: (tj health).systemd.services.tailjoin.serviceConfig;
  instance = health: builtins.removeAttrs (svcOf health) (builtins.attrNames unitSpec.service);
  clean = health: let
    c = tj health;
  in
    failing c == [] && c.warnings == [];

  storeFile = name: "${builtins.storeDir}/0123456789abcdfghijklmnpqrsvwxyz-${name}";

  # The push settings as the agent's defaults, rendered explicitly once a reporter is on.
  pushDefaultsJSON = {
    heartbeat_secs = 300;
    push_timeout_secs = 10;
    push_attempts = 5;
    flush_timeout_secs = 2;
    allow_plain_http = false;
  };

  pull = {
    listen = "127.0.0.1:9901";
    textfile = "/var/lib/prometheus-node-exporter-text-files/tailjoin.prom";
  };

  # The `health` object of /work/push-spec.md's example, as module options.
  specExample =
    pull
    // {
      ca_file = "/etc/tailjoin/lab-ca.pem";
      webhook = {
        url.credential = {};
        bearerToken.file = "/run/secrets/hook-token";
      };
      healthchecks.url.file = "/run/secrets/healthchecks-url";
      uptimeKuma.url.credential = {};
    };
  specExampleJSON = {
    listen = "127.0.0.1:9901";
    textfile = "/var/lib/prometheus-node-exporter-text-files/tailjoin.prom";
    heartbeat_secs = 300;
    push_timeout_secs = 10;
    push_attempts = 5;
    flush_timeout_secs = 2;
    ca_file = "/etc/tailjoin/lab-ca.pem";
    allow_plain_http = false;
    webhook = {
      url.credential = "tailjoin-webhook-url";
      bearer_token.file = "/run/secrets/hook-token";
    };
    healthchecks.url.file = "/run/secrets/healthchecks-url";
    uptime_kuma.url.credential = "tailjoin-uptime-kuma-url";
  };

  # Every push option changed from its default, the credentials with sources.
  full = {
    heartbeat_secs = 60;
    push_timeout_secs = 5;
    push_attempts = 3;
    flush_timeout_secs = 5;
    allow_plain_http = true;
    webhook = {
      url.credential.source = "/run/agenix/tailjoin-webhook-url";
      bearerToken.credential.source = "/run/agenix/tailjoin-webhook-token";
    };
    healthchecks.url.credential = {
      name = "hc";
      source = "/etc/credstore.encrypted/hc";
      encrypted = true;
    };
    uptimeKuma.url.file = "/run/secrets/kuma-url";
  };

  # Every reporter from root-only files, heartbeats off.
  files = {
    heartbeat_secs = 0;
    webhook.url.file = "/run/secrets/hook-url";
    healthchecks.url.file = "/run/secrets/hc-url";
    uptimeKuma.url.file = "/run/secrets/kuma-url";
  };

  minimal = {healthchecks.url.credential.source = "/run/agenix/tailjoin-healthchecks-url";};

  fakeUrl = "https://hc-ping.com/fake-0000-push-url-marker";

  results = [
    # ---- options
    (test "health: option defaults (the push reporters' secrets), no health settings"
      ((tj {}).services.tailjoin.health.webhook
        == {
          url = null;
          bearerToken = null;
        }
        && (tj {}).services.tailjoin.health.healthchecks.url == null
        && (tj {}).services.tailjoin.health.uptimeKuma.url == null
        && !((tj {}).services.tailjoin.settings ? health))
      (tj {}).services.tailjoin.health)
    (test "health: every visible option, nested ones too, has a description, a type and a default; the rest are settings"
      (let
        own = opts: builtins.removeAttrs opts ["_module"];
        all' = (eval []).options.services.tailjoin.health;
        # The options that moved into settings.health stay declared, hidden, to forward old configs.
        opts = lib.filterAttrs (_: o: !(lib.isOption o) || o.visible or true) all';
        # A push URL is `nullOr (either str <secret ref>)`, the bearer token `nullOr <secret ref>`.
        refOpts = t: own ((t.nestedTypes.elemType.nestedTypes.right or t.nestedTypes.elemType).getSubOptions []);
        refs = map refOpts [opts.webhook.url.type opts.webhook.bearerToken.type opts.healthchecks.url.type opts.uptimeKuma.url.type];
        creds = map (r: own (r.credential.type.nestedTypes.elemType.getSubOptions [])) refs;
        all = builtins.concatMap (lib.collect lib.isOption) ([opts] ++ refs ++ creds);
      in
        lib.all (o: (o.description or null) != null && o ? type && o ? default) all
        && builtins.attrNames opts == ["healthchecks" "uptimeKuma" "webhook"]
        && lib.all (r: builtins.attrNames r == ["credential" "file"]) refs
        && map (c: c.name.default) creds == ["tailjoin-webhook-url" "tailjoin-webhook-token" "tailjoin-healthchecks-url" "tailjoin-uptime-kuma-url"])
      null)
    (test "health: types reject bad secret references and unknown options"
      (throws (tj {webhook.url.credential.name = "a/b";}).services.tailjoin.health
        && throws (tj {webhook.bearerToken = "fake-token";}).services.tailjoin.health
        && throws (eval [{services.tailjoin.health.bogus = 1;}]).config.services.tailjoin.health
        && !(throws (tj {webhook.url.credential = {};}).services.tailjoin.health))
      null)

    # ---- the JSON config
    (test "health: nothing set renders no health object"
      (!((jsonOf {}) ? health))
      (jsonOf {}))
    (test "health: listen and textfile alone render only themselves"
      (healthOf pull
        == {
          listen = "127.0.0.1:9901";
          textfile = "/var/lib/prometheus-node-exporter-text-files/tailjoin.prom";
        }
        && clean pull)
      (healthOf pull))
    (test "health: the push contract's example renders exactly"
      (healthOf specExample == specExampleJSON && clean specExample)
      (healthOf specExample))
    (test "health: one reporter renders the push settings explicitly (the agent's defaults), nothing else"
      (healthOf minimal
        == pushDefaultsJSON
        // {
          healthchecks.url.credential = "tailjoin-healthchecks-url";
        }
        && clean minimal)
      (healthOf minimal))
    (test "health: every push option changed"
      (healthOf full
        == {
          heartbeat_secs = 60;
          push_timeout_secs = 5;
          push_attempts = 3;
          flush_timeout_secs = 5;
          allow_plain_http = true;
          webhook = {
            url.credential = "tailjoin-webhook-url";
            bearer_token.credential = "tailjoin-webhook-token";
          };
          healthchecks.url.credential = "hc";
          uptime_kuma.url.file = "/run/secrets/kuma-url";
        }
        && clean full)
      (healthOf full))
    (test "health: every reporter from files, heartbeats off"
      (healthOf files
        == pushDefaultsJSON
        // {
          heartbeat_secs = 0;
          webhook.url.file = "/run/secrets/hook-url";
          healthchecks.url.file = "/run/secrets/hc-url";
          uptime_kuma.url.file = "/run/secrets/kuma-url";
        })
      (healthOf files))
    (test "health: push settings without a reporter are rendered as given, with a warning"
      (healthOf {heartbeat_secs = 0;}
        == {heartbeat_secs = 0;}
        && lib.any (lib.hasInfix "sets heartbeat_secs but no push reporter") (tj {heartbeat_secs = 0;}).warnings
        && lib.any (lib.hasInfix "sets ca_file, push_attempts but no push reporter")
        (tj {
          push_attempts = 5;
          ca_file = "/etc/tailjoin/lab-ca.pem";
        })
        .warnings
        && failing (tj {heartbeat_secs = 0;}) == [])
      (tj {heartbeat_secs = 0;}).warnings)
    (test "health: settings override the push defaults the module renders"
      (let
        j = (jsonOf minimal).health;
        merged =
          (builtins.fromJSON
            (withHealth minimal {
              validateConfig = false;
              settings.health.push_attempts = 7;
            })
            .services
            .tailjoin
            .configFile
            .text)
          .health;
      in
        merged == j // {push_attempts = 7;})
      null)

    # ---- the unit
    (test "unit: push URL and token credentials join the key's LoadCredential lines; files add none"
      (instance full
        == {
          inherit (svcOf full) ExecStart;
          LoadCredential = [
            "tailscale-auth-key:${keyCredential}"
            "tailjoin-webhook-url:/run/agenix/tailjoin-webhook-url"
            "tailjoin-webhook-token:/run/agenix/tailjoin-webhook-token"
          ];
          LoadCredentialEncrypted = "hc:/etc/credstore.encrypted/hc";
        }
        && (svcOf full).ProcSubset == "all"
        && (svcOf files).LoadCredential == "tailscale-auth-key:${keyCredential}"
        && (svcOf specExample).LoadCredential
        == [
          "tailscale-auth-key:${keyCredential}"
          "tailjoin-webhook-url"
          "tailjoin-uptime-kuma-url"
        ])
      (instance full))
    (test "unit: push credentials are loaded whatever the key source (a key file loads only them)"
      (let
        c = withHealth minimal {authKey.file = "/run/secrets/ts-key";};
      in
        c.systemd.services.tailjoin.serviceConfig.LoadCredential
        == "tailjoin-healthchecks-url:/run/agenix/tailjoin-healthchecks-url"
        && failing c == [])
      null)
    (test "unit: a push reporter sees /proc/sys (ProcSubset=all); the pull side alone keeps ProcSubset=pid"
      (lib.all (hc: (svcOf hc).ProcSubset == "all") [minimal full files specExample {uptimeKuma.url.file = "/run/secrets/kuma-url";} {webhook.url.credential = {};}]
        && (svcOf pull).ProcSubset == unitSpec.service.ProcSubset
        && (svcOf {}).ProcSubset == unitSpec.service.ProcSubset
        && unitSpec.service.ProcSubset == "pid")
      (svcOf minimal).ProcSubset)
    (test "unit: health.textfile's directory is writable, nothing else is added for the pull side"
      (instance pull
        == {
          inherit (svcOf pull) ExecStart;
          LoadCredential = "tailscale-auth-key:${keyCredential}";
          ReadWritePaths = ["/var/lib/prometheus-node-exporter-text-files"];
        })
      (instance pull))
    (test "unit: the same credential named by two reporters is loaded once"
      (let
        shared = {
          name = "tailjoin-push-urls";
          source = "/run/agenix/push-urls";
        };
        h = {
          webhook.url.credential = shared;
          uptimeKuma.url.credential = shared;
        };
      in
        (svcOf h).LoadCredential == ["tailscale-auth-key:${keyCredential}" "tailjoin-push-urls:/run/agenix/push-urls"] && failing (tj h) == [])
      null)

    # ---- assertions
    (test "assertion: a push URL given inline is refused, says where to put it, and is not rendered"
      (let
        c = tj {healthchecks.url = fakeUrl;};
        raw = unvalidated {healthchecks.url = fakeUrl;};
      in
        firesWith c "health.healthchecks.url is set to a string, the URL itself"
        && firesWith c "root-only file or a credential(.|\n)*healthchecks.url.credential.source = \"/run/agenix/tailjoin-healthchecks-url\""
        && firesWith (tj {webhook.url = "hooks.example/fake";}) "health.webhook.url is set to a string\\."
        && firesWith (tj {uptimeKuma.url = fakeUrl;}) "health.uptimeKuma.url is set to a string, the URL itself"
        && leaks {
          texts = {
            json = raw.services.tailjoin.configFile.text;
            unit = renderUnit raw.systemd.services.tailjoin;
          };
          allowed.unit = map toString [pkgs.tailjoin raw.services.tailjoin.configFile];
          markers = ["push-url-marker" "hc-ping.com"];
        }
        == [])
      (failing (tj {healthchecks.url = fakeUrl;})))
    (test "assertion: a URL where a path belongs (url.file, url.credential.source) is refused, saying to use a root-only file or credential"
      (let
        asFile = tj {webhook.url.file = fakeUrl;};
        asSource = tj {uptimeKuma.url.credential.source = "http://kuma.lan/api/push/fake";};
      in
        firesWith asFile "health.webhook.url.file is a URL \\(it contains \"://\"\\), not a path"
        && firesWith asFile "root-only file or a credential(.|\n)*webhook.url.credential.source = \"/run/agenix/tailjoin-webhook-url\""
        && !(firesWith asFile "must be an absolute path")
        && firesWith asSource "health.uptimeKuma.url.credential.source is a URL"
        && firesWith (tj {healthchecks.url.file = "file:///run/secrets/hc";}) "healthchecks.url.file is a URL")
      (failing (tj {webhook.url.file = fakeUrl;})))
    (test "assertion: push secrets, caFile and textfile inside the store, or as Nix path values"
      (firesWith (tj {webhook.url.file = storeFile "hook-url";}) "health.webhook.url.file is inside the Nix store"
        && firesWith (tj {healthchecks.url.credential.source = ./eval.nix;}) "health.healthchecks.url.credential.source is a Nix path value"
        && firesWith (tj {
          webhook = {
            url.file = "/run/secrets/hook-url";
            bearerToken.credential.source = storeFile "token";
          };
        }) "health.webhook.bearerToken.credential.source is inside the Nix store"
        && firesWith (tj {uptimeKuma.url.file = ./eval.nix;}) "health.uptimeKuma.url.file is a Nix path value"
        && firesWith (tj {ca_file = storeFile "ca.pem";}) "settings.health.ca_file is inside the Nix store"
        && firesWith (tj {textfile = storeFile "tailjoin.prom";}) "settings.health.textfile is inside the Nix store(.|\n)*read-only")
      (failing (tj {webhook.url.file = storeFile "hook-url";})))
    (test "assertion: a push secret with both credential and file, or neither"
      (firesWith (tj {
          uptimeKuma.url = {
            credential.source = "/run/agenix/kuma";
            file = "/run/secrets/kuma";
          };
        }) "health.uptimeKuma.url must set exactly one of credential or file \\(set: credential, file\\)"
        && firesWith (tj {healthchecks.url = {};}) "health.healthchecks.url must set exactly one of credential or file \\(set: none\\)"
        && firesWith (tj {
          webhook = {
            url.credential = {};
            bearerToken = {};
          };
        }) "health.webhook.bearerToken must set exactly one of credential or file \\(set: none\\)")
      (failing (tj {
        uptimeKuma.url = {
          credential.source = "/run/agenix/kuma";
          file = "/run/secrets/kuma";
        };
      })))
    (test "assertion: a literal token as the bearer token file; relative paths"
      (firesWith (tj {
          webhook = {
            url.credential = {};
            bearerToken.file = "fake-token-0123456789abcdef";
          };
        }) "health.webhook.bearerToken.file looks like a bearer token itself"
        && firesWith (tj {healthchecks.url.file = "secrets/hc-url";}) "health.healthchecks.url.file must be an absolute path"
        && firesWith (tj {textfile = "tailjoin.prom";}) "settings.health.textfile must be an absolute path"
        && firesWith (tj {ca_file = "ca.pem";}) "settings.health.ca_file must be an absolute path")
      null)
    (test "assertion: a webhook bearer token without a webhook URL"
      (firesWith (tj {webhook.bearerToken.credential = {};}) "webhook.bearerToken is set but health.webhook.url is not(.|\n)*webhook.url.credential.source")
      (failing (tj {webhook.bearerToken.credential = {};})))
    (test "assertion: two secrets loaded under one credential name"
      (firesWith (tj {
          webhook.url.credential = {
            name = "tailscale-auth-key";
            source = "/run/agenix/hook";
          };
        }) "the same systemd credential \\(tailscale-auth-key\\)"
        && firesWith (tj {
          healthchecks.url.credential.name = "x";
          uptimeKuma.url.credential = {
            name = "x";
            encrypted = true;
          };
        }) "the same systemd credential \\(x\\)")
      null)
    (test "warning: a push secret file or the textfile where the hardened unit cannot see it"
      ((tj {webhook.url.file = "/home/alice/hook-url";}).warnings
        != []
        && (tj {textfile = "/tmp/tailjoin.prom";}).warnings != []
        && (tj {ca_file = "/home/alice/ca.pem";}).warnings != []
        && (tj {webhook.url.credential.source = "/tmp/hook-url";}).warnings == [])
      null)
  ];
in {
  inherit results;
  configs = {
    health-pull = jsonOf pull;
    health-push-spec-example = jsonOf specExample;
    health-push-full = jsonOf full;
    health-push-files = jsonOf files;
    health-push-minimal = jsonOf minimal;
    health-push-settings-only = jsonOf {heartbeat_secs = 0;};
  };
}
