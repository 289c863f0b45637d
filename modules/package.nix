# The tailjoin agent, built from ../agent with its Cargo.lock. callPackage-able; the flake's
# packages and overlay both use it.
{
  lib,
  rustPlatform,
}: let
  manifest = (lib.importTOML ../agent/Cargo.toml).package;
in
  rustPlatform.buildRustPackage {
    pname = manifest.name;
    inherit (manifest) version;
    src = lib.fileset.toSource {
      root = ../agent;
      fileset = lib.fileset.unions [
        ../agent/Cargo.toml
        ../agent/Cargo.lock
        ../agent/src
      ];
    };
    cargoLock.lockFile = ../agent/Cargo.lock;
    meta = {
      inherit (manifest) description;
      license = lib.licenses.mit;
      mainProgram = "tailjoin";
      platforms = lib.platforms.linux;
    };
  }
