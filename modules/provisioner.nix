# services.tailjoin-provisioner: `tailjoin provision`, a small HTTPS service that hands a freshly
# minted, single-use, short-lived tailnet key to a netbooted machine that asks for it at boot
# (the agent's `authKey.kernelCmdline` or `authKey.http` source), after checking the machine
# against an allow list (MAC addresses, networks, one-time boot tokens).
#
# Like modules/tailjoin.nix, the options name where the secrets are at run time (the headscale
# API key or OAuth client secret, the boot tokens, the TLS key), never the secrets: the JSON
# config in the store holds only credential names and paths, and assertions stop a build that
# would put a secret, or a secret file, into the store. The service runs as a dynamic user and
# reads its secrets as systemd credentials.
{
  config,
  lib,
  options,
  pkgs,
  ...
}: let
  inherit (lib) mkOption types;
  inherit (import ./secret-refs.nix {inherit lib;}) pathString isStorePath refSourcesSet refJSON loadCredentials;

  cfg = config.services.tailjoin-provisioner;

  stateDir = "tailjoin-provisioner";

  # A secret given where its path belongs: a Tailscale key or secret by its form, any other as a
  # long string without a slash, which no path has.
  looksLikeSecret = v:
    builtins.isString v
    && (lib.hasPrefix "tskey-" v || (!(lib.hasInfix "/" v) && builtins.stringLength v >= 16));

  # A secret the provisioner reads: exactly one of a systemd credential (recommended: the dynamic
  # user can read it) or a file. Never the secret itself.
  mkSecretRefType = {
    defaultName,
    what,
  }:
    types.submodule {
      options = {
        credential = mkOption {
          type = types.nullOr (types.submodule {
            options = {
              name = mkOption {
                type = types.strMatching "[A-Za-z0-9_.@-]+";
                default = defaultName;
                description = "The credential's name: the provisioner reads ${what} from `$CREDENTIALS_DIRECTORY/<name>`.";
              };
              source = mkOption {
                type = types.nullOr pathString;
                default = null;
                example = "/run/agenix/${defaultName}";
                description = ''
                  Absolute path of the file systemd loads the credential from at service start
                  (`LoadCredential=<name>:<source>`; systemd reads it as root, so it may be
                  root-only), given as a string so that it is never copied into the Nix store.
                  `null` loads the credential of the same name from the system credential store
                  (`/etc/credstore`, `/run/credstore`, SMBIOS, fw_cfg).
                '';
              };
              encrypted = mkOption {
                type = types.bool;
                default = false;
                description = ''
                  Whether the credential is encrypted with `systemd-creds encrypt` (TPM2 or the
                  host key); uses `LoadCredentialEncrypted=` instead of `LoadCredential=`.
                '';
              };
            };
          });
          default = null;
          example = lib.literalExpression ''{ source = "/run/agenix/${defaultName}"; }'';
          description = "Deliver ${what} as a systemd credential (recommended).";
        };
        file = mkOption {
          type = types.nullOr pathString;
          default = null;
          example = "/run/secrets/${defaultName}";
          description = ''
            Absolute path of a file that holds ${what}, read by the provisioner at run time. It
            runs as a dynamic user, so a root-only file is unreadable: prefer `credential`. A
            string, never a Nix path: a path value would be copied into the world-readable store.
          '';
        };
      };
    };

  caFileOption = mkOption {
    type = types.nullOr pathString;
    default = null;
    example = "/etc/tailjoin-provisioner/api-ca.pem";
    description = ''
      Absolute path of a PEM bundle of the CA(s) that sign the API server's certificate; when
      set, only these are trusted. `null` trusts the usual public CAs.
    '';
  };

  timeoutOption = mkOption {
    type = types.ints.between 1 300;
    default = 10;
    description = "Seconds one API request may take, connecting included.";
  };

  # ip:port, IPv6 in brackets.
  listenMatch = builtins.match "(\\[[0-9A-Fa-f:.]+]|[0-9.]+):([0-9]+)" cfg.listen;
  port =
    if listenMatch == null
    then null
    else lib.toInt (builtins.elemAt listenMatch 1);
  privilegedPort = port != null && port < 1024;

  hs = cfg.mint.headscale;
  oauth = cfg.mint.tailscaleOAuth;
  mintSet = lib.filter (n: cfg.mint.${n} != null) ["headscale" "tailscaleOAuth"];
  inherit (cfg) tls;
  tokens = cfg.allow.bootTokens;

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
  credentialKeys = loadCredentials credentials;

  isPlainHttp = url: url != null && lib.hasPrefix "http://" (lib.toLower url);

  nonNull = lib.filterAttrs (_: v: v != null);

  mintJSON =
    if hs != null
    then {
      headscale = nonNull {
        inherit (hs) url;
        api_key = refJSON hs.apiKey;
        user = lib.mapNullable toString hs.user;
        ca_file = lib.mapNullable toString hs.caFile;
        allow_plain_http = hs.allowPlainHttp;
        timeout_secs = hs.timeoutSecs;
      };
    }
    else if oauth != null
    then {
      tailscale_oauth = nonNull {
        client_id = oauth.clientId;
        client_secret = refJSON oauth.clientSecret;
        api_url = oauth.apiUrl;
        inherit (oauth) tailnet;
        ca_file = lib.mapNullable toString oauth.caFile;
        timeout_secs = oauth.timeoutSecs;
      };
    }
    else null;

  settings =
    lib.recursiveUpdate (nonNull {
      inherit (cfg) listen tags ephemeral;
      tls =
        if tls == null
        then null
        else
          nonNull {
            cert_file = lib.mapNullable toString tls.certFile;
            key = refJSON tls.key;
          };
      allow_plain_http = cfg.allowPlainHttp;
      mint = mintJSON;
      key_expiry_secs = cfg.keyExpiry;
      # Every list that is set must match: an empty one is left out, not sent as "match nothing".
      allow = nonNull {
        macs =
          if cfg.allow.macs == []
          then null
          else map lib.toLower cfg.allow.macs;
        networks =
          if cfg.allow.networks == []
          then null
          else cfg.allow.networks;
        boot_tokens = refJSON tokens;
      };
      rate_limit = {
        per_minute = cfg.rateLimit.perMinute;
        inherit (cfg.rateLimit) burst;
        per_client_per_minute = cfg.rateLimit.perClientPerMinute;
      };
      state_dir = "/var/lib/${stateDir}";
      log_level = cfg.logLevel;
      netboot = cfg.netboot.configSection;
    })
    cfg.extraSettings;

  rawConfigFile = pkgs.writeText "tailjoin-provisioner.json" (builtins.toJSON settings);

  # Build-time validation: the provisioner reads the file and the build fails with its message
  # (naming the field) if it would refuse it at start.
  checkedConfigFile =
    pkgs.runCommand "tailjoin-provisioner-config.json" {
      nativeBuildInputs = [cfg.package];
      preferLocalBuild = true;
    } ''
      tailjoin provision --config ${rawConfigFile} --check
      cp ${rawConfigFile} "$out"
    '';

  mintExample = ''
    services.tailjoin-provisioner.mint.headscale = {
      url = "https://headscale.example.com";
      apiKey.credential.source = "/run/agenix/headscale-api-key";
      user = "fleet";
    };'';
