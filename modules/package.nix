# tailjoin: the agent (bin/tailjoin: run, status, check-config) and the provisioner
# (bin/tailjoin-provisioner), built together from the Cargo workspace in ../agent with its one
# Cargo.lock. callPackage-able; the flake's packages and overlay both use it. The agent links
# tpm2-tss (tss-esapi, for its TPM-proven key requests), found with pkg-config.
#
# The source is the workspace manifest, the lock file and each member's Cargo.toml and src/:
# cargo needs every member present, so the members are read from the manifest. Not agent/target,
# and not agent/fuzz (no member: it is a workspace of its own).
{
  lib,
  rustPlatform,
  pkg-config,
  tpm2-tss,
}: let
  manifest = lib.importTOML ../agent/Cargo.toml;
  inherit (manifest.workspace) members;
  # version, description, license: shared by the members.
  workspace = manifest.workspace.package;
in
  rustPlatform.buildRustPackage {
    pname = "tailjoin";
    inherit (workspace) version;
    src = lib.fileset.toSource {
      root = ../agent;
      fileset = lib.fileset.unions (
        [
          ../agent/Cargo.toml
          ../agent/Cargo.lock
        ]
        ++ lib.concatMap (member: [
          (../agent + "/${member}/Cargo.toml")
          (../agent + "/${member}/src")
        ])
        members
      );
    };
    cargoLock.lockFile = ../agent/Cargo.lock;
    nativeBuildInputs = [pkg-config];
    buildInputs = [tpm2-tss];
    meta = {
      inherit (workspace) description;
      license = lib.getLicenseFromSpdxId workspace.license;
      mainProgram = "tailjoin";
      platforms = lib.platforms.linux;
    };
  }
