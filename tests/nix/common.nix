# Shared pieces of the VM tests: a headscale node with its embedded DERP server (plain HTTP,
# so the clients run tailscaled with TS_DEBUG_USE_DERP_HTTP=1) and a client node using the
# module with its key delivered as a systemd credential.
#
# Keys are made by headscale at test time and written to /tmp/shared, the directory the test
# driver shares between all VMs; clients are started only after their key file exists, so they
# join at boot. The key path is a string: nothing about the key enters the store.
{self}: {
  headscalePort = 8080;

  headscaleNode = {lib, ...}: {
    services.headscale = {
      enable = true;
      address = "0.0.0.0";
      port = 8080;
      settings = {
        server_url = "http://headscale:8080";
        prefixes = {
          v4 = "100.64.0.0/10";
          v6 = "fd7a:115c:a1e0::/48";
        };
        derp = {
          server = {
            enabled = true;
            region_id = 999;
            region_code = "headscale";
            region_name = "Headscale Embedded DERP";
            stun_listen_addr = "0.0.0.0:3478";
            automatically_add_embedded_derp_region = true;
          };
          urls = lib.mkForce [];
          paths = [];
          auto_update_enabled = false;
        };
        dns = {
          magic_dns = false;
          base_domain = "tailnet.test";
          override_local_dns = false;
        };
        disable_check_updates = true;
        logtail.enabled = false;
      };
    };
    networking.firewall = {
      allowedTCPPorts = [8080];
      allowedUDPPorts = [3478];
    };
  };

  # A client whose key is the file /tmp/shared/<keyName> on the shared directory.
  clientNode = keyName: {pkgs, ...}: {
    imports = [self.nixosModules.tailjoin];
    services.tailjoin = {
      enable = true;
      loginServer = "http://headscale:8080";
      authKey.credential.source = "/tmp/shared/${keyName}";
      settings = {
        join_timeout_secs = 30;
        log_level = "debug";
      };
    };
    systemd.services.tailscaled.environment = {
      TS_DEBUG_USE_DERP_HTTP = "1";
      TS_DISABLE_PORTMAPPER = "1";
      TS_NO_LOGS_NO_SUPPORT = "true";
    };
    # The credential's source lives on the shared 9p mount.
    systemd.services.tailjoin.unitConfig.RequiresMountsFor = "/tmp/shared";
    networking.firewall = {
      trustedInterfaces = ["tailscale0"];
      allowedUDPPorts = [41641];
    };
    environment.systemPackages = [pkgs.jq];
  };

  # Python for the test script: make a user and a key on headscale, write the key to the shared
  # directory, and return it (to check that it appears nowhere it should not).
  makeKeyPy = ''
    import json

    def make_user(name):
        headscale.succeed(f"headscale users create {name}")
        users = json.loads(headscale.succeed("headscale users list -o json"))
        return next(u["id"] for u in users if u["name"] == name)

    def make_key(user_id, file_name):
        key = headscale.succeed(
            f"headscale preauthkeys create --user {user_id} --reusable --expiration 1h -o json | jq -r .key"
        ).strip()
        assert key, "headscale made no key"
        headscale.succeed(f"install -m 0444 /dev/null /tmp/shared/{file_name} && printf %s '{key}' > /tmp/shared/{file_name}")
        return key

    def journal(machine, unit="tailjoin"):
        out = machine.succeed(f"journalctl -b -u {unit} -o json --output-fields=MESSAGE,TAILJOIN_STATE,TAILJOIN_PREV_STATE,TAILJOIN_BACKEND_STATE,TAILJOIN_ERROR_KIND,TAILSCALE_IPS,TAILNET,TAILJOIN_TIME_TO_JOIN_MS,SYSLOG_IDENTIFIER")
        return [json.loads(line) for line in out.splitlines() if line.strip()]
  '';
}
