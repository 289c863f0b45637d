# Zero-touch netboot in NixOS VMs, in the manner of nixpkgs' nixos/tests/boot.nix netboot tests:
# a diskless client with no key boots from the network (its NIC's iPXE ROM, no disk image, no
# -kernel), is handed its boot by `tailjoin-provisioner` on the `provisioner` node (dnsmasq there
# chains iPXE to /v1/boot.ipxe; the answer carries tailjoin.key_url= and a fresh one-time boot
# token), mints a key through the provisioner and joins headscale. Then it reboots and joins
# again with a new token, and an unapproved client is refused until approved.
#
# Written to nixpkgs' conventions; it cannot run on the machines this project is developed on
# (no nixpkgs, no KVM there): tests/nix/check.sh parses and lints it. The same flow runs for
# real, diskless under qemu with Debian's iPXE ROM, in tests/boot/test_netboot.py.
{
  pkgs,
  self,
}: let
  common = import ./common.nix {inherit self;};
  provisionerIp = "192.168.1.2";
  clientMac = "52:54:00:12:01:01";

  # A throwaway CA and the provisioner's certificate, made at build time (never a real secret).
  testPki = pkgs.runCommand "tailjoin-netboot-test-pki" {nativeBuildInputs = [pkgs.openssl];} ''
    mkdir $out && cd $out
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
      -subj /CN=netboot-test-ca -keyout ca.key -out ca.pem
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=provisioner \
      -keyout key.pem -out req.csr
    printf 'subjectAltName=IP:${provisionerIp}\n' > san.ext
    openssl x509 -req -in req.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 3650 \
      -extfile san.ext -out cert.pem
  '';
  strangerMac = "52:54:00:12:01:02";

  # The OS the provisioner serves: the flake's generic-fleet plus the test driver's backdoor,
  # trusting the provisioner's throwaway CA and headscale's plain-HTTP DERP.
  served = self.nixosConfigurations.generic-fleet.extendModules {
    modules = [
      "${pkgs.path}/nixos/modules/testing/test-instrumentation.nix"
      ({lib, ...}: {
        services.tailjoin = {
          loginServer = lib.mkForce "http://headscale:8080";
          authKey = lib.mkForce {kernelCmdline.caFile = "/etc/tailjoin/prov-ca.pem";};
        };
        environment.etc."tailjoin/prov-ca.pem".source = "${testPki}/ca.pem";
        systemd.services.tailscaled.environment.TS_DEBUG_USE_DERP_HTTP = "1";
        networking.hosts.${provisionerIp} = ["provisioner"];
      })
    ];
  };

  # A node that has no disk and no kernel of its own: qemu boots its first NIC's iPXE ROM.
  disklessNode = mac: {lib, ...}: {
    virtualisation = {
      diskImage = null;
      directBoot.enable = false;
      qemu.options = ["-boot order=n"];
      qemu.networkingOptions = lib.mkForce [
        "-device virtio-net-pci,netdev=vlan1,mac=${mac}"
        "-netdev vde,id=vlan1,sock=\"$QEMU_VDE_SOCKET_1\""
      ];
    };
  };
in
  pkgs.testers.runNixOSTest {
    name = "tailjoin-netboot";
    nodes = {
      headscale = {
        imports = [common.headscaleNode];
        environment.systemPackages = [pkgs.jq];
      };
      provisioner = {
        imports = [self.nixosModules.provisioner];
        networking.interfaces.eth1.ipv4.addresses = [
          {
            address = provisionerIp;
            prefixLength = 24;
          }
        ];
        services.tailjoin-provisioner = {
          enable = true;
          listen = "0.0.0.0:8443";
          openFirewall = true;
          tls = {
            certFile = "${testPki}/cert.pem";
            # The throwaway test key, copied out of the store to where a real one would be.
            key.credential.source = "/etc/tailjoin-test/prov-tls-key";
          };
          mint.headscale = {
            url = "http://headscale:8080";
            allowPlainHttp = true;
            apiKey.credential.source = "/tmp/shared/headscale-api-key";
            user = "fleet";
          };
          settings = {
            tags = ["tag:netboot"];
            allow.macs = [clientMac];
            netboot.retry_secs = 5;
          };
          netboot = {
            enable = true;
            openFirewall = true;
            keyUrl = "https://${provisionerIp}:8443/v1/key";
            system = served;
          };
        };
        environment.etc."tailjoin-test/prov-tls-key" = {
          source = "${testPki}/key.pem";
          mode = "0400";
        };
        services.dnsmasq = {
          enable = true;
          settings = {
            interface = "eth1";
            dhcp-range = ["192.168.1.100,192.168.1.200,1h"];
            dhcp-boot = "http://${provisionerIp}:8081/v1/boot.ipxe";
          };
        };
        networking.firewall.allowedUDPPorts = [67];
      };
      client = disklessNode clientMac;
      stranger = disklessNode strangerMac;
    };

    testScript = ''
      ${common.makeKeyPy}
      import json

      headscale.start()
      headscale.wait_for_unit("headscale.service")
      headscale.wait_for_open_port(${toString common.headscalePort})
      make_user("fleet")
      headscale.succeed("headscale apikeys create --expiration 1h > /tmp/shared/headscale-api-key")

      provisioner.start()
      provisioner.wait_for_unit("tailjoin-provisioner.service")
      provisioner.wait_for_open_port(8081)

      def nodes():
          return json.loads(headscale.succeed("headscale nodes list -o json"))

      with subtest("a diskless client boots from the network with a per-boot token and joins"):
          client.start()
          client.wait_for_unit("tailjoin.service", timeout=600)
          client.succeed("findmnt -n -o FSTYPE / | grep -qx tmpfs")
          client.fail("ls /dev/vd* /dev/sd*")
          first = client.succeed("tr ' ' '\\n' < /proc/cmdline | sed -n 's/^tailjoin.boot_token=//p'").strip()
          assert len(first) >= 32, "no boot token on the kernel command line"
          assert len(nodes()) == 1

      with subtest("after a reboot it gets a new token and a new key and joins again"):
          client.shutdown()
          client.start()
          client.wait_for_unit("tailjoin.service", timeout=600)
          second = client.succeed("tr ' ' '\\n' < /proc/cmdline | sed -n 's/^tailjoin.boot_token=//p'").strip()
          assert second and second != first, "the reboot reused the boot token"

      with subtest("the first boot's token is refused when replayed"):
          code = provisioner.succeed(
              "curl -sk -o /dev/null -w '%{http_code}' -H 'Authorization: Bearer " + first + "' "
              + "-H 'Content-Type: application/json' -d '{\"mac_addresses\":[\"${clientMac}\"]}' https://127.0.0.1:8443/v1/key"
          ).strip()
          assert code == "403", f"replayed token answered {code}"

      with subtest("an unapproved machine is refused and pending, then approved once"):
          stranger.start()
          provisioner.wait_until_succeeds("tailjoin-provisioner pending | grep -qi ${strangerMac}", timeout=600)
          provisioner.succeed("tailjoin-provisioner approve ${strangerMac}")
          stranger.wait_for_unit("tailjoin.service", timeout=900)
    '';
  }
