# The provisioner's secrets: the TLS certificate and key, the boot tokens, and the checks every
# secret reference and path must pass (exactly one of credential or file, never the secret
# itself, never in the store, absolute), as in the agent's module. The minting backend's secret
# is declared in ./mint.nix; ./refs.nix lists them all.
{
  config,
  lib,
  ...
}: let
  inherit (lib) mkOption types;
  inherit (import ../secret-refs.nix {inherit lib;}) pathString isStorePath refSourcesSet;
  inherit (import ./types.nix {inherit lib;}) mkSecretRefType looksLikeSecret;
  inherit (import ./refs.nix {inherit lib cfg;}) secretRefs paths duplicateNames;

  cfg = config.services.tailjoin-provisioner;
  inherit (cfg) tls;
in {
  options.services.tailjoin-provisioner = {
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

    allow.bootTokens = mkOption {
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

  config = lib.mkIf cfg.enable {
    assertions =
      [
        {
          assertion = (cfg.settings.allow.macs or []) != [] || (cfg.settings.allow.networks or []) != [] || cfg.allow.bootTokens != null;
          message = ''
            services.tailjoin-provisioner.allow sets no check, so anyone who can reach the provisioner would get a key. Set at least one:
              services.tailjoin-provisioner.allow.bootTokens.credential.source = "/run/agenix/boot-tokens";  # one-time tokens
              services.tailjoin-provisioner.settings.allow.networks = [ "10.0.0.0/24" ];                      # the netboot LAN
              services.tailjoin-provisioner.settings.allow.macs = [ "52:54:00:12:34:56" ];
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
  };
}
