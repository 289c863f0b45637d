# The provisioner's option types: a secret it reads at run time (exactly one of a systemd
# credential or a file, never the secret). The minting backends' options are ../mint-options.nix.
{lib}: let
  inherit (lib) mkOption types;
  inherit (import ../secret-refs.nix {inherit lib;}) pathString;
in {
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
}
