# Evaluation tests for the recipes in secrets/examples: each evaluates with both modules (and
# stand-ins for agenix's and sops-nix's options), fails no assertion, renders the credential
# lines its recipe promises, and leaks nothing into the store. Imported by eval.nix with its
# helpers; returns { results; configs; provisionerConfigs; } (JSON for the real agent to check).
{
  lib,
  pkgs,
  evalModulesWith,
  renderUnit,
  test,
  failing,
  leaks,
  leakMarker,
  ...
}: let
  dir = ../../secrets/examples;

  eval = modules: (evalModulesWith [../../modules/tailjoin ../../modules/provisioner] modules).config;

  names = map (lib.removeSuffix ".nix") (lib.filter (lib.hasSuffix ".nix") (builtins.attrNames (builtins.readDir dir)));
  fileOf = name: dir + "/${name}.nix";
  configOf = name: eval [(fileOf name)];
  # The same with the build-time checks off, to read the raw JSON.
  rawOf = name:
    eval [
      (fileOf name)
      {
        services.tailjoin.validateConfig = false;
        services.tailjoin-provisioner.validateConfig = false;
      }
    ];
  jsonOf = name: builtins.fromJSON (rawOf name).services.tailjoin.configFile.text;
  provJsonOf = name: builtins.fromJSON (rawOf name).services.tailjoin-provisioner.configFile.text;
  svcOf = name: (configOf name).systemd.services.tailjoin.serviceConfig;
  provSvcOf = name: (configOf name).systemd.services.tailjoin-provisioner.serviceConfig;

  # Which of the two services an example enables.
  usesAgent = name: (configOf name).services.tailjoin.enable;
  usesProvisioner = name: (configOf name).services.tailjoin-provisioner.enable;

  leaksOf = name: let
    c = configOf name;
    raw = rawOf name;
    service = svc: let
      f = c.services.${svc}.configFile;
      rawFile = raw.services.${svc}.configFile;
    in {
      texts = {
        "${svc}.json" = rawFile.text;
        "${svc}.service" = renderUnit c.systemd.services.${svc};
        "${svc}.check" = f.script;
      };
      allowed = {
        "${svc}.service" = map toString [pkgs.tailjoin f];
        "${svc}.check" = [(toString rawFile)];
      };
    };
    parts =
      lib.optional (usesAgent name) (service "tailjoin")
      ++ lib.optional (usesProvisioner name) (service "tailjoin-provisioner");
  in
    leaks {
      texts = lib.foldl' (a: p: a // p.texts) {kernelParams = lib.concatStringsSep " " c.boot.kernelParams;} parts;
      allowed = lib.foldl' (a: p: a // p.allowed) {} parts;
      markers = [leakMarker "tskey-" "fake-boot-token"];
    };

  expected = ["agenix" "headscale-mint" "netboot-fleet-machine" "netboot-fleet-provisioner" "netboot-ipxe-chain" "netboot-pixiecore" "sops-nix" "tpm-credential" "vm-smbios"];

  results = [
    (test "example netboot-pixiecore: pixiecore in API mode asks the provisioner's boot listener, which serves an image with enrolment"
      (let
        c = configOf "netboot-pixiecore";
        nb = (provJsonOf "netboot-pixiecore").netboot;
      in
        c.services.pixiecore.mode
        == "api"
        && c.services.pixiecore.apiServer == "http://${nb.listen}"
        && nb.require_approval
        && lib.hasPrefix "https://" nb.key_url
        && (provJsonOf "netboot-pixiecore").allow.macs == ["52:54:00:12:34:56"])
      (provJsonOf "netboot-pixiecore"))
    (test "example netboot-ipxe-chain: dnsmasq chains iPXE to the provisioner's /v1/boot.ipxe on the open boot port"
      (let
        c = configOf "netboot-ipxe-chain";
        nb = (provJsonOf "netboot-ipxe-chain").netboot;
        port = lib.last (lib.splitString ":" nb.listen);
      in
        builtins.elem "tag:ipxe,http://10.0.0.1:${port}/v1/boot.ipxe" c.services.dnsmasq.settings.dhcp-boot
        && builtins.elem (lib.toInt port) c.networking.firewall.allowedTCPPorts
        && nb.token_ttl_secs == 180)
      (provJsonOf "netboot-ipxe-chain"))
    (test "examples: the recipes are all there"
      (lib.all (n: builtins.elem n names) expected)
      names)
    (test "examples: each evaluates with no failing assertion and no warning"
      (lib.all (n: failing (configOf n) == [] && (configOf n).warnings == [] && (usesAgent n || usesProvisioner n)) names)
      (lib.genAttrs names (n: failing (configOf n) ++ (configOf n).warnings)))
    (test "example agenix: the decrypted file under /run/agenix becomes the credential"
      ((svcOf "agenix").LoadCredential
        == "tailscale-auth-key:/run/agenix/tailscale-auth-key"
        && (jsonOf "agenix").auth_key == {credential = "tailscale-auth-key";})
      (svcOf "agenix"))
    (test "example sops-nix: the decrypted file under /run/secrets becomes the credential"
      ((svcOf "sops-nix").LoadCredential
        == "tailscale-auth-key:/run/secrets/tailscale-auth-key"
        && (configOf "sops-nix").sops.secrets.tailscale-auth-key.restartUnits == ["tailjoin.service"])
      (svcOf "sops-nix"))
    (test "example tpm-credential: LoadCredentialEncrypted, no LoadCredential"
      ((svcOf "tpm-credential").LoadCredentialEncrypted
        == "tailscale-auth-key:/etc/credstore.encrypted/tailscale-auth-key"
        && !(svcOf "tpm-credential" ? LoadCredential)
        && (jsonOf "tpm-credential").auth_key == {credential = "tailscale-auth-key";})
      (svcOf "tpm-credential"))
    (test "example vm-smbios: the credential comes from the system credential store (no path)"
      ((svcOf "vm-smbios").LoadCredential == "tailscale-auth-key")
      (svcOf "vm-smbios"))
    (test "example headscale-mint: minted, ephemeral, the API key as a credential"
      (let
        j = jsonOf "headscale-mint";
      in
        j.auth_key.headscale.api_key
        == {credential = "headscale-api-key";}
        && j.auth_key.headscale.url == "https://headscale.example.com"
        && j.ephemeral
        && j.advertise_tags == ["tag:servers"]
        && (svcOf "headscale-mint").LoadCredential == "headscale-api-key:/run/agenix/headscale-api-key")
      (jsonOf "headscale-mint"))
    (test "example netboot-fleet-machine: kernel_cmdline source, key_url on the kernel command line, no credential"
      (let
        c = configOf "netboot-fleet-machine";
        s = svcOf "netboot-fleet-machine";
      in
        (jsonOf "netboot-fleet-machine").auth_key
        == {
          kernel_cmdline = {
            allow_key = false;
            method = "post";
            response = "json";
            ca_file = "/etc/tailjoin/prov-ca.pem";
            timeout_secs = 30;
            max_response_bytes = 16384;
            allow_plain_http = false;
          };
        }
        && c.boot.kernelParams == ["tailjoin.key_url=https://10.0.0.1:8443/v1/key"]
        && s.ProcSubset == "all"
        && !(s ? LoadCredential))
      (jsonOf "netboot-fleet-machine"))
    (test "example netboot-fleet-provisioner: headscale minting, three credentials, the port open"
      (let
        j = provJsonOf "netboot-fleet-provisioner";
        s = provSvcOf "netboot-fleet-provisioner";
      in
        j.mint.headscale.api_key
        == {credential = "headscale-api-key";}
        && j.allow
        == {
          networks = ["10.0.0.0/24"];
          boot_tokens.credential = "boot-tokens";
        }
        && j.tls.key == {credential = "tls-key";}
        && s.LoadCredential
        == [
          "tls-key:/run/agenix/prov-tls-key"
          "headscale-api-key:/run/agenix/headscale-api-key"
          "boot-tokens:/run/agenix/boot-tokens"
        ]
        && s.DynamicUser
        && (configOf "netboot-fleet-provisioner").networking.firewall.allowedTCPPorts == [8443])
      (provSvcOf "netboot-fleet-provisioner"))
    (test "examples netboot-fleet-*: the machine asks the provisioner's port and requests no tags (the minted key carries them)"
      (let
        m = (configOf "netboot-fleet-machine").services.tailjoin;
        p = (configOf "netboot-fleet-provisioner").services.tailjoin-provisioner;
      in
        lib.hasSuffix ":8443" p.listen && lib.hasInfix ":8443/" m.authKey.kernelCmdline.keyUrl && m.settings.advertise_tags == [] && p.settings.tags != [])
      null)
    (test "store leak: no example renders secret content, a fake token or a store path of a secret"
      (lib.all (n: leaksOf n == []) names)
      (lib.genAttrs names leaksOf))
    (test "examples: only obviously fake material (no tskey-, every boot token says fake)"
      (lib.all (n: let
        text = builtins.readFile (fileOf n);
        tokens = lib.concatMap (m:
          if builtins.isList m
          then m
          else []) (builtins.split "boot_token=([^[:space:]]+)" text);
      in
        !(lib.hasInfix "tskey-" text) && lib.all (lib.hasPrefix "fake-") tokens)
      names)
      null)
  ];
in {
  inherit results;
  configs = lib.listToAttrs (map (n: lib.nameValuePair "example-${n}" (jsonOf n)) (lib.filter usesAgent names));
  provisionerConfigs = lib.listToAttrs (map (n: lib.nameValuePair "example-${n}" (provJsonOf n)) (lib.filter usesProvisioner names));
}
