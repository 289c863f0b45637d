# Two clients join a headscale tailnet at boot, with their keys delivered as systemd
# credentials, and ping each other over it. Checks the agent's journal fields, and that the key
# is in neither the store closure nor the journal.
{
  pkgs,
  self,
}: let
  common = import ./common.nix {inherit self;};
in
  pkgs.testers.runNixOSTest {
    name = "tailjoin-join";
    nodes = {
      headscale = {
        imports = [common.headscaleNode];
        environment.systemPackages = [pkgs.jq];
      };
      client1 = common.clientNode "client1.key";
      client2 = common.clientNode "client2.key";
    };

    testScript = ''
      ${common.makeKeyPy}

      headscale.start()
      headscale.wait_for_unit("headscale.service")
      headscale.wait_for_open_port(${toString common.headscalePort})

      uid = make_user("lab")
      keys = {"client1": make_key(uid, "client1.key"), "client2": make_key(uid, "client2.key")}

      client1.start()
      client2.start()

      with subtest("both clients join at boot"):
          for c in (client1, client2):
              # Type=notify: active only once the agent reported Running.
              c.wait_for_unit("tailjoin.service", timeout=180)
              c.wait_until_succeeds("tailscale status --json | jq -e '.BackendState == \"Running\"'", timeout=60)

      with subtest("they ping each other over the tailnet"):
          ip2 = client2.succeed("tailscale ip -4").strip()
          ip1 = client1.succeed("tailscale ip -4").strip()
          client1.wait_until_succeeds(f"tailscale ping --timeout=5s {ip2}", timeout=120)
          client1.wait_until_succeeds(f"ping -c1 -W2 {ip2}", timeout=60)
          client2.wait_until_succeeds(f"ping -c1 -W2 {ip1}", timeout=60)

      with subtest("the journal carries the agent's structured fields"):
          for c in (client1, client2):
              entries = [e for e in journal(c) if "TAILJOIN_STATE" in e]
              states = [e["TAILJOIN_STATE"] for e in entries]
              assert "joining" in states, states
              running = [e for e in entries if e["TAILJOIN_STATE"] == "running"]
              assert running, states
              last = running[-1]
              assert last["TAILJOIN_BACKEND_STATE"] == "Running", last
              assert last["TAILSCALE_IPS"].startswith("100."), last
              assert int(last["TAILJOIN_TIME_TO_JOIN_MS"]) > 0, last
              assert last.get("SYSLOG_IDENTIFIER") == "tailjoin", last
              c.succeed("systemctl show -P StatusText tailjoin.service | grep -i .")

      with subtest("the key is in neither the store closure nor the journal"):
          for c, name in ((client1, "client1"), (client2, "client2")):
              key = keys[name]
              c.succeed(f"! grep -rqF '{key}' $(nix-store -qR /run/current-system)")
              c.succeed(f"! journalctl -b --no-pager -o verbose | grep -qF '{key}'")
              # The agent read it from its credential, not from a world-readable place.
              c.succeed("systemctl show -P LoadCredential tailjoin.service | grep -q tailscale-auth-key")
    '';
  }
