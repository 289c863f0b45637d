# A client with a key headscale never issued: the agent gives up after its key attempts with
# exit status 3, the unit is failed (RestartPreventExitStatus keeps it from looping), and the
# journal says why with TAILJOIN_ERROR_KIND=key-rejected.
{
  pkgs,
  self,
}: let
  common = import ./common.nix {inherit self;};
in
  pkgs.testers.runNixOSTest {
    name = "tailjoin-bad-key";
    nodes = {
      headscale = {
        imports = [common.headscaleNode];
        environment.systemPackages = [pkgs.jq];
      };
      client = {
        imports = [(common.clientNode "bad.key")];
        services.tailjoin.settings.retry.key_attempts = 1;
      };
    };

    testScript = ''
      ${common.makeKeyPy}

      headscale.start()
      headscale.wait_for_unit("headscale.service")
      headscale.wait_for_open_port(${toString common.headscalePort})
      make_user("lab")
      bad = "0123456789abcdef0123456789abcdef0123456789abcdef"
      headscale.succeed(f"printf %s '{bad}' > /tmp/shared/bad.key")

      client.start()

      with subtest("the unit fails with the agent's key-rejected exit status"):
          client.wait_until_succeeds("systemctl is-failed tailjoin.service", timeout=240)
          assert client.succeed("systemctl show -P ExecMainStatus tailjoin.service").strip() == "3"
          # Exit status 3 is in RestartPreventExitStatus: no restart loop spending more logins.
          assert client.succeed("systemctl show -P NRestarts tailjoin.service").strip() == "0"

      with subtest("the journal says why"):
          entries = journal(client)
          failed = [e for e in entries if e.get("TAILJOIN_STATE") == "failed"]
          assert failed, entries
          assert failed[-1]["TAILJOIN_ERROR_KIND"] == "key-rejected", failed[-1]
          client.fail(f"journalctl -b --no-pager -o verbose | grep -qF '{bad}'")

      with subtest("the node never joined"):
          client.fail("tailscale status --json | jq -e '.BackendState == \"Running\"'")
    '';
  }