in {
  imports = [./provisioner-netboot.nix];

  options.services.tailjoin-provisioner = {
    enable = lib.mkEnableOption "the tailjoin provisioner (`tailjoin provision`), which mints a single-use tailnet key for each netbooted machine that asks at boot and passes the allow list";

    package = mkOption {
      type = types.package;
      default =
        if options ? services.tailjoin.package
        then config.services.tailjoin.package
        else pkgs.tailjoin;
      defaultText = lib.literalExpression "config.services.tailjoin.package (pkgs.tailjoin without the tailjoin module)";
      description = "The tailjoin package; the provisioner is its `provision` subcommand.";
    };

    listen = mkOption {
      type = types.strMatching "(\\[[0-9A-Fa-f:.]+]|[0-9.]+):[0-9]+";
      default = "0.0.0.0:8443";
      example = "[::]:443";
      description = "Address and port to listen on (`ip:port`, IPv6 in brackets).";
    };

    openFirewall = mkOption {
      type = types.bool;
      default = false;
      description = "Open the listening TCP port in the firewall.";
    };

    tls = mkOption {
      type = types.nullOr (types.submodule {
        options = {
          certFile = mkOption {
            # nullOr only so that an assertion can say what to set.
            type = types.nullOr pathString;
            default = null;
            example = "/var/lib/acme/prov.lan/fullchain.pem";
            description = ''
              Absolute path of the PEM certificate chain (public). The provisioner's dynamic user
              reads it: make it world-readable, or let the unit's group read it (for ACME
              certificates: `systemd.services.tailjoin-provisioner.serviceConfig.SupplementaryGroups`
              = the certificate's group).
            '';
          };
          key = mkOption {
            type = mkSecretRefType {
              defaultName = "tls-key";
              what = "the TLS private key";
            };
            default = {};
            example = lib.literalExpression ''{ credential.source = "/var/lib/acme/prov.lan/key.pem"; }'';
            description = "Where the provisioner finds the TLS private key: exactly one of `credential` or `file`.";
          };
        };
      });
      default = null;
      example = lib.literalExpression ''
        {
          certFile = "/var/lib/acme/prov.lan/fullchain.pem";
          key.credential.source = "/var/lib/acme/prov.lan/key.pem";
        }
      '';
      description = ''
        Serve HTTPS with this certificate. The machines then need the CA that signed it
        (`services.tailjoin.authKey.kernelCmdline.caFile` for a home-lab CA).
      '';
    };

    allowPlainHttp = mkOption {
      type = types.bool;
      default = false;
      description = ''
        Serve plain HTTP when {option}`tls` is not set. Keys and boot tokens then cross the
        network in clear text: only on a link you trust (a dedicated provisioning VLAN).
      '';
    };

    mint = {
      headscale = mkOption {
        type = types.nullOr (types.submodule {
          options = {
            url = mkOption {
              # nullOr only so that an assertion can say what to set.
              type = types.nullOr types.str;
              default = null;
              example = "https://headscale.example.com";
              description = "headscale's `server_url` (its API is `<url>/api/v1/…`).";
            };
            apiKey = mkOption {
              type = mkSecretRefType {
                defaultName = "headscale-api-key";
                what = "the headscale API key";
              };
              default = {};
              example = lib.literalExpression ''{ credential.source = "/run/agenix/headscale-api-key"; }'';
              description = ''
                Where the provisioner finds the headscale API key (`headscale apikeys create`):
                exactly one of `credential` or `file`. Never the key itself.
              '';
            };
            user = mkOption {
              type = types.nullOr (types.either types.str types.ints.unsigned);
              default = null;
              example = "fleet";
              description = "The headscale user (name or numeric id) that owns the minted keys; may stay `null` with {option}`tags`.";
            };
            caFile = caFileOption;
            allowPlainHttp = mkOption {
              type = types.bool;
              default = false;
              description = "Accept an `http://` URL (a headscale on this host only: the API key crosses the network in clear text).";
            };
            timeoutSecs = timeoutOption;
          };
        });
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
        type = types.nullOr (types.submodule {
          options = {
            clientId = mkOption {
              type = types.nullOr types.str;
              default = null;
              example = "kFAKEclientid";
              description = "The OAuth client's id (not secret).";
            };
            clientSecret = mkOption {
              type = mkSecretRefType {
                defaultName = "tailscale-oauth-secret";
                what = "the OAuth client secret";
              };
              default = {};
              example = lib.literalExpression ''{ credential.source = "/run/agenix/tailscale-oauth-secret"; }'';
              description = "Where the provisioner finds the OAuth client secret (scope `auth_keys`): exactly one of `credential` or `file`.";
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
            caFile = caFileOption;
            timeoutSecs = timeoutOption;
          };
        });
        default = null;
        example = lib.literalExpression ''
          {
            clientId = "kFAKEclientid";
            clientSecret.credential.source = "/run/agenix/tailscale-oauth-secret";
          }
        '';
        description = "Mint keys through Tailscale's API with an OAuth client (needs {option}`tags`).";
      };
    };

    tags = mkOption {
      type = types.listOf (types.strMatching "tag:[A-Za-z0-9-]+");
      default = [];
      example = ["tag:netboot"];
      description = "ACL tags of the minted keys (required with `mint.tailscaleOAuth`).";
    };

    ephemeral = mkOption {
      type = types.bool;
      default = true;
      description = "Mint ephemeral keys: the control server drops a node soon after it goes offline.";
    };

    keyExpiry = mkOption {
      type = types.ints.between 60 86400;
      default = 300;
      description = "Seconds a minted key stays valid (it is single-use and spent within seconds).";
    };

    allow = {
      macs = mkOption {
        type = types.listOf (types.strMatching "[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}");
        default = [];
        example = ["52:54:00:12:34:56"];
        description = "MAC addresses: one the machine reports must be listed. `[]` does not check MACs.";
      };
      networks = mkOption {
        type = types.listOf (types.strMatching "[0-9A-Fa-f:.]+/[0-9]{1,3}");
        default = [];
        example = ["10.0.0.0/24" "192.0.2.7/32"];
        description = "CIDR prefixes: the TCP peer's address must be in one. `[]` does not check addresses.";
      };
      bootTokens = mkOption {
        type = types.nullOr (mkSecretRefType {
          defaultName = "boot-tokens";
          what = "the boot tokens";
        });
        default = null;
        example = lib.literalExpression ''{ credential.source = "/run/agenix/boot-tokens"; }'';
        description = ''
          Where the provisioner finds the one-time boot tokens: a file with one token per line,
          optionally followed by a label (`TOKEN LABEL`), `#` comments. Each works once; a machine
          sends it as `tailjoin.boot_token=` on its kernel command line. `null` checks no token.
        '';
      };
    };

    rateLimit = {
      perMinute = mkOption {
        type = types.ints.between 1 100000;
        default = 60;
        description = "Keys issued per minute, all clients together.";
      };
      burst = mkOption {
        type = types.ints.between 1 100000;
        default = 10;
        description = "Requests allowed at once above the steady rate.";
      };
      perClientPerMinute = mkOption {
        type = types.ints.between 1 100000;
        default = 6;
        description = "Requests per minute from one client address.";
      };
    };

    logLevel = mkOption {
      type = types.enum ["error" "warn" "info" "debug" "trace"];
      default = "info";
      description = "The provisioner's log level.";
    };

    extraSettings = mkOption {
      type = types.attrsOf types.anything;
      default = {};
      example = {rate_limit.burst = 20;};
      description = ''
        Raw settings merged over the generated config (its JSON field names). Validated with the
        rest at build time. Never put a secret here.
      '';
    };

    validateConfig = mkOption {
      type = types.bool;
      default = true;
      description = ''
        Run `tailjoin provision --check` on the generated config at build time. Turn off only
        when the build machine cannot run the agent (cross builds without emulation).
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
      description = "The provisioner's config file, as generated from these options.";
    };
  };

  config = lib.mkIf cfg.enable {
    assertions =
      [
        {
          assertion = cfg.allow.macs != [] || cfg.allow.networks != [] || tokens != null;
          message = ''
            services.tailjoin-provisioner.allow sets no check, so anyone who can reach the provisioner would get a key. Set at least one:
              services.tailjoin-provisioner.allow.bootTokens.credential.source = "/run/agenix/boot-tokens";  # one-time tokens
              services.tailjoin-provisioner.allow.networks = [ "10.0.0.0/24" ];                               # the netboot LAN
              services.tailjoin-provisioner.allow.macs = [ "52:54:00:12:34:56" ];
          '';
        }
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
          assertion = tls != null || cfg.allowPlainHttp;
          message = ''
            services.tailjoin-provisioner serves keys over plain HTTP: tls is not set. Give it a certificate:
              services.tailjoin-provisioner.tls = {
                certFile = "/var/lib/acme/prov.lan/fullchain.pem";
                key.credential.source = "/var/lib/acme/prov.lan/key.pem";
              };
            or, only on a link you trust, set services.tailjoin-provisioner.allowPlainHttp = true;
          '';
        }
        {
          assertion = tls == null || tls.certFile != null;
          message = ''
            services.tailjoin-provisioner.tls.certFile is not set: name the PEM certificate chain, e.g.
              services.tailjoin-provisioner.tls.certFile = "/var/lib/acme/prov.lan/fullchain.pem";
          '';
        }
        {
          assertion = oauth == null || cfg.tags != [];
          message = ''
            services.tailjoin-provisioner.mint.tailscaleOAuth needs tags: Tailscale only lets an OAuth client create keys for tagged nodes. Set
              services.tailjoin-provisioner.tags = [ "tag:netboot" ];   # tags the OAuth client owns
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
          assertion = hs == null || hs.user != null || cfg.tags != [];
          message = ''
            services.tailjoin-provisioner.mint.headscale sets neither a user nor tags, and headscale needs one of them to own the nodes. Set
              services.tailjoin-provisioner.mint.headscale.user = "fleet";
            or services.tailjoin-provisioner.tags = [ "tag:netboot" ];
          '';
        }
        {
          assertion = port != null && port >= 1 && port <= 65535;
          message = "services.tailjoin-provisioner.listen must be ip:port with a port from 1 to 65535 (got ${cfg.listen}).";
        }
        {
          assertion = duplicateNames == [];
          message = ''
            services.tailjoin-provisioner loads two secrets under the same credential name (${lib.concatStringsSep ", " duplicateNames}),
            so one would shadow the other. Give each its own credential.name.
          '';
        }
      ]
      ++ map (s: let
        set = refSourcesSet s.ref;
      in {
        assertion = builtins.length set == 1;
        message = ''
          services.tailjoin-provisioner.${s.opt} must set exactly one of credential or file (set: ${
            if set == []
            then "none"
            else lib.concatStringsSep ", " set
          }).
          For example: services.tailjoin-provisioner.${s.opt}.credential.source = "/run/agenix/${s.name}";
        '';
      })
      secretRefs
      ++ map (p: {
        assertion = !(p.secret && looksLikeSecret p.value);
        message = ''
          services.tailjoin-provisioner.${p.opt} looks like the secret itself, not a path.
          Write it into a root-only file outside the store (or use agenix/sops-nix) and give its path:
            services.tailjoin-provisioner.${p.opt} = "${p.example}";
          and revoke it: it is now in your configuration.
        '';
      })
      paths
      ++ map (p: {
        assertion = (p.secret && looksLikeSecret p.value) || !(isStorePath p.value);
        message = ''
          services.tailjoin-provisioner.${p.opt} is ${
            if builtins.isPath p.value
            then "a Nix path value, which is copied into"
            else "inside"
          } the Nix store (${toString p.value}), where every local user can read it.
          Give the path as a string that points outside the store, e.g.
            services.tailjoin-provisioner.${p.opt} = "${p.example}";
          with the file provided at run time by agenix, sops-nix or systemd-creds.
        '';
      })
      paths
      ++ map (p: {
        assertion = (p.secret && looksLikeSecret p.value) || isStorePath p.value || lib.hasPrefix "/" (toString p.value);
        message = "services.tailjoin-provisioner.${p.opt} must be an absolute path (got ${toString p.value}).";
      })
      paths;

    warnings = map (s: ''
      services.tailjoin-provisioner.${s.opt}.file is read by the provisioner's dynamic user, which cannot read a root-only file.
      Load it as a credential instead (systemd reads the source as root):
        services.tailjoin-provisioner.${s.opt}.credential.source = "${toString s.ref.file}";
    '') (lib.filter (s: s.ref.file != null && s.ref.credential == null) secretRefs);

    networking.firewall.allowedTCPPorts = lib.mkIf (cfg.openFirewall && port != null) [port];

    systemd.services.tailjoin-provisioner = {
      unitConfig = {
        Description = "tailjoin provisioner: one-time tailnet keys for netbooted machines";
        Documentation = "https://example.invalid/tailjoin#readme";
        After = ["network-online.target"];
        Wants = ["network-online.target"];
        StartLimitIntervalSec = 600;
        StartLimitBurst = 5;
      };
      serviceConfig =
        {
          Type = "simple";
          ExecStart = "${lib.getExe' cfg.package "tailjoin"} provision --config ${cfg.configFile}";
          Restart = "on-failure";
          RestartSec = "5s";
          # 2: the config is invalid; restarting will not fix it.
          RestartPreventExitStatus = "2";

          DynamicUser = true;
          StateDirectory = stateDir;
          StateDirectoryMode = "0700";
          UMask = "0077";

          # Binding a port below 1024 is the only privilege it may need.
          CapabilityBoundingSet =
            if privilegedPort
            then "CAP_NET_BIND_SERVICE"
            else "";
          AmbientCapabilities =
            if privilegedPort
            then "CAP_NET_BIND_SERVICE"
            else "";
          # A user namespace would take the capability away in the host's network namespace.
          PrivateUsers = !privilegedPort;
          NoNewPrivileges = true;
          ProtectSystem = "strict";
          ProtectHome = true;
          PrivateTmp = true;
          PrivateDevices = true;
          PrivateMounts = true;
          ProtectKernelTunables = true;
          ProtectKernelModules = true;
          ProtectKernelLogs = true;
          ProtectControlGroups = true;
          ProtectClock = true;
          ProtectHostname = true;
          ProtectProc = "invisible";
          ProcSubset = "pid";
          RestrictAddressFamilies = ["AF_INET" "AF_INET6" "AF_UNIX"];
          RestrictNamespaces = true;
          RestrictRealtime = true;
          RestrictSUIDSGID = true;
          LockPersonality = true;
          MemoryDenyWriteExecute = true;
          SystemCallFilter = ["@system-service" "~@privileged @resources"];
          SystemCallArchitectures = "native";
          SystemCallErrorNumber = "EPERM";
          DevicePolicy = "closed";
          KeyringMode = "private";
          RemoveIPC = true;
        }
        // credentialKeys;
      wantedBy = ["multi-user.target"];
    };
  };
}
