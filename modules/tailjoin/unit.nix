# The tailjoin unit. Its invariant part (ordering, restart policy, hardening) is read from
# ../tailjoin-unit.json, the one source of truth that the non-Nix boot test renders too; this
# file adds only the instance settings: ExecStart, the credentials the key source and the push
# reporters name, the environment file, the health textfile's directory, ProcSubset=all
# where the agent needs /proc/cmdline or /proc/sys (ProcSubset=pid hides them), and the TPM
# resource manager /dev/tpmrm0 where a key request may prove the machine's TPM.
{
  config,
  lib,
  ...
}: let
  inherit (import ../secret-refs.nix {inherit lib;}) loadCredentials;

  cfg = config.services.tailjoin;
  unitSpec = builtins.removeAttrs (builtins.fromJSON (builtins.readFile ../tailjoin-unit.json)) ["_comment"];

  key = cfg.authKey;
  # The env source's file, when it is the one source set (./key.nix asserts that).
  oneSource = builtins.isAttrs key && lib.count (n: key.${n} != null) (builtins.attrNames key) == 1;
  envFile =
    if oneSource && key.env != null
    then key.env.environmentFile
    else null;
  textfile = cfg.settings.health.textfile or null;
in {
  config = lib.mkIf cfg.enable {
    assertions = [
      {
        assertion = config.services.tailscale.authKeyFile == null;
        message = ''
          services.tailscale.authKeyFile is set, so nixpkgs' own autoconnect would run `tailscale up` next to tailjoin
          (and pass the key on the command line). Remove services.tailscale.authKeyFile and give the same file to tailjoin:
            services.tailjoin.authKey.credential.source = "<that path>";
        '';
      }
    ];

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
        // loadCredentials (lib.unique cfg.internal.credentials)
        // lib.optionalAttrs (envFile != null) {
          EnvironmentFile = toString envFile;
        }
        // lib.optionalAttrs (textfile != null) {
          ReadWritePaths = [(dirOf (toString textfile))];
        }
        // lib.optionalAttrs cfg.internal.procSubsetAll {
          ProcSubset = "all";
        }
        // lib.optionalAttrs cfg.internal.tpmDevice {
          # PrivateDevices= would hide it; DevicePolicy=closed stays, so this is the one device
          # node the agent may open beyond the pseudo devices.
          PrivateDevices = false;
          DeviceAllow = ["/dev/tpmrm0 rw"];
        };
      wantedBy = unitSpec.install.WantedBy;
    };
  };
}
