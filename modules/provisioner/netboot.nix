# services.tailjoin-provisioner.netboot: the provisioner issues the boot, not just the key. A
# machine's firmware (iPXE, or pixiecore in API mode) asks the provisioner for its boot; if the
# machine passes the allow list (MAC, network; an unknown MAC waits on the pending list until
# `tailjoin-provisioner approve MAC`), the answer loads the kernel and initrd of a NixOS netboot
# build, served by the provisioner itself, and puts `tailjoin.key_url=` and a fresh one-time boot
# token bound to that MAC on the kernel command line. The booted OS (services.tailjoin with the
# `kernelCmdline` key source, e.g. nixosConfigurations.generic-fleet) trades that token for a
# freshly minted key over HTTPS, once.
#
# Imported by ./default.nix; renders settings.netboot, the `netboot` section of the provisioner's
# JSON config.
{
  config,
  lib,
  pkgs,
  ...
}: let
  inherit (lib) mkOption types;
  cfg = config.services.tailjoin-provisioner;
  nb = cfg.netboot;

  # What the provisioner serves for a NixOS system built with nixpkgs' netboot profile.
  imageOf = system: let
    inherit (system.config.system) build;
    params = lib.filter (p: !(lib.hasPrefix "tailjoin.key_url=" p || lib.hasPrefix "tailjoin.boot_token=" p)) system.config.boot.kernelParams;
  in {
    kernel = "${build.kernel}/${system.config.system.boot.loader.kernelFile}";
    initrds = ["${build.netbootRamdisk}/initrd"];
    cmdline = lib.concatStringsSep " " (["init=${build.toplevel}/init"] ++ params);
  };

  listenPort = listen: let
    m = builtins.match "(\\[[0-9A-Fa-f:.]+]|[0-9.]+):([0-9]+)" listen;
  in
    if m == null
    then null
    else lib.toInt (builtins.elemAt m 1);
  port = listenPort nb.listen;

  image =
    if nb.image != null
    then nb.image
    else if nb.system != null
    then imageOf nb.system
    else null;

  # The provisioner's admin commands with this config: pending, approve MAC, revoke MAC. It has
  # the name of the package's own bin/tailjoin-provisioner, which it runs by store path. The
  # tailjoin module does not put the package into environment.systemPackages, but a user who
  # wants `tailjoin status` on PATH does, and then both land in the system path: NixOS builds it
  # ignoring collisions, where equal priorities leave it to the order of the list which one is
  # on PATH (with a collision warning). hiPrio: always this one, which knows the config.
  adminCommand = lib.hiPrio (pkgs.writeShellScriptBin "tailjoin-provisioner" ''
    exec ${lib.getExe' cfg.package "tailjoin-provisioner"} --config ${cfg.configFile} "$@"
  '');
in {
  options.services.tailjoin-provisioner.netboot = {
    enable = lib.mkEnableOption ''
      boot scripts for netbooting machines: `GET /v1/boot.ipxe` (point your DHCP server's iPXE
      chain, or the DHCP bootfile, at it) and pixiecore's API (`GET /v1/boot/<mac>`, for
      `services.pixiecore.mode = "api"`), each with a fresh one-time boot token per boot, plus
      the kernel and initrd files (`/v1/files/…`, with Range support), on a second, plain-HTTP
      listener (network boot firmware rarely speaks TLS)'';

    listen = mkOption {
      type = types.strMatching "(\\[[0-9A-Fa-f:.]+]|[0-9.]+):[0-9]+";
      default = "0.0.0.0:8081";
      description = "`ip:port` of the plain-HTTP listener for boot scripts and files (IPv6 in brackets).";
    };

    openFirewall = mkOption {
      type = types.bool;
      default = false;
      description = "Open the netboot listener's TCP port in the firewall.";
    };

    keyUrl = mkOption {
      type = types.strMatching "https?://.+";
      example = "https://10.0.0.1:8443/v1/key";
      description = ''
        The provisioner's key endpoint as the booted machines reach it, written on their kernel
        command line as `tailjoin.key_url=` (the booted OS then fetches its key there, over
        HTTPS, with the boot token). The machine must trust the provisioner's certificate
        (`services.tailjoin.authKey.kernelCmdline.caFile` in the served system).
      '';
    };

    system = mkOption {
      type = types.nullOr types.raw;
      default = null;
      example = lib.literalExpression "inputs.tailjoin.nixosConfigurations.generic-fleet";
      description = ''
        A NixOS system built with nixpkgs' netboot profile (a `nixosConfigurations.<name>`, e.g.
        this flake's `generic-fleet`): its kernel, `netbootRamdisk` and `init=` command line are
        what the provisioner serves. Any `tailjoin.key_url=` or `tailjoin.boot_token=` in its
        `boot.kernelParams` is left out: the provisioner writes both. Ignored when `image` is set.
      '';
    };

    tpm = mkOption {
      type = types.enum ["required" "when-enrolled" "off"];
      default = "when-enrolled";
      description = ''
        Whether keys are released only to a machine's TPM 2.0. The booted machine's tailjoin
        shows its endorsement key (EK) and an attestation key; the provisioner wraps a secret
        to them (TPM2_MakeCredential, in software) and the key goes out sealed under it, so only
        that TPM can read it: a boot token, a MAC or a copy of the HTTPS answer is not enough.
        - `"required"`: no key without TPM proof. Unknown machines boot, show their EK and wait
          on `tailjoin-provisioner pending` until `approve MAC` binds that EK.
        - `"when-enrolled"`: a MAC once bound to an EK (by `approve` after the machine showed
          it) never again gets a key without proof from that EK; other machines keep the
          boot-token path.
        - `"off"`: TPMs are ignored.
        A machine proven by its TPM needs no boot token. A replaced TPM or mainboard needs
        `approve MAC` again.
      '';
    };

    tpmEkCaFiles = mkOption {
      type = types.listOf types.path;
      default = [];
      example = lib.literalExpression "[ ./vendor-ek-root.pem ./vendor-ek-intermediate.pem ]";
      description = ''
        PEM files of the certificate authorities that sign your machines' EK certificates (for
        fleets bought from one vendor). A machine whose TPM holds an EK certificate chaining to
        one of them, for the EK it shows, counts as approved without a per-machine `approve`,
        and unknown MACs get a boot so that their TPM can prove itself. Public certificates,
        fine in the store.
      '';
    };

    image = mkOption {
      type = types.nullOr (types.submodule {
        options = {
          kernel = mkOption {
            type = types.either types.str types.path;
            description = "The kernel (bzImage) to serve at `/v1/files/kernel`.";
          };
          initrds = mkOption {
            type = types.nonEmptyListOf (types.either types.str types.path);
            description = "The initrds to serve at `/v1/files/initrd/0`, `/1`, … (loaded in this order).";
          };
          cmdline = mkOption {
            type = types.str;
            default = "";
            description = "The kernel command line; the provisioner appends `tailjoin.key_url=` and the boot token.";
          };
        };
      });
      default = null;
      description = "The kernel, initrds and command line to serve, when not taken from `system`.";
    };
  };

  config = lib.mkIf (cfg.enable && nb.enable) {
    assertions = [
      {
        assertion = image != null;
        message = ''
          services.tailjoin-provisioner.netboot.enable needs something to boot. Serve a NixOS netboot build:
            services.tailjoin-provisioner.netboot.system = inputs.tailjoin.nixosConfigurations.generic-fleet;
          or name the files:
            services.tailjoin-provisioner.netboot.image = { kernel = "…/bzImage"; initrds = [ "…/initrd" ]; cmdline = "init=…"; };'';
      }
      {
        assertion = lib.hasPrefix "https://" nb.keyUrl || cfg.allowPlainHttp;
        message = ''
          services.tailjoin-provisioner.netboot.keyUrl = "${nb.keyUrl}" would hand keys out over plain HTTP.
          Only the boot script may travel in clear text; the key request must not. Serve the provisioner with TLS:
            services.tailjoin-provisioner.tls = { certFile = "/etc/tailjoin-provisioner/fullchain.pem"; key.credential.source = "/run/agenix/prov-tls-key"; };
            services.tailjoin-provisioner.netboot.keyUrl = "https://<this host>:<port>/v1/key";'';
      }
      {
        assertion = nb.tpm != "off" || nb.tpmEkCaFiles == [];
        message = ''
          services.tailjoin-provisioner.netboot.tpmEkCaFiles lists EK certificate authorities, but netboot.tpm is "off",
          so no TPM is ever asked. Either let TPMs prove machines:
            services.tailjoin-provisioner.netboot.tpm = "when-enrolled";   # or "required"
          or drop netboot.tpmEkCaFiles.'';
      }
      {
        assertion = image == null || !(lib.hasInfix "tailjoin." image.cmdline);
        message = ''
          services.tailjoin-provisioner.netboot.image.cmdline sets a tailjoin.* parameter; the provisioner writes
          tailjoin.key_url= and a fresh tailjoin.boot_token= itself. Remove it from the command line.'';
      }
      {
        assertion = nb.system == null || nb.system.config.services.tailjoin.authKey.kernelCmdline or null != null;
        message = ''
          services.tailjoin-provisioner.netboot.system does not take its key from the kernel command line, so the
          boot token the provisioner issues would go unused. In the served system set:
            services.tailjoin.authKey.kernelCmdline.caFile = "/etc/tailjoin/prov-ca.pem";
          (nixosConfigurations.generic-fleet already does.)'';
      }
    ];

    # The `netboot` section of the provisioner's config: what these options decide, and the
    # provisioner's defaults for the rest (settings.netboot.token_ttl_secs, require_approval,
    # one_boot_per_mac, retry_secs), written out.
    services.tailjoin-provisioner.settings.netboot = lib.mkIf (image != null) (
      {
        inherit (nb) listen;
        key_url = nb.keyUrl;
        kernel = toString image.kernel;
        initrds = map toString image.initrds;
        inherit (image) cmdline;
        inherit (nb) tpm;
      }
      // lib.optionalAttrs (nb.tpmEkCaFiles != []) {
        tpm_ek_ca_files = map toString nb.tpmEkCaFiles;
      }
      // lib.mapAttrs (_: lib.mkOptionDefault) {
        # A boot token seen on the wire (the boot script travels in clear text) is worth at
        # most one key, for that MAC, for this long.
        token_ttl_secs = 300;
        # A MAC must be in allow.macs or approved (`tailjoin-provisioner approve MAC`).
        require_approval = true;
        # A new boot script for a MAC revokes that MAC's earlier unspent token.
        one_boot_per_mac = true;
        # First delay of a refused machine's retry (doubling, at most 300 s).
        retry_secs = 30;
      }
    );

    networking.firewall.allowedTCPPorts = lib.mkIf (nb.openFirewall && port != null) [port];

    environment.systemPackages = [adminCommand];
  };
}
