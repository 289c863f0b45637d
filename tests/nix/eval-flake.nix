# Evaluation tests for flake.nix's NixOS modules: its outputs evaluated with the real nixpkgs lib
# and no nixpkgs packages (nothing here touches them), so that the wiring is checked where there
# is no nixpkgs: the default module brings both services, the package defaults to our build once
# however the modules are combined, and the provisioner's package follows the agent's; and what
# modules/package.nix builds (the Cargo workspace: its name, version and source). Imported by
# eval.nix with its helpers; returns { results; }.
{
  lib,
  pkgs,
  nixosStandIns,
  test,
  failing,
  ...
}: let
  flake = (import ../../flake.nix).outputs {
    self = flake;
    nixpkgs = {inherit lib;};
  };

  # Our build, as the flake's callPackage ./modules/package.nix makes it here.
  ours = pkgs.tailjoin // {name = "tailjoin-from-flake";};
  eval = modules:
    (lib.evalModules {
      modules =
        [
          nixosStandIns
          {_module.args.pkgs = pkgs // {callPackage = _: _: ours;};}
        ]
        ++ modules;
    })
    .config;

  # modules/package.nix with a buildRustPackage that returns its arguments, and a lib.fileset
  # that returns what it is given (the real one needs builtins.readFileType, Nix 2.14, newer than
  # the nix-instantiate check.sh runs): what it builds from.
  package = import ../../modules/package.nix {
    lib =
      lib
      // {
        fileset = {
          toSource = args: args;
          unions = paths: paths;
        };
      };
    rustPlatform.buildRustPackage = args: args;
    pkg-config = "pkg-config-stand-in";
    tpm2-tss = "tpm2-tss-stand-in";
  };
  workspace = (lib.importTOML ../../agent/Cargo.toml).workspace or {};
  # The source's files and directories, relative to agent/, and each of them exists (as the real
  # lib.fileset demands).
  sourceRoot = toString package.src.root;
  sourcePaths = map (p: lib.removePrefix "${sourceRoot}/" (toString p)) package.src.fileset;
  sourceExists = lib.all builtins.pathExists package.src.fileset;

  provisioner = {
    services.tailjoin-provisioner = {
      enable = true;
      allowPlainHttp = true;
      mint.headscale = {
        url = "https://headscale.example.com";
        apiKey.credential = {};
        user = "fleet";
      };
      settings.allow.networks = ["10.0.0.0/24"];
    };
  };
in {
  results = [
    (test "package.nix: one package from the Cargo workspace, named and versioned by its manifest"
      (package.pname
        == "tailjoin"
        && package.version == workspace.package.version
        && package.meta.description == workspace.package.description
        && package.meta.license == lib.licenses.mit
        && package.meta.mainProgram == "tailjoin"
        && package.cargoLock.lockFile == ../../agent/Cargo.lock
        # The agent links tpm2-tss (tss-esapi), found with pkg-config.
        && package.nativeBuildInputs == ["pkg-config-stand-in"]
        && package.buildInputs == ["tpm2-tss-stand-in"])
      {inherit (package) pname version meta nativeBuildInputs buildInputs;})
    (test "package.nix: the source is the workspace's manifest and lock and each member's Cargo.toml and src/ (all four crates, the tests' testkit too: cargo needs every member), nothing else (no target/, fuzz/)"
      (workspace.members
        == ["tailjoin-common" "tailjoin" "tailjoin-provisioner" "tailjoin-testkit"]
        && sourceRoot == toString ../../agent
        && sourcePaths
        == [
          "Cargo.toml"
          "Cargo.lock"
          "tailjoin-common/Cargo.toml"
          "tailjoin-common/src"
          "tailjoin/Cargo.toml"
          "tailjoin/src"
          "tailjoin-provisioner/Cargo.toml"
          "tailjoin-provisioner/src"
          "tailjoin-testkit/Cargo.toml"
          "tailjoin-testkit/src"
        ]
        && sourceExists)
      {
        members = workspace.members or null;
        inherit sourcePaths sourceExists;
      })
    (test "flake: nixosModules.default has both services, our build as their package"
      (let
        c = eval [flake.nixosModules.default provisioner];
      in
        c.services.tailjoin.package == ours && c.services.tailjoin-provisioner.package == ours && failing c == [])
      null)
    (test "flake: importing default, tailjoin and provisioner together defines the package once"
      (let
        c = eval [flake.nixosModules.default flake.nixosModules.tailjoin flake.nixosModules.provisioner provisioner];
      in
        c.services.tailjoin-provisioner.package == ours)
      null)
    (test "flake: the provisioner's package follows services.tailjoin.package"
      (let
        other = pkgs.tailjoin // {name = "tailjoin-other";};
        c = eval [flake.nixosModules.provisioner provisioner {services.tailjoin.package = other;}];
      in
        c.services.tailjoin-provisioner.package == other && !c.services.tailjoin.enable)
      null)
    (test "flake: nixosModules.tailjoin alone has no provisioner"
      (let
        c = eval [flake.nixosModules.tailjoin];
      in
        c.services.tailjoin.package == ours && !(c.services ? tailjoin-provisioner))
      null)
    (test "flake: the configurations the flake exports"
      (builtins.attrNames flake.nixosConfigurations
        == ["generic" "generic-fleet" "provisioner"]
        && builtins.attrNames flake.nixosModules == ["default" "netboot" "provisioner" "tailjoin"])
      (builtins.attrNames flake.nixosConfigurations))
  ];
}
