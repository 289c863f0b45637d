# The provisioner's unit: a dynamic user with its state directory, the secrets as credentials,
# hardened; CAP_NET_BIND_SERVICE only for a port below 1024. And the firewall.
{
  config,
  lib,
  ...
}: let
  inherit (import ../secret-refs.nix {inherit lib;}) loadCredentials;
  cfg = config.services.tailjoin-provisioner;
  inherit (import ./refs.nix {inherit lib cfg;}) credentials;
  stateDir = "tailjoin-provisioner";

  # ip:port, IPv6 in brackets.
  listenMatch = builtins.match "(\\[[0-9A-Fa-f:.]+]|[0-9.]+):([0-9]+)" cfg.listen;
  port =
    if listenMatch == null
    then null
    else lib.toInt (builtins.elemAt listenMatch 1);
  privilegedPort = port != null && port < 1024;
in {
  options.services.tailjoin-provisioner.internal.stateDir = lib.mkOption {
    type = lib.types.str;
    default = stateDir;
    readOnly = true;
    internal = true;
    description = "The unit's StateDirectory, under /var/lib.";
  };

  config = lib.mkIf cfg.enable {
    assertions = [
      {
        assertion = port != null && port >= 1 && port <= 65535;
        message = "services.tailjoin-provisioner.listen must be ip:port with a port from 1 to 65535 (got ${cfg.listen}).";
      }
    ];

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
          ExecStart = "${lib.getExe' cfg.package "tailjoin-provisioner"} --config ${cfg.configFile}";
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
        // loadCredentials credentials;
      wantedBy = ["multi-user.target"];
    };
  };
}
